// Protocol 1 (logsumexp_stats) and 2 (resample, with the optional row gather).
//
// Pipeline (all float64 on the weights side, whatever the log-weights' dtype):
//   K1 tile_stats      grid over (population, tile): online (max, sum e^(lw - max), sum e^2(...))
//                      of each tile, plus error bits -> partials.
//   K2 population_scan one block per population: merges its partials into (M, s1, s2, bits);
//                      logsumexp_stats writes them; resample also writes per-tile float64
//                      carries T_k (exclusive scan of the tile sums rescaled to M; made exactly
//                      monotone by a running max) with T_nblk = S.
//   K3 resample_tiles  grid over (population, tile of 2048 particles): recomputes the tile's
//                      weights exp(lw - M), block-scans them into c_i = (T_k + L_i) / S in shared
//                      memory, and writes every output j whose threshold q_j falls in
//                      [T_k / S, T_k+1 / S) (a binary search of the tile per output); with small
//                      rows it also copies the rows. The ranges of consecutive tiles meet exactly
//                      (the same double T_k / S ends one and starts the next), so every output is
//                      written once. Load balance: a tile that takes most offspring writes them
//                      all (correct, slower).
//   K4 gather_rows     rows[b, j] = x[b, anc[b, j]] for long rows (a plain streaming copy).
#include <cub/block/block_scan.cuh>

#include "common.cuh"
#include "fkdiff_cuda.h"

namespace fkdiff {
namespace cuda {
namespace {

constexpr int kTile = 2048;  // particles per resampling tile (256 threads x 8)
constexpr int kItems = kTile / kThreads;
constexpr int64_t kLseMaxTilesPerPop = 1024;  // logsumexp_stats: tiles grow past this many
constexpr int64_t kFuseRowBytes = 128;        // rows up to this size are copied inside K3

// ------------------------------------------------------------------------------------------
// Online (max, s1, s2) accumulators
// ------------------------------------------------------------------------------------------

struct Acc {
  double m, s1, s2;
  int bits;  // NaN -> 1, +inf -> 2
  int seen;  // some entry is not -inf
};

__device__ __forceinline__ Acc acc_empty() { return Acc{-INFINITY, 0.0, 0.0, 0, 0}; }

__device__ __forceinline__ Acc acc_merge(const Acc& a, const Acc& b) {
  Acc r;
  r.bits = a.bits | b.bits;
  r.seen = a.seen | b.seen;
  const double M = fmax(a.m, b.m);
  if (M == -INFINITY) {
    r.m = -INFINITY;
    r.s1 = 0.0;
    r.s2 = 0.0;
    return r;
  }
  const double ea = exp(a.m - M), eb = exp(b.m - M);
  r.m = M;
  r.s1 = a.s1 * ea + b.s1 * eb;
  r.s2 = a.s2 * ea * ea + b.s2 * eb * eb;
  return r;
}

__device__ __forceinline__ Acc acc_shfl_down(const Acc& a, int off) {
  Acc r;
  r.m = __shfl_down_sync(0xffffffffu, a.m, off);
  r.s1 = __shfl_down_sync(0xffffffffu, a.s1, off);
  r.s2 = __shfl_down_sync(0xffffffffu, a.s2, off);
  r.bits = __shfl_down_sync(0xffffffffu, a.bits, off);
  r.seen = __shfl_down_sync(0xffffffffu, a.seen, off);
  return r;
}

// Block merge (fixed tree: deterministic); the result is valid in thread 0. All threads call.
__device__ __forceinline__ Acc block_merge(Acc a, Acc* sh) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const Acc o = acc_shfl_down(a, off);
    if ((threadIdx.x & 31) + off < 32) a = acc_merge(a, o);
  }
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = a;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) a = acc_merge(a, sh[w]);
  }
  __syncthreads();
  return a;
}

// Partials are stored as 4 doubles: m, s1, s2, bits | (seen << 8).
struct Partial {
  double m, s1, s2, tag;
};

// K1: one partial per (population, tile of `tile` entries); one warp per tile (no shared memory,
// no block barriers). Each lane loads kStatBatch entries (independent loads in flight), takes
// their max, rescales its running sums once per batch when the max grows, then adds one
// float64 exp per entry. The warp merges its lanes relative to the warp max (one exp per lane).
constexpr int kStatBatch = 16;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tile_stats(const T* __restrict__ lw, int64_t lw_stride, int64_t B, int64_t N, int64_t tile, int64_t nblk,
               Partial* __restrict__ part) {
  const int lane = threadIdx.x & 31;
  const int64_t items = B * nblk;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5); item < items;
       item += nwarps) {
    const int64_t b = item / nblk, k = item - b * nblk;
    const int64_t p0 = k * tile;
    const int64_t p1 = p0 + tile < N ? p0 + tile : N;
    const T* row = lw + b * lw_stride;
    double m = -INFINITY, s1 = 0.0, s2 = 0.0;
    int bits = 0, seen = 0;
    for (int64_t base = p0; base < p1; base += 32 * kStatBatch) {
      double v[kStatBatch];
#pragma unroll
      for (int r = 0; r < kStatBatch; ++r) {
        const int64_t i = base + lane + 32 * r;
        v[r] = i < p1 ? static_cast<double>(row[i]) : -INFINITY;
      }
      double bm = -INFINITY;
#pragma unroll
      for (int r = 0; r < kStatBatch; ++r) {
        const double x = v[r];
        if (isnan(x)) bits |= kFlagLogWeightNaN;
        if (x == INFINITY) bits |= kFlagLogWeightPosInf;
        if (x != -INFINITY) seen = 1;  // NaN included
        if (x < INFINITY) bm = fmax(bm, x);  // finite or -inf (false for NaN)
      }
      if (bm > m) {  // m = -inf: e = 0 and the (zero) sums stay zero
        const double e = exp(m - bm);
        s1 *= e;
        s2 *= e * e;
        m = bm;
      }
      if (m > -INFINITY) {
#pragma unroll
        for (int r = 0; r < kStatBatch; ++r) {
          const double x = v[r];
          if (x > -INFINITY && x < INFINITY) {  // false for NaN
            const double e = exp(x - m);
            s1 += e;
            s2 = fma(e, e, s2);
          }
        }
      }
    }
    double M = m;
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) M = fmax(M, __shfl_xor_sync(0xffffffffu, M, off));
    if (M > -INFINITY) {
      const double e = exp(m - M);  // 0 for a lane with m = -inf
      s1 *= e;
      s2 *= e * e;
    } else {
      s1 = 0.0;
      s2 = 0.0;
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {  // butterfly: every lane gets the same sums
      s1 += __shfl_xor_sync(0xffffffffu, s1, off);
      s2 += __shfl_xor_sync(0xffffffffu, s2, off);
    }
    bits = __reduce_or_sync(0xffffffffu, bits);
    seen = __any_sync(0xffffffffu, seen) ? 1 : 0;
    if (lane == 0) part[item] = Partial{M, s1, s2, static_cast<double>(bits | (seen << 8))};
  }
}

struct MaxOp {
  __device__ __forceinline__ double operator()(double a, double b) const { return fmax(a, b); }
};

// K2: one block per population.
//   stats != nullptr: logsumexp_stats output (B, 3).
//   info/carries != nullptr: resample's per-population (M, status) and carries T_0..T_nblk.
__global__ void __launch_bounds__(kThreads)
    population_scan(const Partial* __restrict__ part, int64_t B, int64_t nblk, double* __restrict__ stats,
                    double* __restrict__ info, double* __restrict__ carries, int32_t* flags) {
  __shared__ Acc sh[kThreads / 32];
  __shared__ double s_M;
  __shared__ int s_status;
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const Partial* pb = part + b * nblk;
    Acc a = acc_empty();
    for (int64_t k = threadIdx.x; k < nblk; k += kThreads) {
      const Partial p = pb[k];
      const int tag = static_cast<int>(p.tag);
      a = acc_merge(a, Acc{p.m, p.s1, p.s2, tag & 0xff, tag >> 8});
    }
    a = block_merge(a, sh);
    if (threadIdx.x == 0) {
      const int status = a.bits | (a.seen ? 0 : kFlagLogWeightAllZero);
      s_status = status;
      s_M = a.m;
      or_flags(flags, status);
      if (stats != nullptr) {
        stats[3 * b + 0] = status ? NAN : a.m;
        stats[3 * b + 1] = status ? NAN : a.s1;
        stats[3 * b + 2] = status ? NAN : a.s2;
      }
      if (info != nullptr) {
        info[2 * b + 0] = status ? 0.0 : a.m;
        info[2 * b + 1] = static_cast<double>(status);
      }
    }
    __syncthreads();
    const int status = s_status;
    const double M = s_M;
    if (carries != nullptr && status == 0) {
      double* Tb = carries + b * (nblk + 1);
      double carry = 0.0;     // running sum before this chunk
      double hi = 0.0;        // max value written so far (keeps the carries monotone)
      for (int64_t base = 0; base < nblk; base += kTile) {
        double w[kItems];
        double run = 0.0;
#pragma unroll
        for (int r = 0; r < kItems; ++r) {
          const int64_t k = base + static_cast<int64_t>(threadIdx.x) * kItems + r;
          double c = 0.0;
          if (k < nblk) {
            const Partial p = pb[k];
            c = p.s1 > 0.0 ? p.s1 * exp(p.m - M) : 0.0;
          }
          w[r] = run;  // exclusive within the thread
          run += c;
        }
        double excl, agg;
        Scan(scan_tmp).ExclusiveSum(run, excl, agg);
        __syncthreads();
        double v[kItems];
#pragma unroll
        for (int r = 0; r < kItems; ++r) v[r] = fmax(carry + (excl + w[r]), hi);
        // Exact monotonicity across threads: a running max over the threads' last values.
        double prev_max, blk_max;
        Scan(scan_tmp).ExclusiveScan(v[kItems - 1], prev_max, -INFINITY, MaxOp(), blk_max);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < kItems; ++r) {
          const int64_t k = base + static_cast<int64_t>(threadIdx.x) * kItems + r;
          if (k < nblk) Tb[k] = threadIdx.x == 0 ? v[r] : fmax(v[r], prev_max);
        }
        hi = fmax(hi, blk_max);
        carry += agg;
      }
      if (threadIdx.x == 0) Tb[nblk] = fmax(carry, hi);
    }
    __syncthreads();
  }
}

// Number of outputs j in [0, N) with (j + u) / N < t (the predicate of the reference).
__device__ __forceinline__ int64_t count_systematic(double t, double u, int64_t N) {
  const double Nd = static_cast<double>(N);
  const double g = ceil(t * Nd - u);
  int64_t c;
  if (!(g > 0.0))
    c = 0;
  else if (g >= Nd)
    c = N;
  else
    c = static_cast<int64_t>(g);
  for (int it = 0; it < 8 && c > 0 && !((static_cast<double>(c - 1) + u) / Nd < t); ++it) --c;
  for (int it = 0; it < 8 && c < N && (static_cast<double>(c) + u) / Nd < t; ++it) ++c;
  return c;
}

// Number of j in [0, n) with q[j] < t for sorted q (block-cooperative 256-ary search; every
// thread must call it; the result is in [0, n] whatever q holds).
__device__ __forceinline__ int64_t block_count_less(const double* q, int64_t n, double t) {
  int64_t lo = 0, hi = n;
  while (hi > lo) {
    const int64_t len = hi - lo;
    const int64_t step = (len + kThreads - 1) / kThreads;
    const int64_t p = lo + static_cast<int64_t>(threadIdx.x) * step;
    const int pred = (p < hi) && (q[p] < t);
    const int cnt = __syncthreads_count(pred);
    if (step == 1) {
      lo += cnt;
      break;
    }
    if (cnt == 0) break;  // q[lo] >= t
    const int64_t new_lo = lo + static_cast<int64_t>(cnt - 1) * step + 1;
    const int64_t cap = lo + static_cast<int64_t>(cnt) * step;
    hi = cap < hi ? cap : hi;
    lo = new_lo;
  }
  return lo;
}

__device__ __forceinline__ void copy_row(const char* __restrict__ x, char* __restrict__ rows, int64_t src,
                                         int64_t dst, int64_t rb, int unit) {
  const char* s = x + src * rb;
  char* d = rows + dst * rb;
  if (unit == 16) {
    for (int64_t o = 0; o < rb; o += 16) *reinterpret_cast<uint4*>(d + o) = *reinterpret_cast<const uint4*>(s + o);
  } else if (unit == 8) {
    for (int64_t o = 0; o < rb; o += 8) *reinterpret_cast<uint2*>(d + o) = *reinterpret_cast<const uint2*>(s + o);
  } else if (unit == 4) {
    for (int64_t o = 0; o < rb; o += 4)
      *reinterpret_cast<uint32_t*>(d + o) = *reinterpret_cast<const uint32_t*>(s + o);
  } else {
    for (int64_t o = 0; o < rb; ++o) d[o] = s[o];
  }
}

__device__ __forceinline__ int skew(int i) { return i + (i >> 4); }  // conflict-free blocked reads

// First i in [0, P) with sc[i] > q for the non-decreasing tile sc (skewed layout), or P if none:
// fixed-step binary lifting (branch-free, so several searches of one thread interleave).
__device__ __forceinline__ int tile_search(const double* sc, int P, double q) {
  int lo = 0;  // sc[i] <= q for all i < lo
#pragma unroll
  for (int step = kTile; step >= 1; step >>= 1) {
    const int t = lo + step;
    if (t <= P && sc[skew(t - 1)] <= q) lo = t;
  }
  return lo;
}

// Rounding at the tile's end (no sc[i] > q): the tile's first particle reaching its last value
// (its last particle of positive weight).
__device__ __forceinline__ int tile_last(const double* sc, int P) {
  const double last = sc[skew(P - 1)];
  int lo = 0, hi = P - 1;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (sc[skew(mid)] >= last)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

constexpr int kEmit = 4;  // outputs per thread per step of emit_outputs (independent searches/copies)

// Copies kEmit rows of rb bytes (unit-aligned), one unit column at a time: the loads of all kEmit
// rows are issued before their stores.
template <typename U>
__device__ __forceinline__ void copy_rows_batch(const char* __restrict__ x, char* __restrict__ rows,
                                                const int64_t (&src)[kEmit], const int64_t (&dst)[kEmit],
                                                const bool (&ok)[kEmit], int64_t rb) {
  for (int64_t o = 0; o < rb; o += static_cast<int64_t>(sizeof(U))) {
    U t[kEmit];
#pragma unroll
    for (int r = 0; r < kEmit; ++r)
      if (ok[r]) t[r] = *reinterpret_cast<const U*>(x + src[r] * rb + o);
#pragma unroll
    for (int r = 0; r < kEmit; ++r)
      if (ok[r]) *reinterpret_cast<U*>(rows + dst[r] * rb + o) = t[r];
  }
}

// Outputs j in [jlo, jhi) of the tile starting at particle p0 (sc holds its normalised carries
// c_0..c_{P-1}): ancestors (and rows when rb > 0; row indices are relative to row0 = b * N).
template <typename I>
__device__ __forceinline__ void emit_outputs(const double* sc, int P, int64_t p0, int64_t jlo, int64_t jhi,
                                             int64_t N, double ub, const double* qb, I* __restrict__ ancb,
                                             const char* __restrict__ x, char* __restrict__ rows, int64_t row0,
                                             int64_t rb, int unit) {
  const double Nd = static_cast<double>(N);
  for (int64_t j0 = jlo + threadIdx.x; j0 < jhi; j0 += static_cast<int64_t>(kThreads) * kEmit) {
    int64_t src[kEmit], dst[kEmit];
    bool ok[kEmit];
#pragma unroll
    for (int r = 0; r < kEmit; ++r) {
      const int64_t j = j0 + static_cast<int64_t>(r) * kThreads;
      ok[r] = j < jhi;
      int lo = 0;
      if (ok[r]) {
        const double q = qb == nullptr ? (static_cast<double>(j) + ub) / Nd : qb[j];
        lo = tile_search(sc, P, q);
      }
      src[r] = lo;
      dst[r] = j;
    }
#pragma unroll
    for (int r = 0; r < kEmit; ++r) {
      if (!ok[r]) continue;
      int lo = static_cast<int>(src[r]);
      if (lo >= P) lo = tile_last(sc, P);
      ancb[dst[r]] = static_cast<I>(p0 + lo);
      src[r] = row0 + p0 + lo;
      dst[r] = row0 + dst[r];
    }
    if (rb > 0) {
      if (unit == 16)
        copy_rows_batch<uint4>(x, rows, src, dst, ok, rb);
      else if (unit == 8)
        copy_rows_batch<uint2>(x, rows, src, dst, ok, rb);
      else if (unit == 4)
        copy_rows_batch<uint32_t>(x, rows, src, dst, ok, rb);
      else
        copy_rows_batch<unsigned char>(x, rows, src, dst, ok, rb);
    }
  }
}

// K3. rb > 0: copy rows of rb bytes too (unit: widest aligned access, bytes).
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    resample_tiles(const T* __restrict__ lw, int64_t lw_stride, int64_t B, int64_t N, int64_t nblk,
                   const double* __restrict__ info, const double* __restrict__ carries, const double* __restrict__ u,
                   const double* __restrict__ pos, int64_t pos_stride, I* __restrict__ anc,
                   const char* __restrict__ x, char* __restrict__ rows, int64_t rb, int unit) {
  __shared__ double sc[kTile + kTile / 16];
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  const int tid = threadIdx.x;
  const int64_t items = B * nblk;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t b = item / nblk, k = item - b * nblk;
    const int64_t p0 = k * kTile;
    const int P = static_cast<int>(N - p0 < kTile ? N - p0 : kTile);
    I* ancb = anc + b * N;
    const int status = static_cast<int>(info[2 * b + 1]);
    __syncthreads();  // the previous item's readers of sc are done
    if (status != 0) {  // flagged population: identity (block-uniform branch)
      for (int i = tid; i < P; i += kThreads) {
        ancb[p0 + i] = static_cast<I>(p0 + i);
        if (rb > 0) copy_row(x, rows, b * N + p0 + i, b * N + p0 + i, rb, unit);
      }
      continue;
    }
    const double M = info[2 * b];
    const double* Tb = carries + b * (nblk + 1);
    const double Tk = Tb[k], Tk1 = Tb[k + 1], S = Tb[nblk];
    const T* lwb = lw + b * lw_stride + p0;
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      const int i = tid + r * kThreads;
      sc[skew(i)] = i < P ? exp(static_cast<double>(lwb[i]) - M) : 0.0;
    }
    __syncthreads();
    double v[kItems];
    double run = 0.0;
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      run += sc[skew(tid * kItems + r)];
      v[r] = run;
    }
    double excl;
    Scan(scan_tmp).ExclusiveSum(run, excl);
#pragma unroll
    for (int r = 0; r < kItems; ++r) sc[skew(tid * kItems + r)] = (Tk + (excl + v[r])) / S;
    __syncthreads();
    // This tile's outputs.
    const double ub = pos == nullptr ? u[b] : 0.0;
    const double* qb = pos == nullptr ? nullptr : pos + b * pos_stride;
    int64_t jlo, jhi;
    if (pos == nullptr) {
      jlo = k == 0 ? 0 : count_systematic(Tk / S, ub, N);
      jhi = k == nblk - 1 ? N : count_systematic(Tk1 / S, ub, N);
    } else {
      jlo = k == 0 ? 0 : block_count_less(qb, N, Tk / S);
      jhi = k == nblk - 1 ? N : block_count_less(qb, N, Tk1 / S);
    }
    emit_outputs<I>(sc, P, p0, jlo, jhi, N, ub, qb, ancb, x, rows, b * N, rb, unit);
  }
}

// Small populations (N <= kTile: one tile): one block per population does the stats, the scan
// and the outputs (K1-K3 in one launch). Same arithmetic as K3 with T_0 = 0 and S = the tile's
// scanned total.
template <typename T, typename I>
__global__ void __launch_bounds__(kThreads)
    resample_small(const T* __restrict__ lw, int64_t lw_stride, int64_t B, int64_t N, const double* __restrict__ u,
                   const double* __restrict__ pos, int64_t pos_stride, I* __restrict__ anc,
                   const char* __restrict__ x, char* __restrict__ rows, int64_t rb, int unit, int32_t* flags) {
  __shared__ double sc[kTile + kTile / 16];
  __shared__ double s_max[kThreads / 32];
  __shared__ int s_tag[kThreads / 32];
  using Scan = cub::BlockScan<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int P = static_cast<int>(N);  // N <= kTile
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    I* ancb = anc + b * N;
    const T* lwb = lw + b * lw_stride;
    double vals[kItems];
    double mx = -INFINITY;
    int bits = 0, seen = 0;
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      const int i = tid + r * kThreads;
      const double xv = i < P ? static_cast<double>(lwb[i]) : -INFINITY;
      vals[r] = xv;
      if (isnan(xv)) bits |= kFlagLogWeightNaN;
      if (xv == INFINITY) bits |= kFlagLogWeightPosInf;
      if (xv != -INFINITY) seen = 1;
      if (xv < INFINITY) mx = fmax(mx, xv);
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const int tag = __reduce_or_sync(0xffffffffu, bits | (seen << 8));
    __syncthreads();  // the previous population's readers of sc / s_max are done
    if (lane == 0) {
      s_max[warp] = mx;
      s_tag[warp] = tag;
    }
    __syncthreads();
    double M = s_max[0];
    int all = s_tag[0];
#pragma unroll
    for (int w = 1; w < kThreads / 32; ++w) {
      M = fmax(M, s_max[w]);
      all |= s_tag[w];
    }
    const int status = (all & 0xff) | ((all >> 8) ? 0 : kFlagLogWeightAllZero);
    if (status != 0) {  // flagged population: identity (block-uniform branch)
      if (tid == 0) or_flags(flags, status);
      for (int i = tid; i < P; i += kThreads) {
        ancb[i] = static_cast<I>(i);
        if (rb > 0) copy_row(x, rows, b * N + i, b * N + i, rb, unit);
      }
      continue;
    }
#pragma unroll
    for (int r = 0; r < kItems; ++r) sc[skew(tid + r * kThreads)] = exp(vals[r] - M);  // -inf -> 0
    __syncthreads();
    double v[kItems];
    double run = 0.0;
#pragma unroll
    for (int r = 0; r < kItems; ++r) {
      run += sc[skew(tid * kItems + r)];
      v[r] = run;
    }
    double excl, S;
    Scan(scan_tmp).ExclusiveSum(run, excl, S);  // S >= 1 (the max contributes exp(0))
#pragma unroll
    for (int r = 0; r < kItems; ++r) sc[skew(tid * kItems + r)] = (0.0 + (excl + v[r])) / S;
    __syncthreads();
    const double ub = pos == nullptr ? u[b] : 0.0;
    const double* qb = pos == nullptr ? nullptr : pos + b * pos_stride;
    emit_outputs<I>(sc, P, 0, 0, N, N, ub, qb, ancb, x, rows, b * N, rb, unit);
  }
}

// K4: rows[row] = x[b * N + anc[row]] in units U; 2^tpr_log2 threads per row, 4 units each per
// segment of (4 << tpr_log2) units.
template <typename U, typename I>
__global__ void __launch_bounds__(kThreads)
    gather_rows(const U* __restrict__ x, U* __restrict__ rows, const I* __restrict__ anc, int64_t B, int64_t N,
                int64_t units, int tpr_log2, int64_t nseg) {
  const int tpr = 1 << tpr_log2;
  const int slots = kThreads >> tpr_log2;
  const int slot = threadIdx.x >> tpr_log2, lane = threadIdx.x & (tpr - 1);
  const int64_t nrows = B * N;
  const int64_t ngroups = (nrows + slots - 1) / slots;
  const int64_t items = ngroups * nseg;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t grp = item / nseg, seg = item - grp * nseg;
    const int64_t row = grp * slots + slot;
    if (row >= nrows) continue;
    const int64_t b = row / N;
    int64_t a = static_cast<int64_t>(anc[row]);
    a = a < 0 ? 0 : (a >= N ? N - 1 : a);  // never out of bounds
    const U* src = x + (b * N + a) * units;
    U* dst = rows + row * units;
    const int64_t base = seg * (static_cast<int64_t>(tpr) * 4) + lane;
    U tmp[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t c = base + static_cast<int64_t>(k) * tpr;
      if (c < units) tmp[k] = src[c];
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t c = base + static_cast<int64_t>(k) * tpr;
      if (c < units) dst[c] = tmp[k];
    }
  }
}

template <typename U, typename I>
void gather_launch(const void* x, void* rows, const void* anc, int64_t B, int64_t N, int64_t rb, int sm_count,
                   cudaStream_t st) {
  const int64_t units = rb / static_cast<int64_t>(sizeof(U));
  int tl = ceil_log2((units + 3) / 4 < 1 ? 1 : (units + 3) / 4);
  if (tl > 8) tl = 8;
  const int64_t per_seg = int64_t{4} << tl;
  const int64_t nseg = (units + per_seg - 1) / per_seg;
  const int64_t slots = kThreads >> tl;
  const unsigned grid = grid_for(((B * N + slots - 1) / slots) * nseg, sm_count);
  gather_rows<U, I><<<grid, kThreads, 0, st>>>(static_cast<const U*>(x), static_cast<U*>(rows),
                                                static_cast<const I*>(anc), B, N, units, tl, nseg);
}

template <typename I>
void gather_dispatch(const void* x, void* rows, const void* anc, int64_t B, int64_t N, int64_t rb, int unit,
                     int sm_count, cudaStream_t st) {
  if (unit == 16)
    gather_launch<uint4, I>(x, rows, anc, B, N, rb, sm_count, st);
  else if (unit == 8)
    gather_launch<uint2, I>(x, rows, anc, B, N, rb, sm_count, st);
  else if (unit == 4)
    gather_launch<uint32_t, I>(x, rows, anc, B, N, rb, sm_count, st);
  else
    gather_launch<unsigned char, I>(x, rows, anc, B, N, rb, sm_count, st);
}

int copy_unit(const void* x, const void* rows, int64_t rb) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(rows);
  for (int u : {16, 8, 4})
    if (rb % u == 0 && (a % u) == 0) return u;
  return 1;
}

int64_t resample_tiles_of(int64_t N) { return (N + kTile - 1) / kTile; }

int64_t lse_tile_of(int64_t N) {
  int64_t tiles = resample_tiles_of(N);
  int64_t per = (tiles + kLseMaxTilesPerPop - 1) / kLseMaxTilesPerPop;  // kTile-units per tile
  return per * kTile;
}

template <typename T>
void stats_launch(const T* lw, int64_t B, int64_t N, int64_t lw_stride, int64_t tile, int64_t nblk, Partial* part,
                  double* stats, double* info, double* carries, int32_t* flags, int sm_count, cudaStream_t st) {
  tile_stats<T><<<grid_for((B * nblk + kThreads / 32 - 1) / (kThreads / 32), sm_count), kThreads, 0, st>>>(
      lw, lw_stride, B, N, tile, nblk, part);
  population_scan<<<grid_for(B, sm_count), kThreads, 0, st>>>(part, B, nblk, stats, info, carries, flags);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// Host entry points
// ------------------------------------------------------------------------------------------

size_t logsumexp_stats_scratch_bytes(int64_t B, int64_t N) {
  if (B <= 0 || N <= 0) return 0;
  const int64_t nblk = (N + lse_tile_of(N) - 1) / lse_tile_of(N);
  return static_cast<size_t>(B * nblk) * sizeof(Partial);
}

void logsumexp_stats(const void* log_weights, int dtype, int64_t B, int64_t N, int64_t lw_stride, double* out,
                     int32_t* flags, void* scratch, int sm_count, void* stream) {
  if (B <= 0 || N <= 0) return;
  if (scratch == nullptr) bad_arg("logsumexp_stats: missing scratch");
  const int64_t tile = lse_tile_of(N);
  const int64_t nblk = (N + tile - 1) / tile;
  Partial* part = static_cast<Partial*>(scratch);
  cudaStream_t st = as_stream(stream);
  if (dtype == kFloat32)
    stats_launch<float>(static_cast<const float*>(log_weights), B, N, lw_stride, tile, nblk, part, out, nullptr,
                        nullptr, flags, sm_count, st);
  else if (dtype == kFloat64)
    stats_launch<double>(static_cast<const double*>(log_weights), B, N, lw_stride, tile, nblk, part, out, nullptr,
                         nullptr, flags, sm_count, st);
  else
    bad_arg("logsumexp_stats: unknown dtype code");
}

size_t resample_scratch_bytes(int64_t B, int64_t N) {
  if (B <= 0 || N <= 0) return 0;
  const int64_t nblk = resample_tiles_of(N);
  return static_cast<size_t>(B * nblk) * sizeof(Partial) + static_cast<size_t>(2 * B) * sizeof(double) +
         static_cast<size_t>(B * (nblk + 1)) * sizeof(double);
}

void resample(const void* log_weights, int dtype, int64_t B, int64_t N, int64_t lw_stride, void* ancestors,
              int index_dtype, int32_t* flags, const double* u, const double* positions, int64_t pos_stride,
              const void* x, void* rows, int x_dtype, int64_t d, void* scratch, int sm_count, void* stream) {
  if (B <= 0 || N <= 0) return;
  if (scratch == nullptr) bad_arg("resample: missing scratch");
  if ((u == nullptr) == (positions == nullptr)) bad_arg("resample: give exactly one of u and positions");
  if ((x == nullptr) != (rows == nullptr)) bad_arg("resample: give both x and rows, or neither");
  if (index_dtype != kInt32 && index_dtype != kInt64) bad_arg("resample: unknown index dtype code");
  if (dtype != kFloat32 && dtype != kFloat64) bad_arg("resample: unknown dtype code");
  int64_t rb = 0;
  if (x != nullptr) {
    if (x_dtype != kFloat32 && x_dtype != kFloat64) bad_arg("resample: unknown x dtype code");
    rb = d * (x_dtype == kFloat32 ? 4 : 8);
  }
  const int64_t nblk = resample_tiles_of(N);
  if (B * nblk > (int64_t{1} << 40)) bad_arg("resample: too many tiles");
  Partial* part = static_cast<Partial*>(scratch);
  double* info = reinterpret_cast<double*>(part + B * nblk);
  double* carries = info + 2 * B;
  cudaStream_t st = as_stream(stream);
  const bool fuse = rb > 0 && rb <= kFuseRowBytes;
  const int unit = rb > 0 ? copy_unit(x, rows, rb) : 0;
  const int64_t rb_k3 = fuse ? rb : 0;
  const char* xc = static_cast<const char*>(x);
  char* rc = static_cast<char*>(rows);
  if (nblk == 1) {  // one tile per population: a single fused launch (+ the gather for long rows)
    const unsigned grid1 = grid_for(B, sm_count);
#define FKD_RS1(T, I)                                                                                            \
  resample_small<T, I><<<grid1, kThreads, 0, st>>>(static_cast<const T*>(log_weights), lw_stride, B, N, u,        \
                                                   positions, pos_stride, static_cast<I*>(ancestors), xc, rc,      \
                                                   rb_k3, unit, flags)
    if (dtype == kFloat32) {
      if (index_dtype == kInt32) FKD_RS1(float, int32_t); else FKD_RS1(float, int64_t);
    } else {
      if (index_dtype == kInt32) FKD_RS1(double, int32_t); else FKD_RS1(double, int64_t);
    }
#undef FKD_RS1
  } else {
  if (dtype == kFloat32)
    stats_launch<float>(static_cast<const float*>(log_weights), B, N, lw_stride, kTile, nblk, part, nullptr, info,
                        carries, flags, sm_count, st);
  else
    stats_launch<double>(static_cast<const double*>(log_weights), B, N, lw_stride, kTile, nblk, part, nullptr, info,
                         carries, flags, sm_count, st);

  const unsigned grid = grid_for(B * nblk, sm_count);
#define FKD_RS(T, I)                                                                                             \
  resample_tiles<T, I><<<grid, kThreads, 0, st>>>(static_cast<const T*>(log_weights), lw_stride, B, N, nblk, info, \
                                                  carries, u, positions, pos_stride, static_cast<I*>(ancestors),   \
                                                  xc, rc, rb_k3, unit)
  if (dtype == kFloat32) {
    if (index_dtype == kInt32) FKD_RS(float, int32_t); else FKD_RS(float, int64_t);
  } else {
    if (index_dtype == kInt32) FKD_RS(double, int32_t); else FKD_RS(double, int64_t);
  }
#undef FKD_RS
  }
  if (rb > 0 && !fuse) {
    if (index_dtype == kInt32)
      gather_dispatch<int32_t>(x, rows, ancestors, B, N, rb, unit, sm_count, st);
    else
      gather_dispatch<int64_t>(x, rows, ancestors, B, N, rb, unit, sm_count, st);
  }
}

}  // namespace cuda
}  // namespace fkdiff
