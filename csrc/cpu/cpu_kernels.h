// Interface between the CPU kernels (csrc/cpu/kernels.cpp, compiled once per instruction set
// into the namespaces fkdiff::cpu::generic / avx2 / avx512), the run-time dispatcher
// (csrc/cpu/dispatch.cpp) and the pybind11 glue (csrc/cpu/bind_cpu.cpp).
//
// Every kernel takes one plain argument struct: raw pointers, sizes and strides in elements.
// dtype codes: 0 = float32, 1 = float64. Index codes: 0 = int32, 1 = int64.
#pragma once

#include <cstdint>

namespace fkdiff {
namespace cpu {

enum DType : int { kF32 = 0, kF64 = 1 };

struct LseArgs {
  const void* lw;  // (B, N) dtype
  double* out;     // (B, 3)
  int32_t* flags;
  int64_t B, N;
  int dtype;
  int nthreads;
};

struct ResampleArgs {
  const void* lw;  // (B, N) dtype
  void* anc;       // (B, N) int32 / int64
  int anc64;
  int32_t* flags;
  int64_t B, N;
  int dtype;
  const double* u;    // (B,) or null
  const double* pos;  // (B, N) or null (exactly one of u / pos)
  const void* x;      // (B, N, row_bytes) or null
  void* rows;         // same layout as x, or null
  int64_t row_bytes;
  int nthreads;
};

struct PotentialArgs {
  const void* x;  // (B, N, m) with strides (N*ldx, ldx, 1), dtype
  int64_t ldx, m;
  const void *t, *a, *v;  // (B, m), batch strides below (m or 0)
  int64_t tbs, abs_, vbs;
  void* out;  // (B, N) out_dtype
  int out_dtype;
  int32_t* flags;
  int64_t B, N;
  int dtype;
  int accumulate;
  const double* cst;  // (B,) or null
  const void* x2;     // or null
  int64_t ld2, m2;
  const void *t2, *a2, *v2;
  int64_t t2bs, a2bs, v2bs;
  int nthreads;
};

struct MutationArgs {
  const void* m;  // (B, Np, d) dtype
  int64_t Np;
  const void* anc;  // (B, N) or null
  int anc64;
  const void *K, *c, *s;  // (B, d), batch strides below
  int64_t Kbs, cbs, sbs;
  uint64_t seed, offset;
  void* out;  // (B, N, d) dtype
  int32_t* flags;
  int64_t B, N, d;
  int dtype;
  int nthreads;
};

struct LangevinArgs {
  const void* x;  // (B, N, d); out may equal x
  const void* g;
  double gamma;
  uint64_t seed, offset;
  void* out;
  int32_t* flags;
  int64_t B, N, d;
  int dtype;
  int nthreads;
};

// mu, log_std, xi are updated in place; sample is written; m and g are read. All (rows, d).
struct VariationalArgs {
  void *mu, *log_std, *xi, *sample;
  const void *m, *g;
  double var, lr_mu, lr_l;
  uint64_t seed, offset;
  int32_t* flags;
  int64_t rows, d;
  int dtype;
  int nthreads;
};

struct NormalArgs {
  void* out;  // (n,) dtype
  int64_t n;
  uint64_t seed, offset;
  int dtype;
  int nthreads;
};

struct PhiloxArgs {
  int32_t* out;  // (n, 4)
  int64_t n;
  uint64_t seed, counter;
  int nthreads;
};

// Rows of out = beta x + alpha sum_k r_k mu_k with r = softmax_k(a <x, mu_k> + bias_k): the exact
// denoiser of a Gaussian mixture with identity covariances (x0hat, or a DDIM mean straight away).
struct MixtureArgs {
  const void* x;      // (R, D) dtype, contiguous
  const void* means;  // (K, D) dtype, contiguous
  const void* bias;   // (K,) dtype: log w_k - abar |mu_k|^2 / 2 (may hold -inf)
  double a, beta, alpha;
  void* out;   // (R, C) dtype, the first C <= D coordinates; must not overlap x unless it is x
  void* resp;  // (R, K) dtype: the responsibilities r, or null
  int64_t R, K, D, C;
  int dtype;
  int nthreads;
};

struct Table {
  const char* name;
  void (*logsumexp_stats)(const LseArgs&);
  void (*resample)(const ResampleArgs&);
  void (*gaussian_potential)(const PotentialArgs&);
  void (*mutation)(const MutationArgs&);
  void (*tamed_langevin)(const LangevinArgs&);
  void (*normal)(const NormalArgs&);
  void (*philox)(const PhiloxArgs&);
  void (*variational_update)(const VariationalArgs&);
  void (*mixture_mean)(const MixtureArgs&);
};

namespace generic { const Table& table(); }
namespace avx2 { const Table& table(); }
namespace avx512 { const Table& table(); }

// dispatch.cpp
const Table& active();
// Names of the paths this build holds and this processor runs, widest last.
const char* const* supported_names(int* count);
// Switch the active path; returns false (and changes nothing) if unknown or unsupported here.
bool set_active(const char* name);
// Warning text produced when FKDIFF_CPU_ISA was refused (empty string if none).
const char* env_warning();

}  // namespace cpu
}  // namespace fkdiff
