// CUDA entry points of fkdiff._C (compiled by the C++ compiler; the kernels are in
// kernels/cuda/*.cu). Pointers and streams travel as integers (uintptr_t); the Python glue
// (python/fkdiff/ops/_backend_cuda.py) validates tensors and allocates outputs and scratch.
//
// The CUDA runtime is linked statically, so this module imports on a machine without a GPU or
// driver; every cuda_* launcher first checks for a usable device and raises RuntimeError with
// the CUDA error text when there is none. After each launch cudaGetLastError is checked and a
// failure raised as RuntimeError. The GIL is released around the launches (they do not block).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "fkdiff_cuda.h"

namespace py = pybind11;

namespace fkdiff {

bool cuda_compiled() { return true; }

namespace {

std::atomic<bool> g_device_ok{false};
constexpr int kMaxDevices = 256;
std::atomic<int> g_sm_count[kMaxDevices];  // 0 = not queried yet

[[noreturn]] void fail(const std::string& what, cudaError_t err) {
  throw std::runtime_error("fkdiff CUDA " + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           ")");
}

// A usable device and driver, the current device set to `device`; returns its SM count.
int prepare(int device) {
  if (!g_device_ok.load(std::memory_order_acquire)) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      throw std::runtime_error(std::string("fkdiff CUDA kernels were compiled but no usable CUDA device/driver: ") +
                               cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
    }
    if (n <= 0)
      throw std::runtime_error(
          "fkdiff CUDA kernels were compiled but no usable CUDA device/driver: cudaGetDeviceCount found 0 devices");
    g_device_ok.store(true, std::memory_order_release);
  }
  if (device < 0 || device >= kMaxDevices) throw std::invalid_argument("fkdiff CUDA: bad device index");
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    fail("cudaSetDevice(" + std::to_string(device) + ")", err);
  }
  (void)cudaGetLastError();  // start from a clean error state
  int sms = g_sm_count[device].load(std::memory_order_relaxed);
  if (sms <= 0) {
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess || sms <= 0) {
      (void)cudaGetLastError();
      sms = 132;  // only used to size grid-stride loops
    }
    g_sm_count[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(std::string(what) + " launch failed", err);
}

template <typename T = void>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

void* stream_of(uintptr_t s) { return reinterpret_cast<void*>(s); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace

void register_cuda(py::module_& m) {
  m.def("cuda_device_count", &device_count,
        "Number of CUDA devices the compiled kernels can see (0 when there is no driver or device)");

  m.def("cuda_logsumexp_stats_scratch_bytes", &cuda::logsumexp_stats_scratch_bytes, py::arg("B"), py::arg("N"));
  m.def("cuda_resample_scratch_bytes", &cuda::resample_scratch_bytes, py::arg("B"), py::arg("N"));
  m.def("cuda_gaussian_potential_scratch_bytes", &cuda::gaussian_potential_scratch_bytes, py::arg("B"), py::arg("N"),
        py::arg("m"), py::arg("m2"));
  m.def("cuda_tamed_langevin_scratch_bytes", &cuda::tamed_langevin_scratch_bytes, py::arg("B"), py::arg("N"),
        py::arg("d"));

  m.def(
      "cuda_logsumexp_stats",
      [](int device, uintptr_t lw, int dtype, int64_t B, int64_t N, int64_t lw_stride, uintptr_t out,
         uintptr_t flags, uintptr_t scratch, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::logsumexp_stats(ptr<const void>(lw), dtype, B, N, lw_stride, ptr<double>(out), ptr<int32_t>(flags),
                              ptr(scratch), sms, stream_of(stream));
        check_launch("logsumexp_stats");
      },
      py::arg("device"), py::arg("log_weights"), py::arg("dtype"), py::arg("B"), py::arg("N"), py::arg("lw_stride"),
      py::arg("out"), py::arg("flags"), py::arg("scratch"), py::arg("stream"));

  m.def(
      "cuda_resample",
      [](int device, uintptr_t lw, int dtype, int64_t B, int64_t N, int64_t lw_stride, uintptr_t anc, int index_dtype,
         uintptr_t flags, uintptr_t u, uintptr_t positions, int64_t pos_stride, uintptr_t x, uintptr_t rows,
         int x_dtype, int64_t d, uintptr_t scratch, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::resample(ptr<const void>(lw), dtype, B, N, lw_stride, ptr(anc), index_dtype, ptr<int32_t>(flags),
                       ptr<const double>(u), ptr<const double>(positions), pos_stride, ptr<const void>(x), ptr(rows),
                       x_dtype, d, ptr(scratch), sms, stream_of(stream));
        check_launch("resample");
      },
      py::arg("device"), py::arg("log_weights"), py::arg("dtype"), py::arg("B"), py::arg("N"), py::arg("lw_stride"),
      py::arg("ancestors"), py::arg("index_dtype"), py::arg("flags"), py::arg("u"), py::arg("positions"),
      py::arg("pos_stride"), py::arg("x"), py::arg("rows"), py::arg("x_dtype"), py::arg("d"), py::arg("scratch"),
      py::arg("stream"));

  m.def(
      "cuda_gaussian_potential",
      [](int device, int dtype, int64_t B, int64_t N, uintptr_t x, int64_t ld, int64_t mm, uintptr_t t, int64_t st,
         uintptr_t a, int64_t sa, uintptr_t v, int64_t sv, bool has2, uintptr_t x2, int64_t ld2, int64_t m2,
         uintptr_t t2, int64_t st2, uintptr_t a2, int64_t sa2, uintptr_t v2, int64_t sv2, uintptr_t cst,
         uintptr_t out, bool accumulate, uintptr_t flags, uintptr_t scratch, uintptr_t stream) {
        const int sms = prepare(device);
        cuda::PotentialTerm t1;
        t1.x = ptr<const void>(x);
        t1.ld = ld;
        t1.m = mm;
        t1.t = ptr<const void>(t);
        t1.st = st;
        t1.a = ptr<const void>(a);
        t1.sa = sa;
        t1.v = ptr<const void>(v);
        t1.sv = sv;
        cuda::PotentialTerm tt2;
        tt2.x = ptr<const void>(x2);
        tt2.ld = ld2;
        tt2.m = m2;
        tt2.t = ptr<const void>(t2);
        tt2.st = st2;
        tt2.a = ptr<const void>(a2);
        tt2.sa = sa2;
        tt2.v = ptr<const void>(v2);
        tt2.sv = sv2;
        py::gil_scoped_release nogil;
        cuda::gaussian_potential(dtype, B, N, t1, has2 ? &tt2 : nullptr, ptr<const double>(cst), ptr(out), accumulate,
                                 ptr<int32_t>(flags), ptr(scratch), sms, stream_of(stream));
        check_launch("gaussian_potential");
      },
      py::arg("device"), py::arg("dtype"), py::arg("B"), py::arg("N"), py::arg("x"), py::arg("ld"), py::arg("m"),
      py::arg("t"), py::arg("st"), py::arg("a"), py::arg("sa"), py::arg("v"), py::arg("sv"), py::arg("has2"),
      py::arg("x2"), py::arg("ld2"), py::arg("m2"), py::arg("t2"), py::arg("st2"), py::arg("a2"), py::arg("sa2"),
      py::arg("v2"), py::arg("sv2"), py::arg("const"), py::arg("out"), py::arg("accumulate"), py::arg("flags"),
      py::arg("scratch"), py::arg("stream"));

  m.def(
      "cuda_mutation",
      [](int device, int dtype, uintptr_t mm, int64_t B, int64_t Np, int64_t d, uintptr_t anc, int index_dtype,
         int64_t N, uintptr_t K, int64_t sK, uintptr_t c, int64_t sc, uintptr_t s, int64_t ss, uint64_t seed,
         uint64_t offset, uintptr_t out, uintptr_t flags, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::mutation(dtype, ptr<const void>(mm), B, Np, d, ptr<const void>(anc), index_dtype, N, ptr<const void>(K),
                       sK, ptr<const void>(c), sc, ptr<const void>(s), ss, seed, offset, ptr(out),
                       ptr<int32_t>(flags), sms, stream_of(stream));
        check_launch("mutation");
      },
      py::arg("device"), py::arg("dtype"), py::arg("m"), py::arg("B"), py::arg("Np"), py::arg("d"),
      py::arg("ancestors"), py::arg("index_dtype"), py::arg("N"), py::arg("K"), py::arg("sK"), py::arg("c"),
      py::arg("sc"), py::arg("s"), py::arg("ss"), py::arg("seed"), py::arg("offset"), py::arg("out"),
      py::arg("flags"), py::arg("stream"));

  m.def(
      "cuda_tamed_langevin",
      [](int device, int dtype, uintptr_t x, uintptr_t grad, int64_t B, int64_t N, int64_t d, double gamma,
         uint64_t seed, uint64_t offset, uintptr_t out, uintptr_t flags, uintptr_t scratch, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::tamed_langevin(dtype, ptr<const void>(x), ptr<const void>(grad), B, N, d, gamma, seed, offset, ptr(out),
                             ptr<int32_t>(flags), ptr(scratch), sms, stream_of(stream));
        check_launch("tamed_langevin");
      },
      py::arg("device"), py::arg("dtype"), py::arg("x"), py::arg("grad"), py::arg("B"), py::arg("N"), py::arg("d"),
      py::arg("gamma"), py::arg("seed"), py::arg("offset"), py::arg("out"), py::arg("flags"), py::arg("scratch"),
      py::arg("stream"));

  m.def("cuda_variational_update_scratch_bytes", &cuda::variational_update_scratch_bytes, py::arg("rows"),
        py::arg("d"));
  m.def(
      "cuda_variational_update",
      [](int device, int dtype, uintptr_t mu, uintptr_t log_std, uintptr_t m_, uintptr_t grad, uintptr_t xi,
         int64_t rows, int64_t d, double var, double lr_mu, double lr_l, uint64_t seed, uint64_t offset,
         uintptr_t sample, uintptr_t flags, uintptr_t scratch, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::variational_update(dtype, ptr(mu), ptr(log_std), ptr<const void>(m_), ptr<const void>(grad), ptr(xi),
                                 rows, d, var, lr_mu, lr_l, seed, offset, ptr(sample), ptr<int32_t>(flags),
                                 ptr(scratch), sms, stream_of(stream));
        check_launch("variational_update");
      },
      py::arg("device"), py::arg("dtype"), py::arg("mu"), py::arg("log_std"), py::arg("m"), py::arg("grad"),
      py::arg("xi"), py::arg("rows"), py::arg("d"), py::arg("var"), py::arg("lr_mu"), py::arg("lr_l"),
      py::arg("seed"), py::arg("offset"), py::arg("sample"), py::arg("flags"), py::arg("scratch"),
      py::arg("stream"));

  m.def(
      "cuda_normal",
      [](int device, uintptr_t out, int dtype, int64_t n, uint64_t seed, uint64_t offset, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::normal(ptr(out), dtype, n, seed, offset, sms, stream_of(stream));
        check_launch("normal");
      },
      py::arg("device"), py::arg("out"), py::arg("dtype"), py::arg("n"), py::arg("seed"), py::arg("offset"),
      py::arg("stream"));

  m.def(
      "cuda_philox",
      [](int device, uintptr_t out, int64_t n, uint64_t seed, uint64_t counter, uintptr_t stream) {
        const int sms = prepare(device);
        py::gil_scoped_release nogil;
        cuda::philox(ptr<int32_t>(out), n, seed, counter, sms, stream_of(stream));
        check_launch("philox");
      },
      py::arg("device"), py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("counter"), py::arg("stream"));
}

}  // namespace fkdiff
