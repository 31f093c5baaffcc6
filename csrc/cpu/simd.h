// Portable SIMD layer of the CPU kernels: GCC vector extensions whose width follows the
// instruction set the translation unit is compiled for (SSE2: 16 bytes, AVX2: 32, AVX-512: 64),
// a vectorised Philox4x32-10 (bit-identical to fkdiff::philox4x32_10), Triton's uniform and
// Box–Muller transform with float32 polynomial log / sin / cos, and a float64 exp.
//
// Included by csrc/cpu/kernels.cpp only, inside namespace fkdiff::cpu::FKDIFF_ISA.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "fkdiff/philox.h"

namespace fkdiff {
namespace cpu {
namespace FKDIFF_ISA {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
constexpr int W = kVecBytes / 4;   // 32-bit lanes
constexpr int WD = kVecBytes / 8;  // 64-bit lanes

typedef float vf __attribute__((vector_size(kVecBytes)));
typedef uint32_t vu __attribute__((vector_size(kVecBytes)));
typedef int32_t vi __attribute__((vector_size(kVecBytes)));
typedef uint64_t vu64 __attribute__((vector_size(kVecBytes)));
typedef int64_t vi64 __attribute__((vector_size(kVecBytes)));
typedef double vd __attribute__((vector_size(kVecBytes)));

template <class V>
inline V vload(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
inline void vstore(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// Full 64-bit products of the even 32-bit lanes of a and b (pmuludq).
inline vu64 mul_even(vu64 a, vu64 b) {
#if defined(__AVX512F__)
  return (vu64)_mm512_mul_epu32((__m512i)a, (__m512i)b);
#elif defined(__AVX2__)
  return (vu64)_mm256_mul_epu32((__m256i)a, (__m256i)b);
#else
  return (vu64)_mm_mul_epu32((__m128i)a, (__m128i)b);
#endif
}

inline vf vsqrt(vf x) {
#if defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX2__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  return (vf)_mm_sqrt_ps((__m128)x);
#endif
}

// hi / lo words of a * k for every 32-bit lane.
inline void mulhilo(vu a, uint32_t k, vu& hi, vu& lo) {
  const vu64 kk = (vu64)(vu{} + k);
  const vu64 a64 = (vu64)a;
  const vu64 pe = mul_even(a64, kk);
  const vu64 po = mul_even(a64 >> 32, kk);
  vi sel;
  for (int q = 0; q < W; ++q) sel[q] = (q & 1) ? W + q : q;
  hi = __builtin_shuffle((vu)(pe >> 32), (vu)po, sel);  // blend: even from pe, odd from po
  lo = a * k;
}

inline vu iota_u() {
  vu r;
  for (int k = 0; k < W; ++k) r[k] = (uint32_t)k;
  return r;
}

// Round keys of a seed, broadcast once per tile.
struct PhiloxKeys {
  vu k0[kPhiloxRounds], k1[kPhiloxRounds];
  explicit PhiloxKeys(uint64_t seed) {
    uint32_t a = (uint32_t)seed, b = (uint32_t)(seed >> 32);
    for (int r = 0; r < kPhiloxRounds; ++r) {
      k0[r] = vu{} + a;
      k1[r] = vu{} + b;
      a += kPhiloxKeyA;
      b += kPhiloxKeyB;
    }
  }
};

// Philox blocks g, g+1, ..., g+W-1 (block counters taken mod 2^62, as element counters mod 2^64
// map to blocks mod 2^62) -> the four word vectors.
inline void philox_vec(const PhiloxKeys& K, uint64_t g, vu& o0, vu& o1, vu& o2, vu& o3) {
  const vu io = iota_u();
  vu c0 = (vu{} + (uint32_t)g) + io;
  vu c1 = (vu{} + (uint32_t)(g >> 32)) - (vu)(c0 < io);  // carry
  c1 &= 0x3FFFFFFFu;
  vu c2 = vu{}, c3 = vu{};
#pragma GCC unroll 10
  for (int r = 0; r < kPhiloxRounds; ++r) {
    vu hb, lb, ha, la;
    mulhilo(c2, kPhiloxRoundB, hb, lb);
    mulhilo(c0, kPhiloxRoundA, ha, la);
    c0 = hb ^ c1 ^ K.k0[r];
    c2 = ha ^ c3 ^ K.k1[r];
    c1 = lb;
    c3 = la;
  }
  o0 = c0;
  o1 = c1;
  o2 = c2;
  o3 = c3;
}

// Same, but for arbitrary 64-bit block counters (no mod 2^62): the philox kernel.
inline void philox_vec64(uint64_t seed, uint64_t g, vu& o0, vu& o1, vu& o2, vu& o3) {
  const vu io = iota_u();
  vu c0 = (vu{} + (uint32_t)g) + io;
  vu c1 = (vu{} + (uint32_t)(g >> 32)) - (vu)(c0 < io);
  vu c2 = vu{}, c3 = vu{};
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
#pragma GCC unroll 10
  for (int r = 0; r < kPhiloxRounds; ++r) {
    vu hb, lb, ha, la;
    mulhilo(c2, kPhiloxRoundB, hb, lb);
    mulhilo(c0, kPhiloxRoundA, ha, la);
    c0 = hb ^ c1 ^ k0;
    c2 = ha ^ c3 ^ k1;
    c1 = lb;
    c3 = la;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  o0 = c0;
  o1 = c1;
  o2 = c2;
  o3 = c3;
}

// Triton's uint_to_uniform_float.
inline vf uniform_vec(vu w) {
  vi x = (vi)w;
  x = x ^ (x >> 31);  // x < 0 ? ~x : x
  return __builtin_convertvector(x, vf) * kUint31ToUniform;
}

// Natural log for normal positive floats (Cephes logf); ~1 ulp, relative accuracy kept near 1.
inline vf vlog(vf x) {
  vi bits = (vi)x;
  vi e = ((bits >> 23) & 0xFF) - 126;
  vf m = (vf)((bits & 0x807FFFFF) | 0x3F000000);  // [0.5, 1)
  const vi small = (vi)(m < 0.707106781186547524f);
  e += small;  // -1 where small
  vf t = small ? m + m - 1.0f : m - 1.0f;
  vf ef = __builtin_convertvector(e, vf);
  vf z = t * t;
  vf y = vf{} + 7.0376836292E-2f;
  y = y * t - 1.1514610310E-1f;
  y = y * t + 1.1676998740E-1f;
  y = y * t - 1.2420140846E-1f;
  y = y * t + 1.4249322787E-1f;
  y = y * t - 1.6668057665E-1f;
  y = y * t + 2.0000714765E-1f;
  y = y * t - 2.4999993993E-1f;
  y = y * t + 3.3333331174E-1f;
  y = y * t * z;
  y += -2.12194440e-4f * ef;
  y += -0.5f * z;
  vf r = t + y;
  r += 0.693359375f * ef;
  return r;
}

// (cos, sin) of 2 pi b for b in [0, 1]: exact reduction to |f| <= 1/8 turn, Cephes polynomials.
inline void vsincos_turns(vf b, vf& c, vf& s) {
  vi k = __builtin_convertvector(b * 4.0f + 0.5f, vi);  // round(4b), b >= 0
  vf f = b - __builtin_convertvector(k, vf) * 0.25f;    // exact, |f| <= 1/8
  vf a = f * kTwoPi;
  vf a2 = a * a;
  vf ps = vf{} - 1.9515295891E-4f;
  ps = ps * a2 + 8.3321608736E-3f;
  ps = ps * a2 - 1.6666654611E-1f;
  vf sa = a + a * a2 * ps;
  vf pc = vf{} + 2.443315711809948E-5f;
  pc = pc * a2 - 1.388731625493765E-3f;
  pc = pc * a2 + 4.166664568298827E-2f;
  vf ca = 1.0f - 0.5f * a2 + a2 * a2 * pc;
  const vi q = k & 3;
  const vi swap = (vi)((q & 1) != 0);
  vf cv = swap ? sa : ca;
  vf sv = swap ? ca : sa;
  const vi cneg = (vi)(((q + 1) & 2) << 30);  // q == 1 or 2
  const vi sneg = (vi)((q & 2) << 30);        // q == 2 or 3
  c = (vf)((vi)cv ^ cneg);
  s = (vf)((vi)sv ^ sneg);
}

inline void box_muller(vu wa, vu wb, vf& z0, vf& z1) {
  vf ua = uniform_vec(wa);
  vf ub = uniform_vec(wb);
  ua = ua < kBoxMullerMinU ? kBoxMullerMinU : ua;
  vf r = vsqrt(-2.0f * vlog(ua));
  vf c, s;
  vsincos_turns(ub, c, s);
  z0 = r * c;
  z1 = r * s;
}

// Interleave four W-lane vectors: out[4k + l] = v_l[k] (the block/lane order of the elements).
template <class V>
inline void store_interleaved4(V v0, V v1, V v2, V v3, void* dst) {
  typedef int32_t M __attribute__((vector_size(kVecBytes)));
  M lo, hi, p0, p1;
  for (int k = 0; k < W; ++k) {
    lo[k] = (k & 1) ? W + k / 2 : k / 2;
    hi[k] = lo[k] + W / 2;
  }
  V a01 = __builtin_shuffle(v0, v1, lo);  // v0_0 v1_0 v0_1 v1_1 ...
  V b01 = __builtin_shuffle(v0, v1, hi);
  V a23 = __builtin_shuffle(v2, v3, lo);
  V b23 = __builtin_shuffle(v2, v3, hi);
  for (int k = 0; k < W; ++k) {
    const int q = k / 4, r = k % 4;
    p0[k] = r < 2 ? 2 * q + r : W + 2 * q + r - 2;
    p1[k] = p0[k] + W / 2;
  }
  char* d = static_cast<char*>(dst);
  vstore(d, __builtin_shuffle(a01, a23, p0));
  vstore(d + sizeof(V), __builtin_shuffle(a01, a23, p1));
  vstore(d + 2 * sizeof(V), __builtin_shuffle(b01, b23, p0));
  vstore(d + 3 * sizeof(V), __builtin_shuffle(b01, b23, p1));
}

// Normals of W consecutive Philox blocks starting at block g -> 4W floats in element order.
inline void normals_blocks(const PhiloxKeys& K, uint64_t g, float* dst) {
  vu w0, w1, w2, w3;
  philox_vec(K, g & 0x3FFFFFFFFFFFFFFFull, w0, w1, w2, w3);
  vf z0, z1, z2, z3;
  box_muller(w0, w1, z0, z1);
  box_muller(w2, w3, z2, z3);
  store_interleaved4(z0, z1, z2, z3, dst);
}

// Tile of normals: scratch gets the normals of the blocks covering counters [e0, e0 + n); the
// return value points at z(e0). scratch must hold n + 4W + 4 floats.
inline const float* normals_tile(uint64_t seed, uint64_t e0, int64_t n, float* scratch) {
  const uint64_t g0 = e0 >> 2;
  const int64_t lane0 = (int64_t)(e0 & 3);
  const int64_t need = lane0 + n;
  const PhiloxKeys K(seed);
  for (int64_t k = 0; k < need; k += 4 * W) normals_blocks(K, g0 + (uint64_t)(k >> 2), scratch + k);
  return scratch + lane0;
}

// exp(c) for float64 c already clamped to [-708, 709]: Cody–Waite reduction by ln 2 and a
// degree-13 polynomial, scaled by 2^n through the exponent bits (~1 ulp).
inline vd exp_core_d(vd c) {
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52
  vd t = c * 1.4426950408889634 + shifter;
  vd n = t - shifter;
  vd r = c - n * 6.93147180369123816490e-01;
  r = r - n * 1.90821492927058770002e-10;
  vd p = vd{} + 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  vi64 ni = (vi64)t - (vi64)(vd{} + shifter);
  return p * (vd)((ni + 1023) << 52);
}

// exp(x) for x <= 0 (float64, ~1 ulp); x < -708 (and -inf) gives 0.
inline vd vexp_neg(vd x) {
  const vi64 tiny = (vi64)(x < -708.0);
  const vd res = exp_core_d(tiny ? -708.0 : x);
  return tiny ? 0.0 : res;
}

// exp(x) for any float64 x (~1 ulp): 0 below -708, +inf above 709.78, NaN stays NaN.
inline vd vexp_d(vd x) {
  const vi64 huge = (vi64)(x > 709.78);
  const vi64 tiny = (vi64)(x < -708.0);
  vd c = tiny ? -708.0 : x;
  c = c > 709.0 ? 709.0 : c;
  vd res = exp_core_d(c);
  res = tiny ? 0.0 : res;
  return huge ? __builtin_inf() : res;
}

// exp(x) for any float32 x (~2 ulp): 0 below -87.33 (no subnormals), +inf above 88.72, NaN
// stays NaN. Cody–Waite reduction by ln 2 and a degree-7 Taylor polynomial on |r| <= ln2 / 2.
inline vf vexp_f(vf x) {
  const vi huge = (vi)(x > 88.72f);
  const vi tiny = (vi)(x < -87.33f);
  vf c = tiny ? -87.33f : x;
  c = huge ? 88.72f : c;
  const float shifter = 12582912.0f;  // 1.5 * 2^23
  vf t = c * 1.44269504f + shifter;
  vf n = t - shifter;
  vf r = c - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = vf{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi ni = (vi)t - (vi)(vf{} + shifter);  // n in [-126, 128]: scale by 2^(n/2) twice
  const vi n1 = ni >> 1, n2 = ni - n1;
  vf res = (p * (vf)((n1 + 127) << 23)) * (vf)((n2 + 127) << 23);
  res = tiny ? 0.0f : res;
  return huge ? __builtin_inff() : res;
}

}  // namespace FKDIFF_ISA
}  // namespace cpu
}  // namespace fkdiff
