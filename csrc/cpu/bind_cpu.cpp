// pybind11 entry points of the CPU kernels: fkdiff._C.cpu_*. Raw pointers travel as uintptr_t
// (tensor.data_ptr()), sizes and strides as int64 (elements), seed / offset as uint64, dtype codes
// 0 = float32 / 1 = float64, index codes 0 = int32 / 1 = int64. The Python glue
// (fkdiff/ops/_backend_cpu.py) has validated everything; the GIL is released around each kernel.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cpu_kernels.h"

namespace py = pybind11;

namespace fkdiff {
namespace {

template <class T>
T* ptr(uintptr_t p) {
  return reinterpret_cast<T*>(p);
}

int threads(int64_t n) { return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n); }

}  // namespace

void register_cpu(py::module_& m) {
  using namespace fkdiff::cpu;
  const std::string warn = env_warning();
  if (!warn.empty()) PyErr_WarnEx(PyExc_RuntimeWarning, warn.c_str(), 1);

  m.def("cpu_isa", []() { return std::string(active().name); },
        "Name of the CPU kernel path in use: generic, avx2 or avx512");
  m.def(
      "cpu_isas_supported",
      []() {
        int n = 0;
        const char* const* names = supported_names(&n);
        std::vector<std::string> out(names, names + n);
        return out;
      },
      "CPU paths this build holds and this processor runs, narrowest first");
  m.def(
      "cpu_set_isa",
      [](const std::string& name) {
        if (!set_active(name.c_str())) throw py::value_error("cpu_set_isa: '" + name + "' is not a CPU path this build and processor run");
        return std::string(active().name);
      },
      py::arg("name"), "Switch the CPU kernel path (tests); returns the name in use");

  m.def(
      "cpu_logsumexp_stats",
      [](uintptr_t lw, uintptr_t out, uintptr_t flags, int64_t B, int64_t N, int dtype, int64_t nthreads) {
        LseArgs a{ptr<const void>(lw), ptr<double>(out), ptr<int32_t>(flags), B, N, dtype, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().logsumexp_stats(a);
      },
      py::arg("lw"), py::arg("out"), py::arg("flags"), py::arg("B"), py::arg("N"), py::arg("dtype"),
      py::arg("nthreads"));

  m.def(
      "cpu_resample",
      [](uintptr_t lw, uintptr_t anc, int anc64, uintptr_t flags, int64_t B, int64_t N, int dtype, uintptr_t u,
         uintptr_t pos, uintptr_t x, uintptr_t rows, int64_t row_bytes, int64_t nthreads) {
        ResampleArgs a{ptr<const void>(lw), ptr<void>(anc), anc64, ptr<int32_t>(flags), B, N, dtype,
                       ptr<const double>(u), ptr<const double>(pos), ptr<const void>(x), ptr<void>(rows),
                       row_bytes, threads(nthreads)};
        if (!a.u && !a.pos) throw py::value_error("cpu_resample: one of u / positions is needed");
        py::gil_scoped_release nogil;
        active().resample(a);
      },
      py::arg("lw"), py::arg("anc"), py::arg("anc64"), py::arg("flags"), py::arg("B"), py::arg("N"),
      py::arg("dtype"), py::arg("u"), py::arg("pos"), py::arg("x"), py::arg("rows"), py::arg("row_bytes"),
      py::arg("nthreads"));

  m.def(
      "cpu_gaussian_potential",
      [](uintptr_t x, int64_t ldx, int64_t mm, uintptr_t t, int64_t tbs, uintptr_t a, int64_t abs_, uintptr_t v,
         int64_t vbs, uintptr_t out, int out_dtype, uintptr_t flags, int64_t B, int64_t N, int dtype,
         bool accumulate, uintptr_t cst, uintptr_t x2, int64_t ld2, int64_t m2, uintptr_t t2, int64_t t2bs,
         uintptr_t a2, int64_t a2bs, uintptr_t v2, int64_t v2bs, int64_t nthreads) {
        PotentialArgs p{};
        p.x = ptr<const void>(x);
        p.ldx = ldx;
        p.m = mm;
        p.t = ptr<const void>(t);
        p.a = ptr<const void>(a);
        p.v = ptr<const void>(v);
        p.tbs = tbs;
        p.abs_ = abs_;
        p.vbs = vbs;
        p.out = ptr<void>(out);
        p.out_dtype = out_dtype;
        p.flags = ptr<int32_t>(flags);
        p.B = B;
        p.N = N;
        p.dtype = dtype;
        p.accumulate = accumulate ? 1 : 0;
        p.cst = ptr<const double>(cst);
        p.x2 = ptr<const void>(x2);
        p.ld2 = ld2;
        p.m2 = m2;
        p.t2 = ptr<const void>(t2);
        p.a2 = ptr<const void>(a2);
        p.v2 = ptr<const void>(v2);
        p.t2bs = t2bs;
        p.a2bs = a2bs;
        p.v2bs = v2bs;
        p.nthreads = threads(nthreads);
        py::gil_scoped_release nogil;
        active().gaussian_potential(p);
      },
      py::arg("x"), py::arg("ldx"), py::arg("m"), py::arg("t"), py::arg("t_bs"), py::arg("a"), py::arg("a_bs"),
      py::arg("v"), py::arg("v_bs"), py::arg("out"), py::arg("out_dtype"), py::arg("flags"), py::arg("B"),
      py::arg("N"), py::arg("dtype"), py::arg("accumulate"), py::arg("const"), py::arg("x2"), py::arg("ld2"),
      py::arg("m2"), py::arg("t2"), py::arg("t2_bs"), py::arg("a2"), py::arg("a2_bs"), py::arg("v2"),
      py::arg("v2_bs"), py::arg("nthreads"));

  m.def(
      "cpu_mutation",
      [](uintptr_t mp, int64_t Np, uintptr_t anc, int anc64, uintptr_t K, int64_t Kbs, uintptr_t c, int64_t cbs,
         uintptr_t s, int64_t sbs, uint64_t seed, uint64_t offset, uintptr_t out, uintptr_t flags, int64_t B,
         int64_t N, int64_t d, int dtype, int64_t nthreads) {
        MutationArgs a{ptr<const void>(mp), Np,     ptr<const void>(anc), anc64, ptr<const void>(K),
                       ptr<const void>(c),  ptr<const void>(s), Kbs, cbs, sbs, seed, offset, ptr<void>(out),
                       ptr<int32_t>(flags), B, N, d, dtype, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().mutation(a);
      },
      py::arg("m"), py::arg("Np"), py::arg("anc"), py::arg("anc64"), py::arg("K"), py::arg("K_bs"), py::arg("c"),
      py::arg("c_bs"), py::arg("s"), py::arg("s_bs"), py::arg("seed"), py::arg("offset"), py::arg("out"),
      py::arg("flags"), py::arg("B"), py::arg("N"), py::arg("d"), py::arg("dtype"), py::arg("nthreads"));

  m.def(
      "cpu_tamed_langevin",
      [](uintptr_t x, uintptr_t g, double gamma, uint64_t seed, uint64_t offset, uintptr_t out, uintptr_t flags,
         int64_t B, int64_t N, int64_t d, int dtype, int64_t nthreads) {
        LangevinArgs a{ptr<const void>(x), ptr<const void>(g), gamma, seed, offset, ptr<void>(out),
                       ptr<int32_t>(flags), B, N, d, dtype, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().tamed_langevin(a);
      },
      py::arg("x"), py::arg("grad"), py::arg("gamma"), py::arg("seed"), py::arg("offset"), py::arg("out"),
      py::arg("flags"), py::arg("B"), py::arg("N"), py::arg("d"), py::arg("dtype"), py::arg("nthreads"));

  m.def(
      "cpu_variational_update",
      [](uintptr_t mu, uintptr_t log_std, uintptr_t m_, uintptr_t g, uintptr_t xi, double var, double lr_mu,
         double lr_l, uint64_t seed, uint64_t offset, uintptr_t sample, uintptr_t flags, int64_t rows, int64_t d,
         int dtype, int64_t nthreads) {
        VariationalArgs a{ptr<void>(mu),  ptr<void>(log_std), ptr<void>(xi), ptr<void>(sample), ptr<const void>(m_),
                          ptr<const void>(g), var, lr_mu, lr_l, seed, offset, ptr<int32_t>(flags), rows, d, dtype,
                          threads(nthreads)};
        py::gil_scoped_release nogil;
        active().variational_update(a);
      },
      py::arg("mu"), py::arg("log_std"), py::arg("m"), py::arg("grad"), py::arg("xi"), py::arg("var"),
      py::arg("lr_mu"), py::arg("lr_l"), py::arg("seed"), py::arg("offset"), py::arg("sample"), py::arg("flags"),
      py::arg("rows"), py::arg("d"), py::arg("dtype"), py::arg("nthreads"));

  m.def(
      "cpu_mixture_mean",
      [](uintptr_t x, uintptr_t means, uintptr_t bias, double a, double beta, double alpha, uintptr_t out,
         uintptr_t resp, int64_t R, int64_t K, int64_t D, int64_t C, int dtype, int64_t nthreads) {
        MixtureArgs p{ptr<const void>(x), ptr<const void>(means), ptr<const void>(bias), a, beta, alpha, ptr<void>(out),
                      ptr<void>(resp), R, K, D, C, dtype, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().mixture_mean(p);
      },
      py::arg("x"), py::arg("means"), py::arg("bias"), py::arg("a"), py::arg("beta"), py::arg("alpha"), py::arg("out"),
      py::arg("resp"), py::arg("R"), py::arg("K"), py::arg("D"), py::arg("C"), py::arg("dtype"), py::arg("nthreads"));

  m.def(
      "cpu_normal",
      [](uintptr_t out, int64_t n, uint64_t seed, uint64_t offset, int dtype, int64_t nthreads) {
        NormalArgs a{ptr<void>(out), n, seed, offset, dtype, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().normal(a);
      },
      py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("offset"), py::arg("dtype"), py::arg("nthreads"));

  m.def(
      "cpu_philox",
      [](uintptr_t out, int64_t n, uint64_t seed, uint64_t counter, int64_t nthreads) {
        PhiloxArgs a{ptr<int32_t>(out), n, seed, counter, threads(nthreads)};
        py::gil_scoped_release nogil;
        active().philox(a);
      },
      py::arg("out"), py::arg("n"), py::arg("seed"), py::arg("counter"), py::arg("nthreads"));
}

}  // namespace fkdiff
