// Protocol 8 (variational_update): DCPS's normalised-gradient step of a Gaussian fit per row,
// then a fresh draw. Per row of (rows, d) arrays, std = exp(log_std):
//   gm = (mu - m) - var g,  gl = std^2 - var - var g std xi,
//   mu -= lr_mu gm / |gm|,  log_std -= lr_l gl / |gl|   (zero direction: unchanged),
//   xi = z(offset + row d + i),  sample = mu + exp(log_std) xi.
// Same two layouts as the tamed Langevin step (particles.cu): rows mode keeps a row's five
// inputs in registers between the two norms and the update; segment mode (rows longer than
// 1024) sums per (row, segment) into float64 scratch, finishes the two step coefficients per
// row, then updates. The inputs are read before the same thread writes them, so mu, log_std
// and xi are updated in place.
#include "common.cuh"
#include "fkdiff_cuda.h"

namespace fkdiff {
namespace cuda {
namespace {

template <typename T>
struct FitTerms {
  T gm, gl;
};

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }

template <typename T>
__device__ __forceinline__ FitTerms<T> fit_terms(T mu, T ls, T m, T g, T xi, T var) {
  const T sd = exp_of(ls);
  return {(mu - m) - var * g, sd * (sd - var * g * xi) - var};
}

// lr / norm, 0 for a zero direction, NaN (and the flag) when the norm is not finite.
__device__ __forceinline__ double step_coef(double sumsq, double lr, int& bad) {
  const double nrm = sqrt(sumsq);
  if (!isfinite(nrm)) {
    bad = kFlagGradientNonFinite;
    return __longlong_as_double(0x7ff8000000000000LL);
  }
  return nrm > 0.0 ? lr / nrm : 0.0;
}

template <typename T>
__device__ __forceinline__ void fit_update(T& mu, T& ls, T& xi, T& s, T gm, T gl, T cm, T cl, float z) {
  mu = mu - cm * gm;
  ls = ls - cl * gl;
  xi = static_cast<T>(z);
  s = fma(exp_of(ls), xi, mu);
}

template <typename T>
struct FitPtrs {
  T *mu, *ls, *xi, *s;
  const T *m, *g;
};

template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads, kRowsMinBlocks<T>)
    fit_rows(FitPtrs<T> P, int64_t rows, int64_t d, int tpr_log2, double var, double lr_mu, double lr_l,
             uint64_t seed, uint64_t offset, int32_t* flags) {
  __shared__ double red[kThreads / 32];
  const int tpr = 1 << tpr_log2;
  const int slots = kThreads >> tpr_log2;
  const int slot = threadIdx.x >> tpr_log2, lane = threadIdx.x & (tpr - 1);
  const int64_t nchunk = chunks_of(d);
  const int64_t ngroups = (rows + slots - 1) / slots;
  const bool has_chunk = lane < nchunk;
  const int64_t i0 = 4 * static_cast<int64_t>(lane);
  const int cnt = has_chunk ? (d - i0 < 4 ? static_cast<int>(d - i0) : 4) : 0;
  const T v = static_cast<T>(var);
  int bad = 0;
  // Loop bounds depend on blockIdx only: every thread runs the same iterations (the row sums may
  // synchronise the block).
  for (int64_t g0 = blockIdx.x; g0 < ngroups; g0 += gridDim.x) {
    const int64_t row = g0 * slots + slot;
    const bool act = row < rows;
    V4<T> mu, ls, xi, gm, gl;
    double sm = 0.0, sl = 0.0;
    if (act && has_chunk) {
      const int64_t o = row * d + i0;
      mu = load4<T, VEC>(P.mu + o, cnt);
      ls = load4<T, VEC>(P.ls + o, cnt);
      xi = load4<T, VEC>(P.xi + o, cnt);
      const V4<T> m = load4<T, VEC>(P.m + o, cnt);
      const V4<T> g = load4<T, VEC>(P.g + o, cnt);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const FitTerms<T> t = fit_terms(mu.v[e], ls.v[e], m.v[e], g.v[e], xi.v[e], v);
        gm.v[e] = e < cnt ? t.gm : T(0);
        gl.v[e] = e < cnt ? t.gl : T(0);
        sm = fma(static_cast<double>(gm.v[e]), static_cast<double>(gm.v[e]), sm);
        sl = fma(static_cast<double>(gl.v[e]), static_cast<double>(gl.v[e]), sl);
      }
    }
    sm = row_group_sum(sm, tpr_log2, red);
    sl = row_group_sum(sl, tpr_log2, red);
    if (!act) continue;
    const T cm = static_cast<T>(step_coef(sm, lr_mu, bad));
    const T cl = static_cast<T>(step_coef(sl, lr_l, bad));
    if (!has_chunk) continue;
    const int64_t o = row * d + i0;
    const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(o));
    V4<T> s;
#pragma unroll
    for (int e = 0; e < 4; ++e) fit_update(mu.v[e], ls.v[e], xi.v[e], s.v[e], gm.v[e], gl.v[e], cm, cl, z.z[e]);
    store4<T, VEC>(P.mu + o, mu, cnt);
    store4<T, VEC>(P.ls + o, ls, cnt);
    store4<T, VEC>(P.xi + o, xi, cnt);
    store4<T, VEC>(P.s + o, s, cnt);
  }
  or_flags(flags, bad);
}

// Segment mode, pass 1: part[(row * nseg + seg) * 2 + {0, 1}] = sums of gm^2 and gl^2.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads)
    fit_sums_seg(FitPtrs<T> P, int64_t rows, int64_t d, double var, double* __restrict__ part) {
  __shared__ double red[(kThreads / 32) * 2 * kSegRows];
  const int64_t nchunk = chunks_of(d);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  const T v = static_cast<T>(var);
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    const int64_t i0 = 4 * ch;
    const int cnt = ch < nchunk ? (d - i0 < 4 ? static_cast<int>(d - i0) : 4) : 0;
    double ss[2 * kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      ss[2 * r] = ss[2 * r + 1] = 0.0;
      if (cnt == 0 || row >= rows) continue;
      const int64_t o = row * d + i0;
      const V4<T> mu = load4<T, VEC>(P.mu + o, cnt), ls = load4<T, VEC>(P.ls + o, cnt);
      const V4<T> m = load4<T, VEC>(P.m + o, cnt), g = load4<T, VEC>(P.g + o, cnt);
      const V4<T> xi = load4<T, VEC>(P.xi + o, cnt);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (e >= cnt) continue;
        const FitTerms<T> t = fit_terms(mu.v[e], ls.v[e], m.v[e], g.v[e], xi.v[e], v);
        ss[2 * r] = fma(static_cast<double>(t.gm), static_cast<double>(t.gm), ss[2 * r]);
        ss[2 * r + 1] = fma(static_cast<double>(t.gl), static_cast<double>(t.gl), ss[2 * r + 1]);
      }
    }
    block_sums<2 * kSegRows>(ss, red);
    if (threadIdx.x < 2 * kSegRows) {
      const int64_t row = grp * kSegRows + threadIdx.x / 2;
      if (row < rows) part[(row * nseg + seg) * 2 + (threadIdx.x & 1)] = ss[0];
    }
  }
}

// Segment mode, pass 2: one warp per row sums its partials (fixed order) into the two step
// coefficients coef[2 row + {0, 1}].
__global__ void __launch_bounds__(kThreads)
    fit_coefs(const double* __restrict__ part, int64_t nseg, int64_t rows, double lr_mu, double lr_l,
              double* __restrict__ coef, int32_t* flags) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  int bad = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); row < rows;
       row += warps) {
    double tm = 0.0, tl = 0.0;
    for (int64_t k = lane; k < nseg; k += 32) {
      tm += part[(row * nseg + k) * 2];
      tl += part[(row * nseg + k) * 2 + 1];
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
      tm += __shfl_xor_sync(0xffffffffu, tm, off);
      tl += __shfl_xor_sync(0xffffffffu, tl, off);
    }
    if (lane == 0) {
      coef[2 * row] = step_coef(tm, lr_mu, bad);
      coef[2 * row + 1] = step_coef(tl, lr_l, bad);
    }
  }
  or_flags(flags, bad);
}

// Segment mode, pass 3: the update and the draw.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads)
    fit_update_seg(FitPtrs<T> P, int64_t rows, int64_t d, double var, const double* __restrict__ coef,
                   uint64_t seed, uint64_t offset) {
  const int64_t nchunk = chunks_of(d);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  const T v = static_cast<T>(var);
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    if (ch >= nchunk) continue;
    const int64_t i0 = 4 * ch;
    const int cnt = d - i0 < 4 ? static_cast<int>(d - i0) : 4;
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (row >= rows) continue;
      const int64_t o = row * d + i0;
      V4<T> mu = load4<T, VEC>(P.mu + o, cnt), ls = load4<T, VEC>(P.ls + o, cnt);
      V4<T> xi = load4<T, VEC>(P.xi + o, cnt);
      const V4<T> m = load4<T, VEC>(P.m + o, cnt), g = load4<T, VEC>(P.g + o, cnt);
      const T cm = static_cast<T>(coef[2 * row]), cl = static_cast<T>(coef[2 * row + 1]);
      const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(o));
      V4<T> s;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const FitTerms<T> t = fit_terms(mu.v[e], ls.v[e], m.v[e], g.v[e], xi.v[e], v);
        fit_update(mu.v[e], ls.v[e], xi.v[e], s.v[e], t.gm, t.gl, cm, cl, z.z[e]);
      }
      store4<T, VEC>(P.mu + o, mu, cnt);
      store4<T, VEC>(P.ls + o, ls, cnt);
      store4<T, VEC>(P.xi + o, xi, cnt);
      store4<T, VEC>(P.s + o, s, cnt);
    }
  }
}

template <typename T>
void fit_launch(FitPtrs<T> P, int64_t rows, int64_t d, double var, double lr_mu, double lr_l, uint64_t seed,
                uint64_t offset, int32_t* flags, void* scratch, int sm_count, cudaStream_t st) {
  const bool vec = d % 4 == 0 && aligned16(P.mu) && aligned16(P.ls) && aligned16(P.xi) && aligned16(P.s) &&
                   aligned16(P.m) && aligned16(P.g);
  if (rows_mode(d)) {
    const int tl = rows_tpr_log2(d);
    const int64_t slots = kThreads >> tl;
    const unsigned grid = grid_for((rows + slots - 1) / slots, sm_count);
    if (vec)
      fit_rows<T, true><<<grid, kThreads, 0, st>>>(P, rows, d, tl, var, lr_mu, lr_l, seed, offset, flags);
    else
      fit_rows<T, false><<<grid, kThreads, 0, st>>>(P, rows, d, tl, var, lr_mu, lr_l, seed, offset, flags);
    return;
  }
  if (scratch == nullptr) bad_arg("variational_update: long rows need a scratch buffer");
  const int64_t nseg = (chunks_of(d) + kThreads - 1) / kThreads;
  double* part = static_cast<double*>(scratch);
  double* coef = part + rows * nseg * 2;
  const unsigned grid = grid_for(((rows + kSegRows - 1) / kSegRows) * nseg, sm_count);
  const unsigned grid_rows = grid_for((rows + 7) / 8, sm_count);
  if (vec)
    fit_sums_seg<T, true><<<grid, kThreads, 0, st>>>(P, rows, d, var, part);
  else
    fit_sums_seg<T, false><<<grid, kThreads, 0, st>>>(P, rows, d, var, part);
  fit_coefs<<<grid_rows, kThreads, 0, st>>>(part, nseg, rows, lr_mu, lr_l, coef, flags);
  if (vec)
    fit_update_seg<T, true><<<grid, kThreads, 0, st>>>(P, rows, d, var, coef, seed, offset);
  else
    fit_update_seg<T, false><<<grid, kThreads, 0, st>>>(P, rows, d, var, coef, seed, offset);
}

template <typename T>
FitPtrs<T> fit_ptrs(void* mu, void* log_std, void* xi, void* sample, const void* m, const void* g) {
  return {static_cast<T*>(mu), static_cast<T*>(log_std), static_cast<T*>(xi), static_cast<T*>(sample),
          static_cast<const T*>(m), static_cast<const T*>(g)};
}

}  // namespace

size_t variational_update_scratch_bytes(int64_t rows, int64_t d) {
  if (rows <= 0 || d <= 0 || rows_mode(d)) return 0;
  const int64_t nseg = (chunks_of(d) + kThreads - 1) / kThreads;
  return static_cast<size_t>(rows * (2 * nseg + 2)) * sizeof(double);
}

void variational_update(int dtype, void* mu, void* log_std, const void* m, const void* grad, void* xi, int64_t rows,
                        int64_t d, double var, double lr_mu, double lr_l, uint64_t seed, uint64_t offset,
                        void* sample, int32_t* flags, void* scratch, int sm_count, void* stream) {
  if (rows <= 0 || d <= 0) return;
  cudaStream_t st = as_stream(stream);
  if (dtype == kFloat32)
    fit_launch<float>(fit_ptrs<float>(mu, log_std, xi, sample, m, grad), rows, d, var, lr_mu, lr_l, seed, offset,
                      flags, scratch, sm_count, st);
  else if (dtype == kFloat64)
    fit_launch<double>(fit_ptrs<double>(mu, log_std, xi, sample, m, grad), rows, d, var, lr_mu, lr_l, seed, offset,
                       flags, scratch, sm_count, st);
  else
    bad_arg("variational_update: unknown dtype code");
}

}  // namespace cuda
}  // namespace fkdiff
