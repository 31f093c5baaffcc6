// placeholder
#include <pybind11/pybind11.h>
namespace fkdiff { void register_cpu(pybind11::module_&) {} }
