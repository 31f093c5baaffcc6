// CPU kernels of fkdiff (csrc/KERNELS.md). This one file is compiled three times, with
// -DFKDIFF_ISA=generic|avx2|avx512 and the matching -m flags; every symbol lives in
// fkdiff::cpu::FKDIFF_ISA and the dispatcher (dispatch.cpp) picks one table at run time.
//
// Determinism: every work split below is over fixed-size chunks / tiles whose boundaries do not
// depend on the thread count, sums inside a chunk run in a fixed order, and chunk results are
// combined sequentially, so the thread count never changes a result bit. Noise is counter based.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "cpu_kernels.h"
#include "fkdiff/flags.h"
#include "fkdiff/philox.h"
#include "simd.h"

namespace fkdiff {
namespace cpu {
namespace FKDIFF_ISA {

namespace {

constexpr int64_t kChunk = 16384;  // resampling / log-sum-exp chunk (multiple of 4)
constexpr int64_t kSub = 1024;     // sub-tile of a chunk held in L1 (multiple of 4 and of W)
constexpr int64_t kTile = 2048;    // elementwise tile (elements)
constexpr int64_t kSmallWork = 1 << 15;

template <class F>
void parallel_ranges(int64_t n, int nt, int64_t work, F f) {
#if defined(_OPENMP)
  if (nt > 1 && n > 1 && work >= kSmallWork) {
    if (nt > n) nt = (int)n;
#pragma omp parallel num_threads(nt)
    {
      const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
      f(n * t / T, n * (t + 1) / T);
    }
    return;
  }
#endif
  (void)nt;
  (void)work;
  f(0, n);
}

inline void or_flag(int32_t* flags, int bits) {
  if (bits && flags) __atomic_fetch_or(flags, bits, __ATOMIC_RELAXED);
}

template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef vf type;
  typedef vi mask;
  static constexpr int n = W;
};
template <>
struct VecOf<double> {
  typedef vd type;
  typedef vi64 mask;
  static constexpr int n = WD;
};

typedef float vfh __attribute__((vector_size(kVecBytes / 2)));

// WD consecutive values as a float64 vector.
inline vd load_vd(const double* p) { return vload<vd>(p); }
inline vd load_vd(const float* p) { return __builtin_convertvector(vload<vfh>(p), vd); }

// ---------------------------------------------------------------------------------------------
// max, NaN / +inf detection of a range
// ---------------------------------------------------------------------------------------------
template <class T>
void range_max(const T* p, int64_t n, double& mx, bool& nan) {
  typedef typename VecOf<T>::type V;
  typedef typename VecOf<T>::mask M;
  constexpr int L = VecOf<T>::n;
  const T ninf = -std::numeric_limits<T>::infinity();
  V m0 = V{} + ninf, m1 = m0;
  M bad = M{};
  int64_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    V a = vload<V>(p + i), b = vload<V>(p + i + L);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
    bad |= (M)(a != a) | (M)(b != b);
  }
  T m = ninf;
  bool nn = false;
  for (int k = 0; k < L; ++k) {
    m = m0[k] > m ? m0[k] : m;
    m = m1[k] > m ? m1[k] : m;
    nn |= bad[k] != 0;
  }
  for (; i < n; ++i) {
    const T a = p[i];
    m = a > m ? a : m;
    nn |= a != a;
  }
  mx = (double)m;
  nan = nn;
}

// w[k] = exp(lw[k] - m) in float64 for k < n (n multiple of WD or the tail handled in scalar).
template <class T>
inline void weights(const T* lw, int64_t n, double m, double* w) {
  int64_t k = 0;
  for (; k + WD <= n; k += WD) vstore(w + k, vexp_neg(load_vd(lw + k) - m));
  if (k < n) {
    double tmp[WD] = {};
    for (int64_t q = k; q < n; ++q) tmp[q - k] = (double)lw[q] - m;
    for (int64_t q = n - k; q < WD; ++q) tmp[q] = -1e300;
    vd r = vexp_neg(vload<vd>(tmp));
    for (int64_t q = k; q < n; ++q) w[q] = r[q - k];
  }
}

struct RowInfo {
  double m;
  int bits;
};

// Chunked max / flags of every population: rows[b].m, rows[b].bits.
template <class T>
void row_infos(const T* lw, int64_t B, int64_t N, int nt, std::vector<RowInfo>& rows) {
  const int64_t nc = (N + kChunk - 1) / kChunk;
  std::vector<double> cm(B * nc);
  std::vector<char> cn(B * nc);
  parallel_ranges(B * nc, nt, B * N, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nc, k = task % nc;
      const int64_t s = k * kChunk, e = std::min(N, s + kChunk);
      bool nan;
      range_max(lw + b * N + s, e - s, cm[task], nan);
      cn[task] = nan;
    }
  });
  rows.resize(B);
  for (int64_t b = 0; b < B; ++b) {
    double m = -INFINITY;
    bool nan = false;
    for (int64_t k = 0; k < nc; ++k) {
      m = std::max(m, cm[b * nc + k]);
      nan |= cn[b * nc + k] != 0;
    }
    int bits = 0;
    if (nan) bits |= kFlagLogWeightNaN;
    if (m == INFINITY) bits |= kFlagLogWeightPosInf;
    if (m == -INFINITY && !nan) bits |= kFlagLogWeightAllZero;
    if (N == 0) bits = 0;
    rows[b] = RowInfo{m, bits};
  }
}

// ---------------------------------------------------------------------------------------------
// 1. logsumexp_stats
// ---------------------------------------------------------------------------------------------
template <class T>
void lse_impl(const LseArgs& A) {
  const T* lw = static_cast<const T*>(A.lw);
  const int64_t B = A.B, N = A.N;
  std::vector<RowInfo> info;
  row_infos(lw, B, N, A.nthreads, info);
  const int64_t nc = (N + kChunk - 1) / kChunk;
  std::vector<double> s1(B * nc), s2(B * nc);
  parallel_ranges(B * nc, A.nthreads, B * N * 4, [&](int64_t lo, int64_t hi) {
    alignas(64) double w[kSub];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nc, k = task % nc;
      if (info[b].bits) continue;
      const int64_t s = k * kChunk, e = std::min(N, s + kChunk);
      vd a1 = vd{}, a2 = vd{}, c1 = vd{}, c2 = vd{};
      double t1 = 0, t2 = 0;
      for (int64_t p = s; p < e; p += kSub) {
        const int64_t n = std::min(kSub, e - p);
        weights(lw + b * N + p, n, info[b].m, w);
        int64_t q = 0;
        for (; q + 2 * WD <= n; q += 2 * WD) {
          vd x = vload<vd>(w + q), y = vload<vd>(w + q + WD);
          a1 += x;
          a2 += x * x;
          c1 += y;
          c2 += y * y;
        }
        for (; q < n; ++q) {
          t1 += w[q];
          t2 += w[q] * w[q];
        }
      }
      a1 += c1;
      a2 += c2;
      for (int l = 0; l < WD; ++l) {
        t1 += a1[l];
        t2 += a2[l];
      }
      s1[task] = t1;
      s2[task] = t2;
    }
  });
  int bits = 0;
  for (int64_t b = 0; b < B; ++b) {
    double* o = A.out + 3 * b;
    if (info[b].bits) {
      bits |= info[b].bits;
      o[0] = o[1] = o[2] = NAN;
      continue;
    }
    double t1 = 0, t2 = 0;
    for (int64_t k = 0; k < nc; ++k) {
      t1 += s1[b * nc + k];
      t2 += s2[b * nc + k];
    }
    o[0] = info[b].m;
    o[1] = t1;
    o[2] = t2;
  }
  or_flag(A.flags, bits);
}

void logsumexp_stats(const LseArgs& A) {
  if (A.B <= 0 || A.N <= 0) return;
  if (A.dtype == kF64)
    lse_impl<double>(A);
  else
    lse_impl<float>(A);
}

// ---------------------------------------------------------------------------------------------
// 2. resample
// ---------------------------------------------------------------------------------------------
// Chain sum of a chunk in the block-of-4 order used by the scan (see scan below): returns the
// chunk's local total L, built as L = fl(L + (((w0 + w1) + w2) + w3)) block after block.
inline double chain_sum(const double* w, int64_t n, double L) {
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) L += ((w[k] + w[k + 1]) + w[k + 2]) + w[k + 3];
  if (k < n) {
    double p = w[k];
    for (int64_t q = k + 1; q < n; ++q) p += w[q];
    L += p;
  }
  return L;
}

// In place: w[k] <- local inclusive prefix fl(L_block + p_k), p_k the in-block prefix.
inline double chain_scan(double* w, int64_t n, double L) {
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const double p0 = w[k], p1 = p0 + w[k + 1], p2 = p1 + w[k + 2], p3 = p2 + w[k + 3];
    w[k] = L + p0;
    w[k + 1] = L + p1;
    w[k + 2] = L + p2;
    L += p3;
    w[k + 3] = L;
  }
  if (k < n) {
    double p = w[k];
    w[k] = L + p;
    for (int64_t q = k + 1; q < n; ++q) {
      p += w[q];
      w[q] = L + p;
    }
    L += p;
  }
  return L;
}

// Systematic count O(t) = #{j in [0, N) : fl(fl(j + u) / N) < t}, exact.
inline int64_t sys_count(double t, double u, int64_t N) {
  const double Nd = (double)N;
  double y = t * Nd - u;
  int64_t g;
  if (!(y > 0))
    g = 0;
  else if (y >= Nd)
    g = N;
  else
    g = (int64_t)std::ceil(y);
  while (g > 0 && ((double)(g - 1) + u) / Nd >= t) --g;
  while (g < N && ((double)g + u) / Nd < t) ++g;
  return g;
}

// Vector form of sys_count for WD values of t: the ceil guess, checked exactly; returns false
// if a lane's guess is off (rare: rounding near a boundary), then the caller runs sys_count.
inline bool sys_count_vec(vd t, double u, double Nd, vd& g) {
  vd y = t * Nd - u;
  y = y > 0.0 ? y : 0.0;
  y = y < Nd ? y : Nd;
  const double shifter = 6755399441055744.0;
  vd r = (y + shifter) - shifter;  // nearest
  g = r < y ? r + 1.0 : r;         // ceil
  const vd qm = ((g - 1.0) + u) / Nd;
  const vd q0 = (g + u) / Nd;
  const vi64 ok = ((g <= 0.0) | (qm < t)) & ((g >= Nd) | (q0 >= t));
#if defined(__AVX512F__)
  return _mm512_cmpeq_epi64_mask((__m512i)ok, _mm512_setzero_si512()) == 0;
#elif defined(__AVX2__)
  return _mm256_movemask_pd((__m256d)ok) == 0xF;
#else
  return _mm_movemask_pd((__m128d)ok) == 0x3;
#endif
}

// memcpy with non-temporal stores (no read-for-ownership of the destination): long row copies
// whose total output exceeds the caches. The caller issues the store fence.
typedef long long VL __attribute__((vector_size(kVecBytes)));
inline void stream_store(char* d, VL v) {  // d aligned to kVecBytes
#if defined(__AVX512F__)
  _mm512_stream_si512((__m512i*)d, (__m512i)v);
#elif defined(__AVX2__)
  _mm256_stream_si256((__m256i*)d, (__m256i)v);
#else
  _mm_stream_si128((__m128i*)d, (__m128i)v);
#endif
}
inline void stream_copy(char* d, const char* src, int64_t n) {
  int64_t head = (int64_t)((-(uintptr_t)d) & (kVecBytes - 1));
  if (head > n) head = n;
  std::memcpy(d, src, head);
  d += head;
  src += head;
  n -= head;
  int64_t k = 0;
  for (; k + 4 * kVecBytes <= n; k += 4 * kVecBytes) {
    const VL a0 = vload<VL>(src + k), a1 = vload<VL>(src + k + kVecBytes);
    const VL a2 = vload<VL>(src + k + 2 * kVecBytes), a3 = vload<VL>(src + k + 3 * kVecBytes);
    stream_store(d + k, a0);
    stream_store(d + k + kVecBytes, a1);
    stream_store(d + k + 2 * kVecBytes, a2);
    stream_store(d + k + 3 * kVecBytes, a3);
  }
  std::memcpy(d + k, src + k, n - k);
}

template <class I>
inline void copy_rows(const char* x, char* rows, const I* anc, int64_t j0, int64_t j1, int64_t rb) {
  switch (rb) {
#define FK_CASE(S)                                                                       \
  case S:                                                                                \
    for (int64_t j = j0; j < j1; ++j) std::memcpy(rows + j * S, x + (int64_t)anc[j] * S, S); \
    return;
    FK_CASE(4)
    FK_CASE(8)
    FK_CASE(12)
    FK_CASE(16)
    FK_CASE(24)
    FK_CASE(32)
    FK_CASE(48)
    FK_CASE(64)
#undef FK_CASE
    default:
      for (int64_t j = j0; j < j1; ++j) std::memcpy(rows + j * rb, x + (int64_t)anc[j] * rb, rb);
  }
}

template <class T, class I>
void resample_impl(const ResampleArgs& A) {
  const T* lw = static_cast<const T*>(A.lw);
  I* anc = static_cast<I*>(A.anc);
  const int64_t B = A.B, N = A.N;
  std::vector<RowInfo> info;
  row_infos(lw, B, N, A.nthreads, info);
  const int64_t nc = (N + kChunk - 1) / kChunk;
  // Pass 1: chunk totals in the scan's order.
  std::vector<double> csum(B * nc);
  parallel_ranges(B * nc, A.nthreads, B * N * 4, [&](int64_t lo, int64_t hi) {
    alignas(64) double w[kSub];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nc, k = task % nc;
      if (info[b].bits) continue;
      const int64_t s = k * kChunk, e = std::min(N, s + kChunk);
      double L = 0;
      for (int64_t p = s; p < e; p += kSub) {
        const int64_t n = std::min(kSub, e - p);
        weights(lw + b * N + p, n, info[b].m, w);
        L = chain_sum(w, n, L);
      }
      csum[task] = L;
    }
  });
  // Carries (exclusive), totals, and each chunk's first output index.
  std::vector<double> carry(B * nc);
  std::vector<int64_t> jstart(B * nc + 1);
  std::vector<double> total(B);
  int bits = 0;
  for (int64_t b = 0; b < B; ++b) {
    bits |= info[b].bits;
    double c = 0;
    for (int64_t k = 0; k < nc; ++k) {
      carry[b * nc + k] = c;
      c += csum[b * nc + k];
    }
    total[b] = c;
  }
  const double* pos = A.pos;
  const bool systematic = pos == nullptr;
  for (int64_t b = 0; b < B; ++b) {
    if (info[b].bits) continue;
    const double S = total[b];
    for (int64_t k = 0; k < nc; ++k) {
      const double t = carry[b * nc + k] / S;
      int64_t J;
      if (k == 0)
        J = 0;
      else if (systematic)
        J = sys_count(t, A.u[b], N);
      else
        J = std::lower_bound(pos + b * N, pos + (b + 1) * N, t) - (pos + b * N);
      if (k > 0) J = std::min(N, std::max(J, jstart[b * nc + k - 1]));  // garbage-proof: disjoint ranges
      jstart[b * nc + k] = J;
    }
  }
  // Pass 2: scan, counts, outputs (and the row gather for short rows).
  const bool gather = A.x && A.rows && A.row_bytes > 0;
  const int64_t rb = A.row_bytes;
  const bool fused = gather && rb < 2048;
  const char* xg = static_cast<const char*>(A.x);
  char* rg = static_cast<char*>(A.rows);
  parallel_ranges(B * nc, A.nthreads, B * N * 6, [&](int64_t lo, int64_t hi) {
    alignas(64) double w[kSub];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nc, k = task % nc;
      const int64_t s = k * kChunk, e = std::min(N, s + kChunk);
      I* out = anc + b * N;
      if (info[b].bits) {
        for (int64_t j = s; j < e; ++j) out[j] = (I)j;
        if (fused) copy_rows(xg + b * N * rb, rg + b * N * rb, out, s, e, rb);
        continue;
      }
      const int64_t J0 = jstart[task];
      const int64_t J1 = (k + 1 < nc) ? jstart[task + 1] : N;
      const double S = total[b], cb = carry[task];
      const T* row = lw + b * N;
      double L = 0;
      if (systematic) {
        const double u = A.u[b], Nd = (double)N;
        // O_i (offspring counts, cumulative) per element, then ancestors[O_{i-1} .. O_i) = i:
        // a 4-wide store per element (later elements overwrite the overshoot), a loop only for
        // runs longer than 4, and a final fill (rounding at the end of the row).
        alignas(64) int64_t cnt[kSub];
        int64_t prev = J0;
        for (int64_t p = s; p < e; p += kSub) {
          const int64_t n = std::min(kSub, e - p);
          weights(row + p, n, info[b].m, w);
          L = chain_scan(w, n, L);
          int64_t q = 0;
          const double two52 = 4503599627370496.0;
          for (; q + WD <= n; q += WD) {
            vd t = (cb + vload<vd>(w + q)) / S;
            vd g;
            if (!sys_count_vec(t, u, Nd, g))
              for (int l = 0; l < WD; ++l) g[l] = (double)sys_count(t[l], u, N);
            vstore(cnt + q, (vi64)(g + two52) - (vi64)(vd{} + two52));
          }
          for (; q < n; ++q) cnt[q] = sys_count((cb + w[q]) / S, u, N);
          for (q = 0; q < n; ++q) {
            const I i = (I)(p + q);
            int64_t g = cnt[q];
            g = g < prev ? prev : (g > J1 ? J1 : g);
            if (__builtin_expect(prev + 4 <= J1, 1)) {
              out[prev] = i;
              out[prev + 1] = i;
              out[prev + 2] = i;
              out[prev + 3] = i;
            } else {
              for (int64_t j = prev; j < J1; ++j) out[j] = i;
            }
            if (__builtin_expect(g - prev > 4, 0))
              for (int64_t j = prev + 4; j < g; ++j) out[j] = i;
            prev = g;
          }
        }
        const I last = (I)(k + 1 < nc ? e - 1 : N - 1);
        for (int64_t j = prev; j < J1; ++j) out[j] = last;
      } else {
        const double* pr = pos + b * N;
        int64_t j = J0;
        for (int64_t p = s; p < e; p += kSub) {
          const int64_t n = std::min(kSub, e - p);
          weights(row + p, n, info[b].m, w);
          L = chain_scan(w, n, L);
          for (int64_t q = 0; q < n; ++q) {
            const double t = (cb + w[q]) / S;
            while (j < J1 && pr[j] < t) out[j++] = (I)(p + q);
          }
        }
        const I last = (I)(e - 1 < N - 1 && k + 1 < nc ? e - 1 : N - 1);
        for (; j < J1; ++j) out[j] = last;
      }
      // Fused gather of this chunk's output rows while its ancestors are hot (short rows).
      if (fused) copy_rows(xg + b * N * rb, rg + b * N * rb, out, J0, J1, rb);
    }
  });
  or_flag(A.flags, bits);
  if (gather && !fused) {  // long rows: a separate pass split over rows, streaming memcpy
    const bool stream = B * N * rb >= (int64_t)(16 << 20);
    const char* x = xg;
    char* rows = rg;
    parallel_ranges(B * N, A.nthreads, B * N * rb / 8, [&](int64_t lo, int64_t hi) {
      while (lo < hi) {
        const int64_t b = lo / N;
        const int64_t end = std::min(hi, (b + 1) * N);
        if (stream) {
          const char* xb = x + b * N * rb;
          char* rw = rows + b * N * rb;
          for (int64_t j = lo - b * N; j < end - b * N; ++j)
            stream_copy(rw + j * rb, xb + (int64_t)anc[b * N + j] * rb, rb);
        } else {
          copy_rows(x + b * N * rb, rows + b * N * rb, anc + b * N, lo - b * N, end - b * N, rb);
        }
        lo = end;
      }
      if (stream) _mm_sfence();
    });
  }
}

void resample(const ResampleArgs& A) {
  if (A.B <= 0 || A.N <= 0) return;
  if (A.dtype == kF64) {
    if (A.anc64)
      resample_impl<double, int64_t>(A);
    else
      resample_impl<double, int32_t>(A);
  } else {
    if (A.anc64)
      resample_impl<float, int64_t>(A);
    else
      resample_impl<float, int32_t>(A);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. gaussian_potential
// ---------------------------------------------------------------------------------------------
constexpr int64_t kShortM = 64;
constexpr int64_t kMaxRows = 256;

template <class T>
inline T precision_of(T v) {
  return std::fabs(v) == std::numeric_limits<T>::infinity() ? T(0) : T(0.5) / v;
}

// Long rows (m >= kShortM). The coordinates are cut into column chunks of kCols (fixed, so the
// split never depends on the thread count or the row tiling). For one (population, chunk) the
// precisions 0.5 / v are computed once into a per-thread buffer (reused while consecutive tiles
// share them); rows then go 4 at a time through one pass over the chunk (quad4, below: register
// accumulators, a fixed summation order per row). Rows of at most kCols coordinates are one
// chunk; longer rows (images) get one partial sum per chunk, combined in chunk order in float64.
// (The previous layout kept 4 accumulators per row of a 256-row tile in memory, 32 KiB of L1
// churned alongside the stream, and re-read t, a, v once per 4-row tile on image rows: 49-54% of
// the copy bandwidth.)
constexpr int64_t kCols = 16384;
constexpr int64_t kLongTileRows = 16;  // rows per work item when rows are split into chunks

template <class T>
struct LongQuad {
  std::unique_ptr<T[]> pr;
  const T* key = nullptr;
  int64_t key_c0 = -1;
  explicit LongQuad(int64_t m) : pr(new T[std::min(m, kCols)]) {}
  // precisions of v[c0 : c0 + n], n <= min(m, kCols)
  const T* prepare(const T* v, int64_t c0, int64_t n) {
    if (v != key || c0 != key_c0) {
      for (int64_t i = 0; i < n; ++i) pr[i] = precision_of(v[c0 + i]);
      key = v;
      key_c0 = c0;
    }
    return pr.get();
  }
};

// Q of 4 rows over n coordinates (precisions pr): the coefficient vectors are loaded once for
// the 4 rows, and each row has 2 accumulators (8 independent chains: one accumulator per row was
// latency bound at 11.7 GB/s on one core on d = 100 rows, where a plain read runs at 17). Each
// row sums its lanes of (s0 + s1) in order, then its scalar tail: the same order whichever rows
// are grouped (a tile's last rows repeat a row pointer).
template <class T>
inline void quad4(const T* const xr[4], const T* __restrict t, const T* __restrict a, const T* __restrict pr,
                  int64_t n, double q[4]) {
  typedef typename VecOf<T>::type V;
  constexpr int L = VecOf<T>::n;
  // named accumulators: arrays of vectors initialised with = {} compiled to two `rep stos` on
  // the stack per call, ~40% of the time on d = 100 rows
  const T *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3];
  const V z = V{} * T(0);
  V u0 = z, u1 = z, u2 = z, u3 = z, w0 = z, w1 = z, w2 = z, w3 = z;
  int64_t i = 0;
#define FK_ACC(S, X, TV, AV, PV, OFF)                 \
  {                                                   \
    const V d_ = TV - AV * vload<V>(X + i + OFF);     \
    S += d_ * d_ * PV;                                \
  }
  for (; i + 2 * L <= n; i += 2 * L) {
    const V t0 = vload<V>(t + i), a0 = vload<V>(a + i), p0 = vload<V>(pr + i);
    const V t1 = vload<V>(t + i + L), a1 = vload<V>(a + i + L), p1 = vload<V>(pr + i + L);
    FK_ACC(u0, x0, t0, a0, p0, 0) FK_ACC(w0, x0, t1, a1, p1, L)
    FK_ACC(u1, x1, t0, a0, p0, 0) FK_ACC(w1, x1, t1, a1, p1, L)
    FK_ACC(u2, x2, t0, a0, p0, 0) FK_ACC(w2, x2, t1, a1, p1, L)
    FK_ACC(u3, x3, t0, a0, p0, 0) FK_ACC(w3, x3, t1, a1, p1, L)
  }
  if (i + L <= n) {
    const V t0 = vload<V>(t + i), a0 = vload<V>(a + i), p0 = vload<V>(pr + i);
    FK_ACC(u0, x0, t0, a0, p0, 0) FK_ACC(u1, x1, t0, a0, p0, 0)
    FK_ACC(u2, x2, t0, a0, p0, 0) FK_ACC(u3, x3, t0, a0, p0, 0)
    i += L;
  }
#undef FK_ACC
  const V v[4] = {u0 + w0, u1 + w1, u2 + w2, u3 + w3};
  T s[4] = {0, 0, 0, 0};
  for (int l = 0; l < L; ++l)
    for (int r = 0; r < 4; ++r) s[r] += v[r][l];
  for (int64_t k = i; k < n; ++k) {
    const T tk = t[k], ak = a[k], pk = pr[k];
    for (int r = 0; r < 4; ++r) {
      const T d = tk - ak * xr[r][k];
      s[r] += d * d * pk;
    }
  }
  for (int r = 0; r < 4; ++r) q[r] = (double)s[r];
}

// Q over coordinates [c0, c0 + n) (n <= kCols) of nrows rows starting at row pointer x (stride ld)
template <class T>
void quad_long(LongQuad<T>& lq, const T* x, int64_t ld, int64_t c0, int64_t n, const T* t, const T* a,
               const T* v, int64_t nrows, double* q) {
  const T* pr = lq.prepare(v, c0, n);
  for (int64_t r = 0; r < nrows; r += 4) {
    const T* xr[4];
    for (int k = 0; k < 4; ++k) xr[k] = x + std::min<int64_t>(r + k, nrows - 1) * ld + c0;
    double qq[4];
    quad4(xr, t + c0, a + c0, pr, n, qq);
    for (int k = 0; k < 4 && r + k < nrows; ++k) q[r + k] = qq[k];
  }
}

// Short rows: pattern arrays (t, a, prec repeated R times) and a flat vectorised loop.
template <class T>
struct ShortQuad {
  int64_t R = 0, m = 0;
  int64_t built = -1;
  alignas(64) T tp[kTile], ap[kTile], pp[kTile], term[kTile], xb[kTile];
  void build(int64_t b, const T* t, const T* a, const T* v) {
    if (built == b) return;
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < m; ++i) {
        tp[r * m + i] = t[i];
        ap[r * m + i] = a[i];
        pp[r * m + i] = precision_of(v[i]);
      }
    built = b;
  }
  template <int M>
  void rows_fixed(const T* __restrict x, int64_t nrows, double* __restrict q) {
    T tt[M], aa[M], pv[M];
    for (int i = 0; i < M; ++i) {
      tt[i] = tp[i];
      aa[i] = ap[i];
      pv[i] = pp[i];
    }
#pragma omp simd
    for (int64_t r = 0; r < nrows; ++r) {
      T s = 0;
      for (int i = 0; i < M; ++i) {
        const T d = tt[i] - aa[i] * x[r * M + i];
        s += d * d * pv[i];
      }
      q[r] = (double)s;
    }
  }
  // m == 4 on contiguous rows (the (N, 4) benchmark shape): L / 4 rows per vector, L rows per
  // block of 4 vectors, row sums by two in-register pair additions and three shuffles that gather
  // lane 4j of each vector, instead of the strided loads of rows_fixed<4> (about 11 cycles a row
  // there, compute-bound at 40-50% of the copy bandwidth). Every row, tail rows included, sums
  // its terms as (e0 + e1) + (e2 + e3).
  // emit(r, o): the sums of rows r .. r + L - 1 as one vector; emit1(r, s): one tail row's sum
  template <class Emit, class Emit1>
  void rows4(const T* __restrict x, int64_t nrows, Emit emit, Emit1 emit1) {
    typedef typename VecOf<T>::type V;
    typedef typename VecOf<T>::mask I;
    constexpr int L = VecOf<T>::n;
    static_assert(L % 4 == 0, "rows4 needs 4 | lanes");
    V tv, av, pv;
    I sw1, sw2, pick, fin;
    for (int l = 0; l < L; ++l) {
      tv[l] = tp[l & 3];
      av[l] = ap[l & 3];
      pv[l] = pp[l & 3];
      sw1[l] = l ^ 1;
      sw2[l] = l ^ 2;
      const int j = l % (L / 2);  // lane 4j of the first vector, then of the second
      pick[l] = j < L / 4 ? 4 * j : L + 4 * (j - L / 4);
      fin[l] = l < L / 2 ? l : L + (l - L / 2);
    }
    int64_t r = 0;
    for (; r + L <= nrows; r += L) {
      V s[4];
      for (int k = 0; k < 4; ++k) {
        const V d = tv - av * vload<V>(x + r * 4 + k * L);
        V e = d * d * pv;
        e = e + __builtin_shuffle(e, sw1);
        s[k] = e + __builtin_shuffle(e, sw2);
      }
      emit(r, __builtin_shuffle(__builtin_shuffle(s[0], s[1], pick), __builtin_shuffle(s[2], s[3], pick), fin));
    }
    for (; r < nrows; ++r) {
      T e[4];
      for (int i = 0; i < 4; ++i) {
        const T d = tp[i] - ap[i] * x[r * 4 + i];
        e[i] = d * d * pp[i];
      }
      emit1(r, (e[0] + e[1]) + (e[2] + e[3]));
    }
  }
  void rows4(const T* __restrict x, int64_t nrows, double* __restrict q) {
    rows4(
        x, nrows,
        [q](int64_t r, const typename VecOf<T>::type& o) {
          for (int l = 0; l < VecOf<T>::n; ++l) q[r + l] = (double)o[l];
        },
        [q](int64_t r, T v) { q[r] = (double)v; });
  }
  void rows(const T* x, int64_t ld, int64_t nrows, double* q) {
    if (ld == m) {
      switch (m) {
        case 1: return rows_fixed<1>(x, nrows, q);
        case 2: return rows_fixed<2>(x, nrows, q);
        case 3: return rows_fixed<3>(x, nrows, q);
        case 4:
          if constexpr (VecOf<T>::n % 4 == 0) return rows4(x, nrows, q);
          return rows_fixed<4>(x, nrows, q);
        case 6: return rows_fixed<6>(x, nrows, q);
        case 8: return rows_fixed<8>(x, nrows, q);
        default: break;
      }
    }
    const T* xf = x;
    const int64_t n = nrows * m;
    if (ld != m) {
      for (int64_t r = 0; r < nrows; ++r)
        for (int64_t i = 0; i < m; ++i) xb[r * m + i] = x[r * ld + i];
      xf = xb;
    }
    for (int64_t f = 0; f < n; ++f) {
      const T d = tp[f] - ap[f] * xf[f];
      term[f] = d * d * pp[f];
    }
    for (int64_t r = 0; r < nrows; ++r) {
      T s = 0;
      for (int64_t i = 0; i < m; ++i) s += term[r * m + i];
      q[r] = (double)s;
    }
  }
};


// One of the (at most two) quadratic forms of the potential kernel: its rows, coordinates and
// per-population (t, a, v), and how its rows are summed (short patterns, one long chunk, or
// several chunks with partial sums in a scratch of B N nch doubles).
template <class T>
struct QuadSpec {
  const T *x, *t, *a, *v;
  int64_t ld, m, tbs, abs_, vbs;
  int64_t nch;  // column chunks (1 for short rows)
  bool short_rows() const { return m > 0 && m < kShortM; }
  const T* tb(int64_t b) const { return t + b * tbs; }
  const T* ab(int64_t b) const { return a + b * abs_; }
  const T* vb(int64_t b) const { return v + b * vbs; }
};

template <class T>
QuadSpec<T> quad_spec(const void* x, int64_t ld, int64_t m, const void* t, const void* a, const void* v,
                      int64_t tbs, int64_t abs_, int64_t vbs) {
  QuadSpec<T> q{static_cast<const T*>(x), static_cast<const T*>(t), static_cast<const T*>(a),
                static_cast<const T*>(v), ld, m, tbs, abs_, vbs, 1};
  if (m >= kShortM) q.nch = (m + kCols - 1) / kCols;
  return q;
}

template <class T, class O>
void potential_impl(const PotentialArgs& A) {
  const int64_t B = A.B, N = A.N;
  const bool two = A.x2 != nullptr;
  QuadSpec<T> Q[2] = {quad_spec<T>(A.x, A.ldx, A.m, A.t, A.a, A.v, A.tbs, A.abs_, A.vbs),
                      two ? quad_spec<T>(A.x2, A.ld2, A.m2, A.t2, A.a2, A.v2, A.t2bs, A.a2bs, A.v2bs)
                          : QuadSpec<T>{}};
  const int nq = two ? 2 : 1;
  // Rows per tile: the short-row patterns need R*m <= kTile; long rows take up to kMaxRows.
  // (Tiles only group rows: every row's sum is computed in the same order whatever R is.)
  auto rows_for = [](int64_t mm) -> int64_t {
    mm = std::max<int64_t>(mm, 1);
    if (mm < kShortM) return std::min<int64_t>(kMaxRows, std::max<int64_t>(1, kTile / mm));
    return std::min<int64_t>(kMaxRows, std::max<int64_t>(4, 65536 / mm));
  };
  int64_t R = rows_for(Q[0].m);
  if (two) R = std::min(R, rows_for(Q[1].m));
  const int64_t ntile = (N + R - 1) / R;
  const int64_t work = B * N * (A.m + (two ? A.m2 : 0));
  const bool plain4 = !two && !A.cst && !A.accumulate && A.m == 4 && A.ldx == 4;

  // Phase 1, only for rows longer than kCols: partial sums per (row, chunk), items ordered
  // population-major, then chunk, then tiles of kLongTileRows rows (consecutive items share the
  // chunk's precisions).
  std::vector<double> partial[2];
  const int64_t ltile = (N + kLongTileRows - 1) / kLongTileRows;
  for (int k = 0; k < nq; ++k) {
    const QuadSpec<T>& q = Q[k];
    if (q.nch <= 1) continue;
    partial[k].resize((size_t)(B * N * q.nch));
    double* P = partial[k].data();
    parallel_ranges(B * q.nch * ltile, A.nthreads, B * N * q.m, [&](int64_t lo, int64_t hi) {
      LongQuad<T> lq(q.m);
      double buf[kLongTileRows];
      for (int64_t item = lo; item < hi; ++item) {
        const int64_t b = item / (q.nch * ltile), c = (item / ltile) % q.nch, j0 = (item % ltile) * kLongTileRows;
        const int64_t nr = std::min(kLongTileRows, N - j0), c0 = c * kCols;
        quad_long(lq, q.x + (b * N + j0) * q.ld, q.ld, c0, std::min(kCols, q.m - c0), q.tb(b), q.ab(b), q.vb(b), nr,
                  buf);
        for (int64_t r = 0; r < nr; ++r) P[(b * N + j0 + r) * q.nch + c] = buf[r];
      }
    });
  }

  // Phase 2: per tile of R rows, each quadratic form (directly, or from its partial sums), then
  // -Q1 + Q2 + const (+ existing log-weights), the output and the NaN flag.
  O* out = static_cast<O*>(A.out);
  parallel_ranges(B * ntile, A.nthreads, work, [&](int64_t lo, int64_t hi) {
    std::unique_ptr<ShortQuad<T>> sq[2];
    std::unique_ptr<LongQuad<T>> lq[2];
    for (int k = 0; k < nq; ++k) {
      if (Q[k].short_rows()) {
        sq[k].reset(new ShortQuad<T>);
        sq[k]->R = R;
        sq[k]->m = Q[k].m;
      } else if (Q[k].m > 0 && Q[k].nch == 1) {
        lq[k].reset(new LongQuad<T>(Q[k].m));
      }
    }
    double qs[2][kMaxRows];
    bool nan = false;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / ntile, j0 = (task % ntile) * R;
      const int64_t nr = std::min(R, N - j0);
      if constexpr (std::is_same<T, O>::value && VecOf<T>::n % 4 == 0) {
        // the (N, 4) rows of one form with nothing added: -Q straight into the output (the
        // float64 round trip of the general epilogue cost as much as the sums themselves)
        if (plain4) {
          typedef typename VecOf<T>::type V;
          sq[0]->build(b, Q[0].tb(b), Q[0].ab(b), Q[0].vb(b));
          O* o = out + b * N + j0;
          typename VecOf<T>::mask bad{};
          bool bad1 = false;
          sq[0]->rows4(
              Q[0].x + (b * N + j0) * 4, nr,
              [&](int64_t r, const V& q) {
                vstore(o + r, -q);
                bad |= (q != q);
              },
              [&](int64_t r, T q) {
                o[r] = -q;
                bad1 |= q != q;
              });
          for (int l = 0; l < VecOf<T>::n; ++l) bad1 |= bad[l] != 0;
          nan |= bad1;
          continue;
        }
      }
      for (int k = 0; k < nq; ++k) {
        const QuadSpec<T>& q = Q[k];
        double* qk = qs[k];
        const T* x = q.x + (b * N + j0) * q.ld;
        if (q.m == 0) {
          for (int64_t r = 0; r < nr; ++r) qk[r] = 0;
        } else if (sq[k]) {
          sq[k]->build(b, q.tb(b), q.ab(b), q.vb(b));
          sq[k]->rows(x, q.ld, nr, qk);
        } else if (lq[k]) {
          quad_long(*lq[k], x, q.ld, 0, q.m, q.tb(b), q.ab(b), q.vb(b), nr, qk);
        } else {
          const double* P = partial[k].data() + (b * N + j0) * q.nch;
          for (int64_t r = 0; r < nr; ++r) {
            double s = 0;
            for (int64_t c = 0; c < q.nch; ++c) s += P[r * q.nch + c];
            qk[r] = s;
          }
        }
      }
      double* q1 = qs[0];
      O* o = out + b * N + j0;
      const double c = A.cst ? A.cst[b] : 0.0;
      for (int64_t r = 0; r < nr; ++r) q1[r] = -q1[r];
      if (two)
        for (int64_t r = 0; r < nr; ++r) q1[r] += qs[1][r];
      if (A.cst)
        for (int64_t r = 0; r < nr; ++r) q1[r] += c;
      if (A.accumulate)
        for (int64_t r = 0; r < nr; ++r) q1[r] += (double)o[r];
      int isnan = 0;
      for (int64_t r = 0; r < nr; ++r) {
        const O val = (O)q1[r];
        o[r] = val;
        isnan |= val != val;
      }
      nan |= isnan != 0;
    }
    if (nan) or_flag(A.flags, kFlagPotentialNaN);
  });
}

void gaussian_potential(const PotentialArgs& A) {
  if (A.B <= 0 || A.N <= 0) return;
  if (A.dtype == kF64) {
    if (A.out_dtype == kF64)
      potential_impl<double, double>(A);
    else
      potential_impl<double, float>(A);
  } else {
    if (A.out_dtype == kF64)
      potential_impl<float, double>(A);
    else
      potential_impl<float, float>(A);
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise tiles with noise: shared layout of mutation / tamed Langevin
// ---------------------------------------------------------------------------------------------
constexpr int64_t kLongD = 512;  // rows at least this long are cut into segments

struct TileGrid {
  int64_t R;       // rows per tile (short rows) or 1
  int64_t seg;     // segment length (long rows) or d
  int64_t nseg;    // segments per row
  int64_t ntile;   // tiles per population
  TileGrid(int64_t N, int64_t d) {
    if (d >= kLongD) {
      R = 1;
      seg = kTile;
      nseg = (d + seg - 1) / seg;
      ntile = N * nseg;
    } else {
      R = std::max<int64_t>(1, kTile / std::max<int64_t>(d, 1));
      seg = d;
      nseg = 1;
      ntile = (N + R - 1) / R;
    }
  }
};

template <class T>
inline void copy_small(T* __restrict dst, const T* __restrict src, int64_t d) {
  switch (d) {
    case 1: std::memcpy(dst, src, 1 * sizeof(T)); return;
    case 2: std::memcpy(dst, src, 2 * sizeof(T)); return;
    case 3: std::memcpy(dst, src, 3 * sizeof(T)); return;
    case 4: std::memcpy(dst, src, 4 * sizeof(T)); return;
    case 6: std::memcpy(dst, src, 6 * sizeof(T)); return;
    case 8: std::memcpy(dst, src, 8 * sizeof(T)); return;
    default:
      for (int64_t i = 0; i < d; ++i) dst[i] = src[i];
  }
}

// coef[r*D + i] = gamma / (1 + gamma * |g_r|) for nr rows of length D; returns false if a norm
// is not finite.
template <int D, class T>
inline bool row_coefs_fixed(const T* __restrict g, int64_t nr, double gamma, T* __restrict coef) {
  int bad = 0;
  for (int64_t r = 0; r < nr; ++r) {
    double s = 0;
    for (int i = 0; i < D; ++i) s += (double)g[r * D + i] * (double)g[r * D + i];
    const double nrm = std::sqrt(s);
    bad |= !(nrm <= 1.7976931348623157e308);
    const T cf = (T)(gamma / (1.0 + gamma * nrm));
    for (int i = 0; i < D; ++i) coef[r * D + i] = cf;
  }
  return bad == 0;
}

// D == 4 (the (N, 4) benchmark shape) with 4 | WD: WD / 4 rows per float64 vector, WD rows per
// block of 4 vectors; the squares summed in float64 as (g0^2 + g1^2) + (g2^2 + g3^2) by two
// in-register pair additions, the row sums gathered by three shuffles, then sqrt and division on
// WD rows at once (row_coefs_fixed<4> did one scalar sqrt and division per row). Tail rows use the
// same order. float64 sums keep |g| up to ~1e154 finite, as the scalar path.
template <class T>
inline bool row_coefs4(const T* __restrict g, int64_t nr, double gamma, T* __restrict coef) {
  constexpr int L = WD;
  static_assert(sizeof(T) > 0 && L % 4 == 0, "row_coefs4 needs 4 | WD");
  vi64 sw1, sw2, pick, fin;
  for (int l = 0; l < L; ++l) {
    sw1[l] = l ^ 1;
    sw2[l] = l ^ 2;
    const int j = l % (L / 2);
    pick[l] = j < L / 4 ? 4 * j : L + 4 * (j - L / 4);
    fin[l] = l < L / 2 ? l : L + (l - L / 2);
  }
  const vd one = vd{} + 1.0, gam = vd{} + gamma, big = vd{} + 1.7976931348623157e308;
  vi64 bad = vi64{};
  int64_t r = 0;
  for (; r + L <= nr; r += L) {
    vd s[4];
    for (int k = 0; k < 4; ++k) {
      const vd x = load_vd(g + r * 4 + k * L);
      vd e = x * x;
      e = e + __builtin_shuffle(e, sw1);
      s[k] = e + __builtin_shuffle(e, sw2);
    }
    const vd sum = __builtin_shuffle(__builtin_shuffle(s[0], s[1], pick), __builtin_shuffle(s[2], s[3], pick), fin);
    vd nrm;
    for (int l = 0; l < L; ++l) nrm[l] = std::sqrt(sum[l]);
    bad |= ~(nrm <= big);  // NaN or inf
    const vd cf = gam / (one + gam * nrm);
    for (int l = 0; l < L; ++l) {
      const T c = (T)cf[l];
      T* dst = coef + (r + l) * 4;
      dst[0] = dst[1] = dst[2] = dst[3] = c;
    }
  }
  int any = 0;
  for (int l = 0; l < L; ++l) any |= bad[l] != 0;
  for (; r < nr; ++r) {
    double e[4];
    for (int i = 0; i < 4; ++i) e[i] = (double)g[r * 4 + i] * (double)g[r * 4 + i];
    const double nrm = std::sqrt((e[0] + e[1]) + (e[2] + e[3]));
    any |= !(nrm <= 1.7976931348623157e308);
    const T c = (T)(gamma / (1.0 + gamma * nrm));
    for (int i = 0; i < 4; ++i) coef[r * 4 + i] = c;
  }
  return any == 0;
}

template <class T>
inline bool row_coefs(const T* g, int64_t nr, int64_t d, double gamma, T* coef) {
  switch (d) {
    case 1: return row_coefs_fixed<1>(g, nr, gamma, coef);
    case 2: return row_coefs_fixed<2>(g, nr, gamma, coef);
    case 3: return row_coefs_fixed<3>(g, nr, gamma, coef);
    case 4:
      if constexpr (WD % 4 == 0) return row_coefs4(g, nr, gamma, coef);
      return row_coefs_fixed<4>(g, nr, gamma, coef);
    case 8: return row_coefs_fixed<8>(g, nr, gamma, coef);
    default: break;
  }
  bool ok = true;
  for (int64_t r = 0; r < nr; ++r) {
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += (double)g[r * d + i] * (double)g[r * d + i];
    const double nrm = std::sqrt(s);
    if (!std::isfinite(nrm)) ok = false;
    const T cf = (T)(gamma / (1.0 + gamma * nrm));
    for (int64_t i = 0; i < d; ++i) coef[r * d + i] = cf;
  }
  return ok;
}

template <class T>
inline void widen(const float* z, int64_t n, T* dst) {
  for (int64_t f = 0; f < n; ++f) dst[f] = (T)z[f];
}

// ---------------------------------------------------------------------------------------------
// 4. mutation
// ---------------------------------------------------------------------------------------------
template <class T, class I>
void mutation_impl(const MutationArgs& A) {
  const int64_t B = A.B, N = A.N, d = A.d, Np = A.Np;
  const TileGrid G(N, d);
  const T* M = static_cast<const T*>(A.m);
  const I* anc = static_cast<const I*>(A.anc);
  T* out = static_cast<T*>(A.out);
  const T nanv = std::numeric_limits<T>::quiet_NaN();
  parallel_ranges(B * G.ntile, A.nthreads, B * N * d * 8, [&](int64_t lo, int64_t hi) {
    struct Buf {
      alignas(64) float zs[kTile + 4 * W + 8];
      alignas(64) T Kp[kTile], cp[kTile], sp[kTile], mb[kTile];
    };
    std::unique_ptr<Buf> buf(new Buf);
    int64_t built = -1;
    bool bad = false;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / G.ntile, tt = task % G.ntile;
      const T* K = static_cast<const T*>(A.K) + b * A.Kbs;
      const T* c = static_cast<const T*>(A.c) + b * A.cbs;
      const T* s = static_cast<const T*>(A.s) + b * A.sbs;
      int64_t j0, i0, n;
      const T *Kq, *cq, *sq, *src;
      if (d >= kLongD) {
        j0 = tt / G.nseg;
        i0 = (tt % G.nseg) * G.seg;
        n = std::min(G.seg, d - i0);
        Kq = K + i0;
        cq = c + i0;
        sq = s + i0;
        int64_t a = j0;
        if (anc) a = (int64_t)anc[b * N + j0];
        if (a < 0 || a >= Np) {
          bad = true;
          T* o = out + (b * N + j0) * d + i0;
          for (int64_t f = 0; f < n; ++f) o[f] = nanv;
          continue;
        }
        src = M + (b * Np + a) * d + i0;
      } else {
        j0 = tt * G.R;
        i0 = 0;
        const int64_t nr = std::min(G.R, N - j0);
        n = nr * d;
        if (built != b) {
          for (int64_t r = 0; r < G.R; ++r)
            for (int64_t i = 0; i < d; ++i) {
              buf->Kp[r * d + i] = K[i];
              buf->cp[r * d + i] = c[i];
              buf->sp[r * d + i] = s[i];
            }
          built = b;
        }
        Kq = buf->Kp;
        cq = buf->cp;
        sq = buf->sp;
        if (anc || N > Np) {
          for (int64_t r = 0; r < nr; ++r) {
            const int64_t a = anc ? (int64_t)anc[b * N + j0 + r] : j0 + r;
            if (a < 0 || a >= Np) {
              bad = true;
              for (int64_t i = 0; i < d; ++i) buf->mb[r * d + i] = nanv;
            } else {
              copy_small(buf->mb + r * d, M + (b * Np + a) * d, d);
            }
          }
          src = buf->mb;
        } else {
          src = M + (b * Np + j0) * d;
        }
      }
      const uint64_t e0 = A.offset + (uint64_t)((b * N + j0) * d + i0);
      const float* z = normals_tile(A.seed, e0, n, buf->zs);
      T* o = out + (b * N + j0) * d + i0;
      for (int64_t f = 0; f < n; ++f) o[f] = Kq[f] * cq[f] + (T(1) - Kq[f]) * src[f] + sq[f] * (T)z[f];
      // (an invalid ancestor row: src is NaN, and (1 - K) * NaN keeps it NaN)
    }
    if (bad) or_flag(A.flags, kFlagAncestorRange);
  });
}

void mutation(const MutationArgs& A) {
  if (A.B <= 0 || A.N <= 0 || A.d <= 0) return;
  if (A.dtype == kF64) {
    if (A.anc64)
      mutation_impl<double, int64_t>(A);
    else
      mutation_impl<double, int32_t>(A);
  } else {
    if (A.anc64)
      mutation_impl<float, int64_t>(A);
    else
      mutation_impl<float, int32_t>(A);
  }
}

// ---------------------------------------------------------------------------------------------
// 5. tamed_langevin
// ---------------------------------------------------------------------------------------------
template <class T>
double sum_squares(const T* g, int64_t n) {
  typedef typename VecOf<T>::type V;
  constexpr int L = VecOf<T>::n;
  V a0 = V{}, a1 = V{}, a2 = V{}, a3 = V{};
  int64_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    V x0 = vload<V>(g + i), x1 = vload<V>(g + i + L), x2 = vload<V>(g + i + 2 * L), x3 = vload<V>(g + i + 3 * L);
    a0 += x0 * x0;
    a1 += x1 * x1;
    a2 += x2 * x2;
    a3 += x3 * x3;
  }
  for (; i + L <= n; i += L) {
    V x0 = vload<V>(g + i);
    a0 += x0 * x0;
  }
  a0 = (a0 + a1) + (a2 + a3);
  double s = 0;
  for (; i < n; ++i) s += (double)g[i] * (double)g[i];
  for (int l = 0; l < L; ++l) s += (double)a0[l];
  return s;
}

template <class T>
void langevin_impl(const LangevinArgs& A) {
  const int64_t B = A.B, N = A.N, d = A.d;
  const TileGrid G(N, d);
  const T* X = static_cast<const T*>(A.x);
  const T* Gr = static_cast<const T*>(A.g);
  T* out = static_cast<T*>(A.out);
  const double gamma = A.gamma;
  const T sq = (T)std::sqrt(2.0 * gamma);
  parallel_ranges(B * G.ntile, A.nthreads, B * N * d * 8, [&](int64_t lo, int64_t hi) {
    struct Buf {
      alignas(64) float zs[kTile + 4 * W + 8];
      alignas(64) T coef[kTile];
    };
    std::unique_ptr<Buf> buf(new Buf);
    bool bad = false;
    int64_t cached_row = -1;
    T cached_coef = 0;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / G.ntile, tt = task % G.ntile;
      int64_t j0, i0, n;
      if (d >= kLongD) {
        j0 = tt / G.nseg;
        i0 = (tt % G.nseg) * G.seg;
        n = std::min(G.seg, d - i0);
        const int64_t rowid = b * N + j0;
        if (rowid != cached_row) {
          const double nrm = std::sqrt(sum_squares(Gr + rowid * d, d));
          if (!std::isfinite(nrm)) bad = true;
          cached_coef = (T)(gamma / (1.0 + gamma * nrm));
          cached_row = rowid;
        }
        for (int64_t f = 0; f < n; ++f) buf->coef[f] = cached_coef;
      } else {
        j0 = tt * G.R;
        i0 = 0;
        const int64_t nr = std::min(G.R, N - j0);
        n = nr * d;
        if (!row_coefs(Gr + (b * N + j0) * d, nr, d, gamma, buf->coef)) bad = true;
      }
      const int64_t base = (b * N + j0) * d + i0;
      const float* z = normals_tile(A.seed, A.offset + (uint64_t)base, n, buf->zs);
      const T* x = X + base;
      const T* g = Gr + base;
      T* o = out + base;
      const T* cf = buf->coef;
      for (int64_t f = 0; f < n; ++f) o[f] = x[f] + cf[f] * g[f] + sq * (T)z[f];
    }
    if (bad) or_flag(A.flags, kFlagGradientNonFinite);
  });
}

void tamed_langevin(const LangevinArgs& A) {
  if (A.B <= 0 || A.N <= 0 || A.d <= 0) return;
  if (A.dtype == kF64)
    langevin_impl<double>(A);
  else
    langevin_impl<float>(A);
}

// ---------------------------------------------------------------------------------------------
// 8. variational_update (DCPS's normalised-gradient step of the Gaussian fit, then a fresh draw)
// ---------------------------------------------------------------------------------------------
inline void exp_tile(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + W <= n; i += W) vstore(y + i, vexp_f(vload<vf>(x + i)));
  for (; i < n; ++i) y[i] = std::exp(x[i]);
}
inline void exp_tile(const double* x, double* y, int64_t n) {
  int64_t i = 0;
  for (; i + WD <= n; i += WD) vstore(y + i, vexp_d(vload<vd>(x + i)));
  for (; i < n; ++i) y[i] = std::exp(x[i]);
}

// The two gradient directions on n consecutive elements (both times var > 0, see the header):
// gm = (mu - m) - var g, gl = std^2 - var - var g std xi with std = exp(log_std).
template <class T>
inline void fit_directions(const T* __restrict mu, const T* __restrict ls, const T* __restrict m,
                           const T* __restrict g, const T* __restrict xi, int64_t n, T var, T* __restrict sd,
                           T* __restrict gm, T* __restrict gl) {
  exp_tile(ls, sd, n);
  for (int64_t f = 0; f < n; ++f) {
    gm[f] = (mu[f] - m[f]) - var * g[f];
    gl[f] = sd[f] * (sd[f] - var * g[f] * xi[f]) - var;
  }
}

// Step coefficients lr / ||direction|| (0 for a zero direction); NaN and the flag when a norm
// is not finite.
inline double step_coef(double sumsq, double lr, bool& bad) {
  const double nrm = std::sqrt(sumsq);
  if (!(nrm <= 1.7976931348623157e308)) {
    bad = true;
    return std::numeric_limits<double>::quiet_NaN();
  }
  return nrm > 0 ? lr / nrm : 0.0;
}

template <class T>
void variational_impl(const VariationalArgs& A) {
  const int64_t rows = A.rows, d = A.d;
  const TileGrid G(rows, d);
  T* MU = static_cast<T*>(A.mu);
  T* LS = static_cast<T*>(A.log_std);
  T* XI = static_cast<T*>(A.xi);
  T* S = static_cast<T*>(A.sample);
  const T* M = static_cast<const T*>(A.m);
  const T* Gr = static_cast<const T*>(A.g);
  const T var = (T)A.var;
  struct Buf {
    alignas(64) float zs[kTile + 4 * W + 8];
    alignas(64) T sd[kTile], gm[kTile], gl[kTile], cm[kTile], cl[kTile];
  };
  // Long rows: every row's two step coefficients first (their segments are then updated in
  // place by whichever thread takes them), O(rows) doubles of scratch.
  std::vector<double> coefs;
  bool bad_rows = false;
  if (d >= kLongD) {
    coefs.resize(2 * rows);
    std::atomic<bool> bad_any{false};
    parallel_ranges(rows, A.nthreads, rows * d * 8, [&](int64_t lo, int64_t hi) {
      std::unique_ptr<Buf> buf(new Buf);
      bool bad = false;
      for (int64_t r = lo; r < hi; ++r) {
        double sm = 0, sl = 0;
        for (int64_t c = 0; c < d; c += kTile) {
          const int64_t len = std::min(kTile, d - c), o = r * d + c;
          fit_directions(MU + o, LS + o, M + o, Gr + o, XI + o, len, var, buf->sd, buf->gm, buf->gl);
          sm += sum_squares(buf->gm, len);
          sl += sum_squares(buf->gl, len);
        }
        coefs[2 * r] = step_coef(sm, A.lr_mu, bad);
        coefs[2 * r + 1] = step_coef(sl, A.lr_l, bad);
      }
      if (bad) bad_any = true;
    });
    bad_rows = bad_any;
  }
  parallel_ranges(G.ntile, A.nthreads, rows * d * 16, [&](int64_t lo, int64_t hi) {
    std::unique_ptr<Buf> buf(new Buf);
    bool bad = false;
    for (int64_t task = lo; task < hi; ++task) {
      int64_t base, n;
      if (d >= kLongD) {
        const int64_t r = task / G.nseg, i0 = (task % G.nseg) * G.seg;
        n = std::min(G.seg, d - i0);
        base = r * d + i0;
        fit_directions(MU + base, LS + base, M + base, Gr + base, XI + base, n, var, buf->sd, buf->gm, buf->gl);
        const T a = (T)coefs[2 * r], b = (T)coefs[2 * r + 1];
        for (int64_t f = 0; f < n; ++f) {
          buf->cm[f] = a;
          buf->cl[f] = b;
        }
      } else {
        const int64_t r0 = task * G.R, nr = std::min(G.R, rows - r0);
        n = nr * d;
        base = r0 * d;
        fit_directions(MU + base, LS + base, M + base, Gr + base, XI + base, n, var, buf->sd, buf->gm, buf->gl);
        for (int64_t r = 0; r < nr; ++r) {
          const T a = (T)step_coef(sum_squares(buf->gm + r * d, d), A.lr_mu, bad);
          const T b = (T)step_coef(sum_squares(buf->gl + r * d, d), A.lr_l, bad);
          for (int64_t i = 0; i < d; ++i) {
            buf->cm[r * d + i] = a;
            buf->cl[r * d + i] = b;
          }
        }
      }
      const float* z = normals_tile(A.seed, A.offset + (uint64_t)base, n, buf->zs);
      T* mu = MU + base;
      T* ls = LS + base;
      T* xi = XI + base;
      for (int64_t f = 0; f < n; ++f) {
        mu[f] -= buf->cm[f] * buf->gm[f];
        ls[f] -= buf->cl[f] * buf->gl[f];
        xi[f] = (T)z[f];
      }
      exp_tile(ls, buf->sd, n);
      T* s = S + base;
      for (int64_t f = 0; f < n; ++f) s[f] = mu[f] + buf->sd[f] * xi[f];
    }
    if (bad) or_flag(A.flags, kFlagGradientNonFinite);
  });
  if (bad_rows) or_flag(A.flags, kFlagGradientNonFinite);
}

void variational_update(const VariationalArgs& A) {
  if (A.rows <= 0 || A.d <= 0) return;
  if (A.dtype == kF64)
    variational_impl<double>(A);
  else
    variational_impl<float>(A);
}

// ---------------------------------------------------------------------------------------------
// 6. normal, 7. philox
// ---------------------------------------------------------------------------------------------
template <class T>
void normal_impl(const NormalArgs& A) {
  T* out = static_cast<T*>(A.out);
  const int64_t n = A.n;
  const int64_t ntile = (n + kTile - 1) / kTile;
  parallel_ranges(ntile, A.nthreads, n * 8, [&](int64_t lo, int64_t hi) {
    alignas(64) float zs[kTile + 4 * W + 8];
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t k0 = t * kTile, len = std::min(kTile, n - k0);
      const float* z = normals_tile(A.seed, A.offset + (uint64_t)k0, len, zs);
      if (sizeof(T) == sizeof(float))
        std::memcpy(out + k0, z, len * sizeof(float));
      else
        widen(z, len, out + k0);
    }
  });
}

void normal(const NormalArgs& A) {
  if (A.n <= 0) return;
  if (A.dtype == kF64)
    normal_impl<double>(A);
  else
    normal_impl<float>(A);
}

void philox(const PhiloxArgs& A) {
  const int64_t n = A.n;
  if (n <= 0) return;
  const int64_t ngroup = n / W;
  parallel_ranges(ngroup, A.nthreads, n * 8, [&](int64_t lo, int64_t hi) {
    for (int64_t gi = lo; gi < hi; ++gi) {
      vu w0, w1, w2, w3;
      philox_vec64(A.seed, A.counter + (uint64_t)(gi * W), w0, w1, w2, w3);
      store_interleaved4(w0, w1, w2, w3, A.out + gi * W * 4);
    }
  });
  for (int64_t k = ngroup * W; k < n; ++k) {
    const PhiloxWords w = philox4x32_10(A.seed, A.counter + (uint64_t)k);
    std::memcpy(A.out + 4 * k, w.w, 16);
  }
}

// ---------------------------------------------------------------------------------------------
// 9. mixture_mean (the closed-form denoiser of fkdiff.GaussianMixtureDenoiser)
// ---------------------------------------------------------------------------------------------
// Why compiled: on the mixture benchmark (N = 1e5 particles, d = 10, K = 25) the PyTorch sequence
// addmm + softmax + addmm spends ~0.2 us a row, three times the rest of an MCGdiff step, because
// softmax over a last dimension of 25 and GEMMs with 10 or 25 columns run far below the
// machine's rate. Here L rows at a time sit transposed in vector lanes (one row per lane), so the
// K logits, their exp and the K x D accumulation are all full-width FMAs with no (R, K) array.
// Every row is computed by the same sequence of operations whatever R, the tile it falls in or
// the thread count: results do not depend on chunking.
inline vf vexp(vf x) { return vexp_f(x); }
inline vd vexp(vd x) { return vexp_d(x); }

// The logits of components k .. k + NB - 1 for one tile (xt: the tile's D coordinates, one row
// per lane). NB independent FMA chains: eight keep two FMA units with a 4-cycle latency busy
// (four left the d = 100 rows latency-bound at half speed).
template <class V, class T, int NB>
inline void mixture_logits(const T* MU, int64_t k, int64_t D, const V* xt, T a, const T* BI, V* lg, V& mx) {
  V s[NB];
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) s[j] = V{};
  const T* m = MU + k * D;
  for (int64_t d = 0; d < D; ++d) {
    const V xv = xt[d];
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) s[j] += m[j * D + d] * xv;
  }
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) {
    const V v = a * s[j] + BI[k + j];
    lg[k + j] = v;
    mx = v > mx ? v : mx;
  }
}

// acc_{d + j} = sum_k e_k mu_{k, d + j} for j < NB (e: the tile's exponentials), NB chains.
template <class V, class T, int NB>
inline void mixture_sums(const T* MU, int64_t d, int64_t K, int64_t D, const V* e, V* acc) {
  V s[NB];
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) s[j] = V{};
  for (int64_t k = 0; k < K; ++k) {
    const V ev = e[k];
    const T* m = MU + k * D + d;
#pragma GCC unroll 8
    for (int j = 0; j < NB; ++j) s[j] += m[j] * ev;
  }
#pragma GCC unroll 8
  for (int j = 0; j < NB; ++j) acc[d + j] = s[j];
}

template <class T>
void mixture_impl(const MixtureArgs& A) {
  typedef typename VecOf<T>::type V;
  constexpr int L = VecOf<T>::n;
  const int64_t R = A.R, K = A.K, D = A.D;
  const T* X = static_cast<const T*>(A.x);
  const T* MU = static_cast<const T*>(A.means);
  const T* BI = static_cast<const T*>(A.bias);
  T* out = static_cast<T*>(A.out);
  T* RS = static_cast<T*>(A.resp);
  const int64_t C = A.C;
  const T a = (T)A.a, beta = (T)A.beta, alpha = (T)A.alpha;
  const int64_t ntile = (R + L - 1) / L;
  parallel_ranges(ntile, A.nthreads, R * K * D * 2, [&](int64_t lo, int64_t hi) {
    std::vector<V> xt(D), lg(K), acc(D);
    T* xs = reinterpret_cast<T*>(xt.data());  // the same tile as (D, L) scalars
    T* as = reinterpret_cast<T*>(acc.data());
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t tile = lo; tile < hi; ++tile) {
      const int64_t r0 = tile * L, nr = std::min<int64_t>(L, R - r0);
      const T* x = X + r0 * D;
      if (nr < L) std::fill(xs, xs + D * L, T(0));
      for (int l = 0; l < nr; ++l)
        for (int64_t d = 0; d < D; ++d) xs[d * L + l] = x[l * D + d];
      // logits, eight components at a time, then four, then one
      V mx = V{} + ninf;
      int64_t k = 0;
      for (; k + 8 <= K; k += 8) mixture_logits<V, T, 8>(MU, k, D, xt.data(), a, BI, lg.data(), mx);
      for (; k + 4 <= K; k += 4) mixture_logits<V, T, 4>(MU, k, D, xt.data(), a, BI, lg.data(), mx);
      for (; k < K; ++k) mixture_logits<V, T, 1>(MU, k, D, xt.data(), a, BI, lg.data(), mx);
      // a row whose logits are all -inf (every weight zero there) or NaN gives NaN, like softmax
      V tot = V{};
      for (k = 0; k < K; ++k) {
        lg[k] = vexp(lg[k] - mx);
        tot += lg[k];
      }
      if (RS) {  // r_k = e_k / sum e, row by row
        const V inv = T(1) / tot;
        T* rs = RS + r0 * K;
        for (k = 0; k < K; ++k) {
          const V r = lg[k] * inv;
          for (int l = 0; l < nr; ++l) rs[l * K + k] = r[l];
        }
      }
      // acc_d = sum_k e_k mu_kd, eight coordinates at a time, then four, then one
      int64_t d = 0;
      for (; d + 8 <= C; d += 8) mixture_sums<V, T, 8>(MU, d, K, D, lg.data(), acc.data());
      for (; d + 4 <= C; d += 4) mixture_sums<V, T, 4>(MU, d, K, D, lg.data(), acc.data());
      for (; d < C; ++d) mixture_sums<V, T, 1>(MU, d, K, D, lg.data(), acc.data());
      const V scv = alpha / tot;
      T sc[L];
      std::memcpy(sc, &scv, sizeof(V));
      T* o = out + r0 * C;
      for (int l = 0; l < nr; ++l)
        for (int64_t d = 0; d < C; ++d) o[l * C + d] = beta * x[l * D + d] + sc[l] * as[d * L + l];
    }
  });
}

void mixture_mean(const MixtureArgs& A) {
  if (A.R <= 0 || A.D <= 0 || A.C < 0 || A.C > A.D) return;
  if (A.dtype == kF64)
    mixture_impl<double>(A);
  else
    mixture_impl<float>(A);
}

#define FK_STR2(x) #x
#define FK_STR(x) FK_STR2(x)

const Table kTable = {
    FK_STR(FKDIFF_ISA), &logsumexp_stats, &resample, &gaussian_potential, &mutation, &tamed_langevin,
    &normal, &philox, &variational_update, &mixture_mean,
};

}  // namespace

const Table& table() { return kTable; }

}  // namespace FKDIFF_ISA
}  // namespace cpu
}  // namespace fkdiff
