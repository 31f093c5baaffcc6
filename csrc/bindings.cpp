// The pybind11 module fkdiff._C: build facts plus the CPU and CUDA kernel entry points.
// Kernels take raw pointers (uintptr_t) and sizes; the Python ops layer validates everything
// first. The module does not link libtorch, so one build works with any supported torch.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace fkdiff {
void register_cpu(py::module_& m);   // csrc/cpu/bind_cpu.cpp
void register_cuda(py::module_& m);  // csrc/cuda/bind_cuda.cpp, or csrc/cuda_stub.cpp
bool cuda_compiled();
}  // namespace fkdiff

PYBIND11_MODULE(_C, m) {
  m.doc() = "fkdiff compiled core (CPU kernels, and CUDA kernels when built with them)";
  m.def("has_cuda", &fkdiff::cuda_compiled, "True when the CUDA kernels were compiled into this build");
#if defined(FKDIFF_OPENMP)
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  m.attr("cpu_isas_built") = FKDIFF_CPU_ISAS;
  fkdiff::register_cpu(m);
  fkdiff::register_cuda(m);
}
