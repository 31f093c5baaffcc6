// CPU kernels of fkdiff (csrc/KERNELS.md). This one file is compiled three times, with
// -DFKDIFF_ISA=generic|avx2|avx512 and the matching -m flags; every symbol lives in
// fkdiff::cpu::FKDIFF_ISA and the dispatcher (dispatch.cpp) picks one table at run time.
//
// Determinism: every work split below is over fixed-size chunks / tiles whose boundaries do not
// depend on the thread count, sums inside a chunk run in a fixed order, and chunk results are
// combined sequentially, so the thread count never changes a result bit. Noise is counter based.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
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

// Vector form of sys_count for WD values of t; returns false if a lane needs the exact loop.
inline bool sys_count_vec(vd t, double u, double Nd, vd& g) {
  vd y = t * Nd - u;
  y = y > 0.0 ? y : 0.0;
  y = y < Nd ? y : Nd;
  const double shifter = 6755399441055744.0;
  vd r = (y + shifter) - shifter;  // nearest
  g = r < y ? r + 1.0 : r;         // ceil
  vd qm = ((g - 1.0) + u) / Nd;
  g = (g > 0.0) & (qm >= t) ? g - 1.0 : g;
  vd q0 = (g + u) / Nd;
  g = (g < Nd) & (q0 < t) ? g + 1.0 : g;
  qm = ((g - 1.0) + u) / Nd;
  q0 = (g + u) / Nd;
  const vi64 ok = ((g <= 0.0) | (qm < t)) & ((g >= Nd) | (q0 >= t));
  for (int l = 0; l < WD; ++l)
    if (!ok[l]) return false;
  return true;
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
      jstart[b * nc + k] = J;
    }
  }
  // Pass 2: scan, counts, outputs.
  parallel_ranges(B * nc, A.nthreads, B * N * 6, [&](int64_t lo, int64_t hi) {
    alignas(64) double w[kSub];
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / nc, k = task % nc;
      const int64_t s = k * kChunk, e = std::min(N, s + kChunk);
      I* out = anc + b * N;
      if (info[b].bits) {
        for (int64_t j = s; j < e; ++j) out[j] = (I)j;
        continue;
      }
      const int64_t J0 = jstart[task];
      const int64_t J1 = (k + 1 < nc) ? jstart[task + 1] : N;
      const double S = total[b], cb = carry[task];
      const T* row = lw + b * N;
      double L = 0;
      if (systematic) {
        const double u = A.u[b], Nd = (double)N;
        for (int64_t j = J0; j < J1; ++j) out[j] = (I)-1;
        int64_t prev = J0;
        for (int64_t p = s; p < e; p += kSub) {
          const int64_t n = std::min(kSub, e - p);
          weights(row + p, n, info[b].m, w);
          L = chain_scan(w, n, L);
          int64_t q = 0;
          for (; q + WD <= n; q += WD) {
            vd t = (cb + vload<vd>(w + q)) / S;
            vd g;
            if (!sys_count_vec(t, u, Nd, g))
              for (int l = 0; l < WD; ++l) g[l] = (double)sys_count(t[l], u, N);
            vstore(w + q, g);
          }
          for (; q < n; ++q) w[q] = (double)sys_count((cb + w[q]) / S, u, N);
          for (q = 0; q < n; ++q) {
            if (prev < J1) out[prev] = (I)(p + q);
            int64_t g = (int64_t)w[q];
            prev = g < prev ? prev : (g > J1 ? J1 : g);
          }
        }
        I run = (I)(J0 < J1 ? out[J0] : 0);
        for (int64_t j = J0; j < J1; ++j) {
          const I a = out[j];
          run = a > run ? a : run;
          out[j] = run;
        }
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
    }
  });
  or_flag(A.flags, bits);
  if (A.x && A.rows && A.row_bytes > 0) {
    const char* x = static_cast<const char*>(A.x);
    char* rows = static_cast<char*>(A.rows);
    const int64_t rb = A.row_bytes;
    parallel_ranges(B * N, A.nthreads, B * N * rb / 8, [&](int64_t lo, int64_t hi) {
      while (lo < hi) {
        const int64_t b = lo / N;
        const int64_t end = std::min(hi, (b + 1) * N);
        copy_rows(x + b * N * rb, rows + b * N * rb, anc + b * N, lo - b * N, end - b * N, rb);
        lo = end;
      }
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
template <class T>
inline T precision_of(T v) {
  return std::fabs(v) == std::numeric_limits<T>::infinity() ? T(0) : T(0.5) / v;
}

// Q for nrows rows starting at row pointer x (stride ld) with per-coordinate t, a, v (length m).
// Long rows: vectorised over the coordinates with several accumulators.
template <class T>
void quad_long(const T* x, int64_t ld, int64_t m, const T* t, const T* a, const T* v, int64_t nrows,
               double* q) {
  typedef typename VecOf<T>::type V;
  constexpr int L = VecOf<T>::n;
  const T inf = std::numeric_limits<T>::infinity();
  for (int64_t r = 0; r < nrows; ++r) {
    const T* xr = x + r * ld;
    V acc0 = V{}, acc1 = V{}, acc2 = V{}, acc3 = V{};
    int64_t i = 0;
#define FK_TERM(ACC, OFF)                                                  \
  {                                                                        \
    V vv = vload<V>(v + i + OFF);                                          \
    V pr = (vv == inf) | (vv == -inf) ? V{} : T(0.5) / vv;                 \
    V d = vload<V>(t + i + OFF) - vload<V>(a + i + OFF) * vload<V>(xr + i + OFF); \
    ACC += d * d * pr;                                                     \
  }
    for (; i + 4 * L <= m; i += 4 * L) {
      FK_TERM(acc0, 0)
      FK_TERM(acc1, L)
      FK_TERM(acc2, 2 * L)
      FK_TERM(acc3, 3 * L)
    }
    for (; i + L <= m; i += L) FK_TERM(acc0, 0)
#undef FK_TERM
    acc0 = (acc0 + acc1) + (acc2 + acc3);
    T s = 0;
    for (; i < m; ++i) {
      const T d = t[i] - a[i] * xr[i];
      s += d * d * precision_of(v[i]);
    }
    for (int l = 0; l < L; ++l) s += acc0[l];
    q[r] = (double)s;
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
  void rows(const T* x, int64_t ld, int64_t nrows, double* q) {
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

constexpr int64_t kShortM = 64;
constexpr int64_t kMaxRows = 256;

template <class T, class O>
void potential_impl(const PotentialArgs& A) {
  const int64_t B = A.B, N = A.N, m = A.m, m2 = A.m2;
  const bool two = A.x2 != nullptr;
  // Rows per tile: the short-row patterns need R*m <= kTile.
  int64_t R = kMaxRows;
  if (m < kShortM) R = std::min<int64_t>(R, std::max<int64_t>(1, kTile / std::max<int64_t>(m, 1)));
  if (two && m2 < kShortM) R = std::min<int64_t>(R, std::max<int64_t>(1, kTile / std::max<int64_t>(m2, 1)));
  const int64_t ntile = (N + R - 1) / R;
  const T* X = static_cast<const T*>(A.x);
  const T* X2 = static_cast<const T*>(A.x2);
  O* out = static_cast<O*>(A.out);
  parallel_ranges(B * ntile, A.nthreads, B * N * (m + (two ? m2 : 0)), [&](int64_t lo, int64_t hi) {
    std::unique_ptr<ShortQuad<T>> sq1, sq2;
    if (m < kShortM) {
      sq1.reset(new ShortQuad<T>);
      sq1->R = R;
      sq1->m = m;
    }
    if (two && m2 < kShortM) {
      sq2.reset(new ShortQuad<T>);
      sq2->R = R;
      sq2->m = m2;
    }
    double q1[kMaxRows], q2[kMaxRows];
    bool nan = false;
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t b = task / ntile, j0 = (task % ntile) * R;
      const int64_t nr = std::min(R, N - j0);
      const T* t = static_cast<const T*>(A.t) + b * A.tbs;
      const T* a = static_cast<const T*>(A.a) + b * A.abs_;
      const T* v = static_cast<const T*>(A.v) + b * A.vbs;
      const T* x = X + (b * N + j0) * A.ldx;
      if (m == 0) {
        for (int64_t r = 0; r < nr; ++r) q1[r] = 0;
      } else if (sq1) {
        sq1->build(b, t, a, v);
        sq1->rows(x, A.ldx, nr, q1);
      } else {
        quad_long(x, A.ldx, m, t, a, v, nr, q1);
      }
      if (two) {
        const T* t2 = static_cast<const T*>(A.t2) + b * A.t2bs;
        const T* a2 = static_cast<const T*>(A.a2) + b * A.a2bs;
        const T* v2 = static_cast<const T*>(A.v2) + b * A.v2bs;
        const T* x2 = X2 + (b * N + j0) * A.ld2;
        if (m2 == 0) {
          for (int64_t r = 0; r < nr; ++r) q2[r] = 0;
        } else if (sq2) {
          sq2->build(b, t2, a2, v2);
          sq2->rows(x2, A.ld2, nr, q2);
        } else {
          quad_long(x2, A.ld2, m2, t2, a2, v2, nr, q2);
        }
      }
      O* o = out + b * N + j0;
      const double c = A.cst ? A.cst[b] : 0.0;
      for (int64_t r = 0; r < nr; ++r) {
        double val = -q1[r];
        if (two) val += q2[r];
        if (A.cst) val += c;
        if (A.accumulate) val += (double)o[r];
        o[r] = (O)val;
        nan |= o[r] != o[r];
      }
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
        if (anc) {
          for (int64_t r = 0; r < nr; ++r) {
            const int64_t a = (int64_t)anc[b * N + j0 + r];
            if (a < 0 || a >= Np) {
              bad = true;
              for (int64_t i = 0; i < d; ++i) buf->mb[r * d + i] = nanv;
            } else {
              std::memcpy(buf->mb + r * d, M + (b * Np + a) * d, d * sizeof(T));
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
        const T* g = Gr + (b * N + j0) * d;
        for (int64_t r = 0; r < nr; ++r) {
          double s = 0;
          for (int64_t i = 0; i < d; ++i) s += (double)g[r * d + i] * (double)g[r * d + i];
          const double nrm = std::sqrt(s);
          if (!std::isfinite(nrm)) bad = true;
          const T cf = (T)(gamma / (1.0 + gamma * nrm));
          for (int64_t i = 0; i < d; ++i) buf->coef[r * d + i] = cf;
        }
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

#define FK_STR2(x) #x
#define FK_STR(x) FK_STR2(x)

const Table kTable = {
    FK_STR(FKDIFF_ISA), &logsumexp_stats, &resample, &gaussian_potential, &mutation, &tamed_langevin,
    &normal, &philox,
};

}  // namespace

const Table& table() { return kTable; }

}  // namespace FKDIFF_ISA
}  // namespace cpu
}  // namespace fkdiff
