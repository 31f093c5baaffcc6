// Built instead of csrc/cuda/bind_cuda.cpp when the CUDA kernels are not compiled.
#include <pybind11/pybind11.h>

namespace fkdiff {
bool cuda_compiled() { return false; }
void register_cuda(pybind11::module_&) {}
}  // namespace fkdiff
