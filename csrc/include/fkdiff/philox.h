// Philox4x32-10 counter-based generator, shared by the CPU (C++) and CUDA kernels.
//
// Conventions (identical to Triton's triton.language.random, so that every backend draws the
// same bits for the same (seed, counter)):
//   key     = (seed_lo, seed_hi)            the 64-bit seed split into two 32-bit words
//   counter = (ctr_lo, ctr_hi, 0, 0)        a 64-bit counter
//   10 rounds, round constants 0xD2511F53 / 0xCD9E8D57, key increments 0x9E3779B9 / 0xBB67AE85.
//   For counters below 2^31 this is bit for bit tl.randint4x(seed, counter).
//
// Element noise (fkdiff convention, see python/fkdiff/ops/reference.py): the normal drawn for
// the element with global 64-bit counter e comes from Philox block g = e >> 2, lane l = e & 3:
//   words (w0, w1, w2, w3) = philox(seed, g)
//   u_k = uniform(w_k)                      Triton's uint_to_uniform_float (31 bits, in [0, 1))
//   (z0, z1) = box_muller(u0, u1), (z2, z3) = box_muller(u2, u3)   (Triton's randn4x)
//   z(e) = z_l
// box_muller(a, b) = (r cos(2 pi b), r sin(2 pi b)), r = sqrt(-2 log(max(a, 1e-7))).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FKDIFF_HD __host__ __device__ __forceinline__
#else
#define FKDIFF_HD inline
#endif

namespace fkdiff {

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;
// Triton's scale: the largest float such that (2^31 - 1) * scale < 1 after rounding.
constexpr float kUint31ToUniform = 4.6566127342e-10f;
constexpr float kBoxMullerMinU = 1.0e-7f;
constexpr float kTwoPi = 6.283185307179586f;

struct PhiloxWords {
  uint32_t w[4];
};

FKDIFF_HD uint32_t philox_mulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

// One Philox4x32-10 block for a 64-bit seed and a 64-bit counter.
FKDIFF_HD PhiloxWords philox4x32_10(uint64_t seed, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter);
  uint32_t c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0u, c3 = 0u;
  uint32_t k0 = static_cast<uint32_t>(seed);
  uint32_t k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const uint32_t p0 = c0, p2 = c2;
    c0 = philox_mulhi(kPhiloxRoundB, p2) ^ c1 ^ k0;
    c2 = philox_mulhi(kPhiloxRoundA, p0) ^ c3 ^ k1;
    c1 = kPhiloxRoundB * p2;
    c3 = kPhiloxRoundA * p0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

// Triton's uint_to_uniform_float for 32-bit words: fold the sign, scale to [0, 1).
FKDIFF_HD float philox_uniform(uint32_t w) {
  int32_t x = static_cast<int32_t>(w);
  x = x < 0 ? ~x : x;  // == -x - 1 without the overflow at INT32_MIN
  return static_cast<float>(x) * kUint31ToUniform;
}

}  // namespace fkdiff
