// Protocol 4 (mutation), 5 (tamed Langevin) and 3 (Gaussian potential): row-wise streaming
// kernels over (B, N, d) particle arrays.
//
// Two layouts (common.cuh): rows mode for rows of at most 1024 elements (a row lives in one
// block: 2^k threads per row, one chunk of 4 elements each, so per-row sums stay on chip),
// segment mode for longer rows (a block takes 4 rows x 256 chunks; per-row sums go through a
// small float64 scratch of one partial per (row, segment)).
#include "common.cuh"
#include "fkdiff_cuda.h"

namespace fkdiff {
namespace cuda {
namespace {

// ==========================================================================================
// Mutation: out[b,j,i] = K c + (1 - K) m[b, a_j, i] + s z(offset + (b N + j) d + i)
// ==========================================================================================

// Fixed evaluation order (explicit fma): identical bits in the vector and scalar paths.
template <typename T>
__device__ __forceinline__ T mutate_mean(T K, T c, T mv) {
  return fma(T(1) - K, mv, K * c);
}
template <typename T>
__device__ __forceinline__ T mutate(T K, T c, T s, T mv, float z) {
  return fma(s, static_cast<T>(z), mutate_mean(K, c, mv));
}

template <typename I>
__device__ __forceinline__ bool parent_of(const I* anc, int64_t row, int64_t j, int64_t Np, int64_t& p) {
  if (anc == nullptr) {
    p = j;
    return true;
  }
  const int64_t a = static_cast<int64_t>(anc[row]);
  p = a;
  return a >= 0 && a < Np;
}

static_assert(kChunksPerThread == 1, "rows-mode kernels assume one chunk per thread and row");

// Rows mode: each grid-stride step takes R = RowsUnroll<T> row groups (R rows per thread, all in
// the thread's single chunk column): ancestors of all R rows, then their parent rows (R
// independent loads in flight), then K, c, s (reloaded only when the population changes), the
// noise, the stores.
template <typename T, typename I, bool VEC>
__global__ void __launch_bounds__(kThreads, kRowsMinBlocks<T>)
    mutation_rows(const T* m, const I* __restrict__ anc, const T* __restrict__ K, int64_t sK,
                  const T* __restrict__ C, int64_t sC, const T* __restrict__ S, int64_t sS, T* out, int64_t B,
                  int64_t N, int64_t Np, int64_t d, int tpr_log2, uint64_t seed, uint64_t offset, int32_t* flags) {
  constexpr int R = RowsUnroll<T>::value;
  const int tpr = 1 << tpr_log2;
  const int slots = kThreads >> tpr_log2;
  const int slot = threadIdx.x >> tpr_log2, lane = threadIdx.x & (tpr - 1);
  const int64_t rows = B * N, nchunk = chunks_of(d);
  const int64_t ngroups = (rows + slots - 1) / slots;
  int bad = 0;
  if (lane < nchunk) {  // this thread's chunk column exists (lane-uniform over the whole loop)
    const int64_t i0 = 4 * static_cast<int64_t>(lane);
    const int cnt = d - i0 < 4 ? static_cast<int>(d - i0) : 4;
    for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * R; g0 < ngroups;
         g0 += static_cast<int64_t>(gridDim.x) * R) {
      const int64_t rw0 = g0 * slots + slot;
      int64_t pb[R];
      V4<T> mv[R];
      bool act[R], valid[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t row = rw0 + static_cast<int64_t>(r) * slots;
        act[r] = row < rows;
        valid[r] = false;
        pb[r] = 0;
        if (act[r]) {
          const int64_t b = pop_of(row, N, B), j = row - b * N;
          int64_t p;
          valid[r] = parent_of(anc, row, j, Np, p);
          pb[r] = b;
          if (valid[r]) mv[r] = load4<T, VEC>(m + (b * Np + p) * d + i0, cnt);
        }
      }
      int64_t cur = -1;
      V4<T> kv, cv, sv;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (!act[r]) continue;
        const int64_t row = rw0 + static_cast<int64_t>(r) * slots;
        V4<T> o;
        if (valid[r]) {
          if (pb[r] != cur) {
            cur = pb[r];
            kv = load4<T, VEC>(K + cur * sK + i0, cnt);
            cv = load4<T, VEC>(C + cur * sC + i0, cnt);
            sv = load4<T, VEC>(S + cur * sS + i0, cnt);
          }
          V4<T> mean;
#pragma unroll
          for (int e = 0; e < 4; ++e) mean.v[e] = mutate_mean(kv.v[e], cv.v[e], mv[r].v[e]);
          const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(row * d + i0));
#pragma unroll
          for (int e = 0; e < 4; ++e) o.v[e] = fma(sv.v[e], static_cast<T>(z.z[e]), mean.v[e]);
        } else {
          bad = kFlagAncestorRange;
#pragma unroll
          for (int e = 0; e < 4; ++e) o.v[e] = T(NAN);
        }
        store4<T, VEC>(out + row * d + i0, o, cnt);
      }
    }
  }
  or_flags(flags, bad);
}

// Long rows: block item = (group of kSegRows rows, segment of 256 chunks); K, c, s are loaded
// once per population change and reused across the group's rows.
template <typename T, typename I, bool VEC>
__global__ void __launch_bounds__(kThreads)
    mutation_seg(const T* m, const I* __restrict__ anc, const T* __restrict__ K, int64_t sK,
                 const T* __restrict__ C, int64_t sC, const T* __restrict__ S, int64_t sS, T* out, int64_t B,
                 int64_t N, int64_t Np, int64_t d, uint64_t seed, uint64_t offset, int32_t* flags) {
  const int64_t rows = B * N, nchunk = chunks_of(d);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  int bad = 0;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    if (ch >= nchunk) continue;
    const int64_t i0 = 4 * ch;
    const int cnt = d - i0 < 4 ? static_cast<int>(d - i0) : 4;
    int64_t pb = -1;
    V4<T> kv, cv, sv;
    // Load the rows' parents first (independent loads in flight), then compute and store.
    V4<T> mv[kSegRows];
    bool valid[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      valid[r] = false;
      if (row >= rows) continue;
      const int64_t b = row / N, j = row - b * N;
      int64_t p;
      valid[r] = parent_of(anc, row, j, Np, p);
      if (!valid[r]) {
        bad = kFlagAncestorRange;
        continue;
      }
      mv[r] = load4<T, VEC>(m + (b * Np + p) * d + i0, cnt);
    }
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (row >= rows) continue;
      V4<T> o;
      if (valid[r]) {
        const int64_t b = row / N;
        if (b != pb) {
          kv = load4<T, VEC>(K + b * sK + i0, cnt);
          cv = load4<T, VEC>(C + b * sC + i0, cnt);
          sv = load4<T, VEC>(S + b * sS + i0, cnt);
          pb = b;
        }
        const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(row * d + i0));
#pragma unroll
        for (int e = 0; e < 4; ++e) o.v[e] = mutate(kv.v[e], cv.v[e], sv.v[e], mv[r].v[e], z.z[e]);
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) o.v[e] = T(NAN);
      }
      store4<T, VEC>(out + row * d + i0, o, cnt);
    }
  }
  or_flags(flags, bad);
}

template <typename T, typename I>
void mutation_launch(const T* m, const I* anc, int64_t B, int64_t Np, int64_t d, int64_t N, const T* K, int64_t sK,
                     const T* C, int64_t sC, const T* S, int64_t sS, uint64_t seed, uint64_t offset, T* out,
                     int32_t* flags, int sm_count, cudaStream_t st) {
  const bool vec = d % 4 == 0 && sK % 4 == 0 && sC % 4 == 0 && sS % 4 == 0 && aligned16(m) && aligned16(K) &&
                   aligned16(C) && aligned16(S) && aligned16(out);
  const int64_t rows = B * N;
  if (rows_mode(d)) {
    const int tl = rows_tpr_log2(d);
    const int64_t slots = kThreads >> tl;
    constexpr int R = RowsUnroll<T>::value;
    const unsigned grid = grid_for(((rows + slots - 1) / slots + R - 1) / R, sm_count);
    if (vec)
      mutation_rows<T, I, true><<<grid, kThreads, 0, st>>>(m, anc, K, sK, C, sC, S, sS, out, B, N, Np, d, tl, seed,
                                                           offset, flags);
    else
      mutation_rows<T, I, false><<<grid, kThreads, 0, st>>>(m, anc, K, sK, C, sC, S, sS, out, B, N, Np, d, tl, seed,
                                                            offset, flags);
  } else {
    const int64_t nseg = (chunks_of(d) + kThreads - 1) / kThreads;
    const unsigned grid = grid_for(((rows + kSegRows - 1) / kSegRows) * nseg, sm_count);
    if (vec)
      mutation_seg<T, I, true><<<grid, kThreads, 0, st>>>(m, anc, K, sK, C, sC, S, sS, out, B, N, Np, d, seed, offset,
                                                          flags);
    else
      mutation_seg<T, I, false><<<grid, kThreads, 0, st>>>(m, anc, K, sK, C, sC, S, sS, out, B, N, Np, d, seed,
                                                           offset, flags);
  }
}

// ==========================================================================================
// Tamed Langevin: out = x + gamma G / (1 + gamma |G|) + sqrt(2 gamma) z, norm per row.
// ==========================================================================================

template <typename T>
__device__ __forceinline__ T langevin_step(T x, T g, T fac, T sq2g, float z) {
  return fma(sq2g, static_cast<T>(z), fma(fac, g, x));
}

// Rows mode: the rows' gradients and x stay in registers between the norm and the update; each
// grid-stride step takes R = RowsUnroll<T> row groups (2R independent loads in flight per thread).
// x is read before out is written by the same thread, so out may alias x.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads, kRowsMinBlocks<T>)
    langevin_rows(const T* x, const T* grad, T* out, int64_t rows, int64_t d, int tpr_log2, double gamma,
                  uint64_t seed, uint64_t offset, int32_t* flags) {
  __shared__ double red[kThreads / 32];
  constexpr int R = RowsUnroll<T>::value;
  const int tpr = 1 << tpr_log2;
  const int slots = kThreads >> tpr_log2;
  const int slot = threadIdx.x >> tpr_log2, lane = threadIdx.x & (tpr - 1);
  const int64_t nchunk = chunks_of(d);
  const int64_t ngroups = (rows + slots - 1) / slots;
  const T sq2g = static_cast<T>(sqrt(2.0 * gamma));
  const bool has_chunk = lane < nchunk;
  const int64_t i0 = 4 * static_cast<int64_t>(lane);
  const int cnt = has_chunk ? (d - i0 < 4 ? static_cast<int>(d - i0) : 4) : 0;
  int bad = 0;
  // The loop bounds depend on blockIdx only: every thread runs the same iterations (the group
  // sum may synchronise the block).
  for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * R; g0 < ngroups; g0 += static_cast<int64_t>(gridDim.x) * R) {
    int64_t rw[R];
    bool act[R];
    V4<T> gv[R], xv[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      rw[r] = (g0 + r) * slots + slot;
      act[r] = rw[r] < rows;
      if (act[r] && has_chunk) {
        gv[r] = load4<T, VEC>(grad + rw[r] * d + i0, cnt);
        xv[r] = load4<T, VEC>(x + rw[r] * d + i0, cnt);
      }
    }
    double ss[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      ss[r] = 0.0;
      if (act[r] && has_chunk) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const double gd = static_cast<double>(gv[r].v[e]);
          ss[r] = fma(gd, gd, ss[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) ss[r] = row_group_sum(ss[r], tpr_log2, red);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (!act[r]) continue;
      const double norm = sqrt(ss[r]);
      if (!isfinite(norm)) bad = kFlagGradientNonFinite;
      if (!has_chunk) continue;
      const T fac = static_cast<T>(gamma / (1.0 + gamma * norm));
      const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(rw[r] * d + i0));
      V4<T> o;
#pragma unroll
      for (int e = 0; e < 4; ++e) o.v[e] = langevin_step(xv[r].v[e], gv[r].v[e], fac, sq2g, z.z[e]);
      store4<T, VEC>(out + rw[r] * d + i0, o, cnt);
    }
  }
  or_flags(flags, bad);
}

// Segment mode, pass 1: part[row * nseg + seg] = sum of grad^2 over the segment.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads)
    sumsq_seg(const T* __restrict__ grad, int64_t rows, int64_t d, double* __restrict__ part) {
  __shared__ double red[(kThreads / 32) * kSegRows];
  const int64_t nchunk = chunks_of(d);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    const int64_t i0 = 4 * ch;
    const int cnt = ch < nchunk ? (d - i0 < 4 ? static_cast<int>(d - i0) : 4) : 0;
    V4<T> gv[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (cnt > 0 && row < rows) gv[r] = load4<T, VEC>(grad + row * d + i0, cnt);
      else gv[r] = V4<T>{{T(0), T(0), T(0), T(0)}};
    }
    double ss[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      ss[r] = 0.0;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const double gd = static_cast<double>(gv[r].v[e]);
        ss[r] = fma(gd, gd, ss[r]);
      }
    }
    block_sums<kSegRows>(ss, red);
    if (threadIdx.x < kSegRows) {
      const int64_t row = grp * kSegRows + threadIdx.x;
      if (row < rows) part[row * nseg + seg] = ss[0];
    }
  }
}

// Segment mode, pass 2: one warp per row sums its partials (fixed order) into norms[row].
__global__ void __launch_bounds__(kThreads)
    row_norms(const double* __restrict__ part, int64_t nseg, int64_t rows, double* __restrict__ norms,
              int32_t* flags) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  int bad = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); row < rows;
       row += warps) {
    double t = 0.0;
    for (int64_t k = lane; k < nseg; k += 32) t += part[row * nseg + k];
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    const double norm = sqrt(t);
    if (lane == 0) {
      norms[row] = norm;
      if (!isfinite(norm)) bad = kFlagGradientNonFinite;
    }
  }
  or_flags(flags, bad);
}

// Segment mode, pass 3: the update.
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads)
    langevin_seg(const T* x, const T* grad, T* out, int64_t rows, int64_t d, const double* __restrict__ norms,
                 double gamma, uint64_t seed, uint64_t offset) {
  const int64_t nchunk = chunks_of(d);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  const T sq2g = static_cast<T>(sqrt(2.0 * gamma));
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    if (ch >= nchunk) continue;
    const int64_t i0 = 4 * ch;
    const int cnt = d - i0 < 4 ? static_cast<int>(d - i0) : 4;
    V4<T> xv[kSegRows], gv[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (row >= rows) continue;
      xv[r] = load4<T, VEC>(x + row * d + i0, cnt);
      gv[r] = load4<T, VEC>(grad + row * d + i0, cnt);
    }
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (row >= rows) continue;
      const T fac = static_cast<T>(gamma / (1.0 + gamma * norms[row]));
      const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(row * d + i0));
      V4<T> o;
#pragma unroll
      for (int e = 0; e < 4; ++e) o.v[e] = langevin_step(xv[r].v[e], gv[r].v[e], fac, sq2g, z.z[e]);
      store4<T, VEC>(out + row * d + i0, o, cnt);
    }
  }
}

template <typename T>
void langevin_launch(const T* x, const T* grad, int64_t rows, int64_t d, double gamma, uint64_t seed,
                     uint64_t offset, T* out, int32_t* flags, void* scratch, int sm_count, cudaStream_t st) {
  const bool vec = d % 4 == 0 && aligned16(x) && aligned16(grad) && aligned16(out);
  if (rows_mode(d)) {
    const int tl = rows_tpr_log2(d);
    const int64_t slots = kThreads >> tl;
    constexpr int R = RowsUnroll<T>::value;
    const unsigned grid = grid_for(((rows + slots - 1) / slots + R - 1) / R, sm_count);
    if (vec)
      langevin_rows<T, true><<<grid, kThreads, 0, st>>>(x, grad, out, rows, d, tl, gamma, seed, offset, flags);
    else
      langevin_rows<T, false><<<grid, kThreads, 0, st>>>(x, grad, out, rows, d, tl, gamma, seed, offset, flags);
    return;
  }
  if (scratch == nullptr) bad_arg("tamed_langevin: long rows need a scratch buffer");
  const int64_t nseg = (chunks_of(d) + kThreads - 1) / kThreads;
  double* part = static_cast<double*>(scratch);
  double* norms = part + rows * nseg;
  const unsigned grid = grid_for(((rows + kSegRows - 1) / kSegRows) * nseg, sm_count);
  const unsigned grid_rows = grid_for((rows + 7) / 8, sm_count);
  if (vec) {
    sumsq_seg<T, true><<<grid, kThreads, 0, st>>>(grad, rows, d, part);
    row_norms<<<grid_rows, kThreads, 0, st>>>(part, nseg, rows, norms, flags);
    langevin_seg<T, true><<<grid, kThreads, 0, st>>>(x, grad, out, rows, d, norms, gamma, seed, offset);
  } else {
    sumsq_seg<T, false><<<grid, kThreads, 0, st>>>(grad, rows, d, part);
    row_norms<<<grid_rows, kThreads, 0, st>>>(part, nseg, rows, norms, flags);
    langevin_seg<T, false><<<grid, kThreads, 0, st>>>(x, grad, out, rows, d, norms, gamma, seed, offset);
  }
}

// ==========================================================================================
// Gaussian potential: out = [out] + const - Q(x; t, a, v) + Q(x2; t2, a2, v2), float64 sums.
// ==========================================================================================

template <typename T>
struct TermPtrs {
  const T* x;
  int64_t ld, m;
  const T* t;
  int64_t st;
  const T* a;
  int64_t sa;
  const T* v;
  int64_t sv;
};

// (t - a x)^2 / (2 v), with v = +-inf contributing 0 when t - a x is finite (NaN otherwise),
// as the reference. Evaluated in T, summed in float64 by the caller.
template <typename T>
__device__ __forceinline__ double qterm(T x, T t, T a, T v) {
  const T r = fma(-a, x, t);
  if (isinf(v)) return isfinite(r) ? 0.0 : static_cast<double>(NAN);
  const T p = T(0.5) / v;
  return static_cast<double>(r * r * p);
}

// Sums of the terms of R rows over this thread's chunk (rows mode, one chunk per thread and row):
// the R rows' x loads first, then t, a, v (reloaded only when the population changes).
template <typename T, bool VEC, int R>
__device__ __forceinline__ void term_rows_partials(const TermPtrs<T>& P, const int64_t (&pb)[R],
                                                   const int64_t (&rw)[R], const bool (&act)[R], int lane,
                                                   double (&acc)[R]) {
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0;
  if (P.m <= 0 || lane >= chunks_of(P.m)) return;
  const int64_t i0 = 4 * static_cast<int64_t>(lane);
  const int cnt = P.m - i0 < 4 ? static_cast<int>(P.m - i0) : 4;
  V4<T> xv[R];
#pragma unroll
  for (int r = 0; r < R; ++r)
    if (act[r]) xv[r] = load4<T, VEC>(P.x + rw[r] * P.ld + i0, cnt);
  int64_t cur = -1;
  V4<T> tv, av, vv;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (!act[r]) continue;
    if (pb[r] != cur) {
      cur = pb[r];
      tv = load4<T, VEC>(P.t + cur * P.st + i0, cnt);
      av = load4<T, VEC>(P.a + cur * P.sa + i0, cnt);
      vv = load4<T, VEC>(P.v + cur * P.sv + i0, cnt);
    }
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (e < cnt) acc[r] += qterm(xv[r].v[e], tv.v[e], av.v[e], vv.v[e]);
  }
}

template <typename T>
__device__ __forceinline__ void potential_store(T* out, int64_t row, int64_t b, double q1, double q2, bool has2,
                                                const double* cst, bool accumulate, int& bad) {
  double val = -q1;
  if (has2) val += q2;
  if (cst != nullptr) val += cst[b];
  if (accumulate) val += static_cast<double>(out[row]);
  const T o = static_cast<T>(val);
  if (isnan(o)) bad = kFlagPotentialNaN;
  out[row] = o;
}

template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads, sizeof(T) == 4 ? kRowsMinBlocks<T> : 2)
    potential_rows(TermPtrs<T> P1, TermPtrs<T> P2, bool has2, int64_t B, int64_t N, int tpr_log2,
                   const double* __restrict__ cst, T* out, bool accumulate, int32_t* flags) {
  __shared__ double red[kThreads / 32];
  constexpr int R = RowsUnroll<T>::value;
  const int tpr = 1 << tpr_log2;
  const int slots = kThreads >> tpr_log2;
  const int slot = threadIdx.x >> tpr_log2, lane = threadIdx.x & (tpr - 1);
  const int64_t rows = B * N;
  const int64_t ngroups = (rows + slots - 1) / slots;
  int bad = 0;
  for (int64_t g0 = static_cast<int64_t>(blockIdx.x) * R; g0 < ngroups; g0 += static_cast<int64_t>(gridDim.x) * R) {
    int64_t rw[R], pb[R];
    bool act[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      rw[r] = (g0 + r) * slots + slot;
      act[r] = rw[r] < rows;
      pb[r] = act[r] ? pop_of(rw[r], N, B) : 0;
    }
    double q1[R], q2[R];
    term_rows_partials<T, VEC, R>(P1, pb, rw, act, lane, q1);
    if (has2) {
      term_rows_partials<T, VEC, R>(P2, pb, rw, act, lane, q2);
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) q2[r] = 0.0;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      q1[r] = row_group_sum(q1[r], tpr_log2, red);
      if (has2) q2[r] = row_group_sum(q2[r], tpr_log2, red);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
      if (act[r] && lane == 0) potential_store(out, rw[r], pb[r], q1[r], q2[r], has2, cst, accumulate, bad);
  }
  or_flags(flags, bad);
}

// Segment mode: part[row * part_ld + col0 + seg] = sign * (segment's sum of terms).
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads)
    potential_seg(TermPtrs<T> P, int64_t B, int64_t N, double sign, double* __restrict__ part, int64_t part_ld,
                  int64_t col0) {
  __shared__ double red[(kThreads / 32) * kSegRows];
  const int64_t rows = B * N, nchunk = chunks_of(P.m);
  const int64_t nseg = (nchunk + kThreads - 1) / kThreads;
  const int64_t ngroups = (rows + kSegRows - 1) / kSegRows;
  const int64_t items = ngroups * nseg;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t ch = seg * kThreads + threadIdx.x;
    const int64_t i0 = 4 * ch;
    const int cnt = ch < nchunk ? (P.m - i0 < 4 ? static_cast<int>(P.m - i0) : 4) : 0;
    V4<T> xv[kSegRows];
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      const int64_t row = grp * kSegRows + r;
      if (cnt > 0 && row < rows) xv[r] = load4<T, VEC>(P.x + row * P.ld + i0, cnt);
    }
    double q[kSegRows];
    int64_t pb = -1;
    V4<T> tv, av, vv;
#pragma unroll
    for (int r = 0; r < kSegRows; ++r) {
      q[r] = 0.0;
      const int64_t row = grp * kSegRows + r;
      if (cnt > 0 && row < rows) {
        const int64_t b = row / N;
        if (b != pb) {
          tv = load4<T, VEC>(P.t + b * P.st + i0, cnt);
          av = load4<T, VEC>(P.a + b * P.sa + i0, cnt);
          vv = load4<T, VEC>(P.v + b * P.sv + i0, cnt);
          pb = b;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (e < cnt) q[r] += qterm(xv[r].v[e], tv.v[e], av.v[e], vv.v[e]);
      }
    }
    block_sums<kSegRows>(q, red);
    if (threadIdx.x < kSegRows) {
      const int64_t row = grp * kSegRows + threadIdx.x;
      if (row < rows) part[row * part_ld + col0 + seg] = sign * q[0];
    }
  }
}

// Segment mode, final pass: one warp per row sums the signed partials (fixed order).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    potential_finish(const double* __restrict__ part, int64_t part_ld, int64_t B, int64_t N,
                     const double* __restrict__ cst, T* out, bool accumulate, int32_t* flags) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = B * N;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  int bad = 0;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); row < rows;
       row += warps) {
    double t = 0.0;
    for (int64_t k = lane; k < part_ld; k += 32) t += part[row * part_ld + k];
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) t += __shfl_xor_sync(0xffffffffu, t, off);
    if (lane == 0) {
      const int64_t b = row / N;
      double val = t;
      if (cst != nullptr) val += cst[b];
      if (accumulate) val += static_cast<double>(out[row]);
      const T o = static_cast<T>(val);
      if (isnan(o)) bad = kFlagPotentialNaN;
      out[row] = o;
    }
  }
  or_flags(flags, bad);
}

template <typename T>
bool term_vec(const TermPtrs<T>& P) {
  if (P.m <= 0) return true;
  return P.m % 4 == 0 && P.ld % 4 == 0 && P.st % 4 == 0 && P.sa % 4 == 0 && P.sv % 4 == 0 && aligned16(P.x) &&
         aligned16(P.t) && aligned16(P.a) && aligned16(P.v);
}

template <typename T>
TermPtrs<T> term_ptrs(const PotentialTerm* t) {
  TermPtrs<T> P{nullptr, 0, 0, nullptr, 0, nullptr, 0, nullptr, 0};
  if (t == nullptr) return P;
  P.x = static_cast<const T*>(t->x);
  P.ld = t->ld;
  P.m = t->m < 0 ? 0 : t->m;
  P.t = static_cast<const T*>(t->t);
  P.st = t->st;
  P.a = static_cast<const T*>(t->a);
  P.sa = t->sa;
  P.v = static_cast<const T*>(t->v);
  P.sv = t->sv;
  return P;
}

int64_t segs_of(int64_t m) { return m <= 0 ? 0 : (chunks_of(m) + kThreads - 1) / kThreads; }

template <typename T>
void potential_launch(int64_t B, int64_t N, const PotentialTerm& t1, const PotentialTerm* t2, const double* cst,
                      T* out, bool accumulate, int32_t* flags, void* scratch, int sm_count, cudaStream_t st) {
  const TermPtrs<T> P1 = term_ptrs<T>(&t1);
  const TermPtrs<T> P2 = term_ptrs<T>(t2);
  const bool has2 = t2 != nullptr;
  const int64_t rows = B * N;
  const int64_t mmax = P1.m > P2.m ? P1.m : P2.m;
  const bool vec = term_vec(P1) && term_vec(P2);
  if (rows_mode(mmax < 1 ? 1 : mmax)) {
    const int tl = rows_tpr_log2(mmax < 1 ? 1 : mmax);
    const int64_t slots = kThreads >> tl;
    constexpr int R = RowsUnroll<T>::value;
    const unsigned grid = grid_for(((rows + slots - 1) / slots + R - 1) / R, sm_count);
    if (vec)
      potential_rows<T, true><<<grid, kThreads, 0, st>>>(P1, P2, has2, B, N, tl, cst, out, accumulate, flags);
    else
      potential_rows<T, false><<<grid, kThreads, 0, st>>>(P1, P2, has2, B, N, tl, cst, out, accumulate, flags);
    return;
  }
  if (scratch == nullptr) bad_arg("gaussian_potential: long rows need a scratch buffer");
  const int64_t s1 = segs_of(P1.m), s2 = segs_of(P2.m);
  const int64_t part_ld = s1 + s2;
  double* part = static_cast<double*>(scratch);
  if (s1 > 0) {
    const unsigned grid = grid_for(((rows + kSegRows - 1) / kSegRows) * s1, sm_count);
    if (vec)
      potential_seg<T, true><<<grid, kThreads, 0, st>>>(P1, B, N, -1.0, part, part_ld, 0);
    else
      potential_seg<T, false><<<grid, kThreads, 0, st>>>(P1, B, N, -1.0, part, part_ld, 0);
  }
  if (s2 > 0) {
    const unsigned grid = grid_for(((rows + kSegRows - 1) / kSegRows) * s2, sm_count);
    if (vec)
      potential_seg<T, true><<<grid, kThreads, 0, st>>>(P2, B, N, 1.0, part, part_ld, s1);
    else
      potential_seg<T, false><<<grid, kThreads, 0, st>>>(P2, B, N, 1.0, part, part_ld, s1);
  }
  const unsigned grid_rows = grid_for((rows + 7) / 8, sm_count);
  potential_finish<T><<<grid_rows, kThreads, 0, st>>>(part, part_ld, B, N, cst, out, accumulate, flags);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Host entry points
// ------------------------------------------------------------------------------------------

void mutation(int dtype, const void* m, int64_t B, int64_t Np, int64_t d, const void* ancestors, int index_dtype,
              int64_t N, const void* K, int64_t sK, const void* c, int64_t sc, const void* s, int64_t ss,
              uint64_t seed, uint64_t offset, void* out, int32_t* flags, int sm_count, void* stream) {
  if (B <= 0 || N <= 0 || d <= 0) return;
  if (ancestors == nullptr && N != Np) bad_arg("mutation: without ancestors N must equal Np");
  if (Np <= 0 && ancestors == nullptr) return;
  cudaStream_t st = as_stream(stream);
#define FKD_MUT(T, I)                                                                                              \
  mutation_launch<T, I>(static_cast<const T*>(m), static_cast<const I*>(ancestors), B, Np, d, N,                   \
                        static_cast<const T*>(K), sK, static_cast<const T*>(c), sc, static_cast<const T*>(s), ss, \
                        seed, offset, static_cast<T*>(out), flags, sm_count, st)
  const bool i64 = ancestors == nullptr || index_dtype == kInt64;
  if (ancestors != nullptr && index_dtype != kInt32 && index_dtype != kInt64)
    bad_arg("mutation: unknown index dtype code");
  if (dtype == kFloat32) {
    if (i64) FKD_MUT(float, int64_t); else FKD_MUT(float, int32_t);
  } else if (dtype == kFloat64) {
    if (i64) FKD_MUT(double, int64_t); else FKD_MUT(double, int32_t);
  } else {
    bad_arg("mutation: unknown dtype code");
  }
#undef FKD_MUT
}

size_t tamed_langevin_scratch_bytes(int64_t B, int64_t N, int64_t d) {
  if (B <= 0 || N <= 0 || d <= 0 || rows_mode(d)) return 0;
  const int64_t nseg = (chunks_of(d) + kThreads - 1) / kThreads;
  return static_cast<size_t>(B * N * (nseg + 1)) * sizeof(double);
}

void tamed_langevin(int dtype, const void* x, const void* grad, int64_t B, int64_t N, int64_t d, double gamma,
                    uint64_t seed, uint64_t offset, void* out, int32_t* flags, void* scratch, int sm_count,
                    void* stream) {
  if (B <= 0 || N <= 0 || d <= 0) return;
  cudaStream_t st = as_stream(stream);
  if (dtype == kFloat32)
    langevin_launch<float>(static_cast<const float*>(x), static_cast<const float*>(grad), B * N, d, gamma, seed,
                           offset, static_cast<float*>(out), flags, scratch, sm_count, st);
  else if (dtype == kFloat64)
    langevin_launch<double>(static_cast<const double*>(x), static_cast<const double*>(grad), B * N, d, gamma, seed,
                            offset, static_cast<double*>(out), flags, scratch, sm_count, st);
  else
    bad_arg("tamed_langevin: unknown dtype code");
}

size_t gaussian_potential_scratch_bytes(int64_t B, int64_t N, int64_t m, int64_t m2) {
  const int64_t mmax = m > m2 ? m : m2;
  if (B <= 0 || N <= 0 || mmax <= 0 || rows_mode(mmax)) return 0;
  return static_cast<size_t>(B * N * (segs_of(m) + segs_of(m2))) * sizeof(double);
}

void gaussian_potential(int dtype, int64_t B, int64_t N, const PotentialTerm& term1, const PotentialTerm* term2,
                        const double* cst, void* out, bool accumulate, int32_t* flags, void* scratch, int sm_count,
                        void* stream) {
  if (B <= 0 || N <= 0) return;
  cudaStream_t st = as_stream(stream);
  if (dtype == kFloat32)
    potential_launch<float>(B, N, term1, term2, cst, static_cast<float*>(out), accumulate, flags, scratch, sm_count,
                            st);
  else if (dtype == kFloat64)
    potential_launch<double>(B, N, term1, term2, cst, static_cast<double*>(out), accumulate, flags, scratch,
                             sm_count, st);
  else
    bad_arg("gaussian_potential: unknown dtype code");
}

}  // namespace cuda
}  // namespace fkdiff
