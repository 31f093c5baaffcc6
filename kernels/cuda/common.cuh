// Device helpers shared by the CUDA kernels: Philox normals, 4-wide loads/stores, row layouts,
// group reductions, grid sizing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "fkdiff/flags.h"
#include "fkdiff/philox.h"

namespace fkdiff {
namespace cuda {

constexpr int kThreads = 256;  // every kernel runs 256-thread blocks
constexpr int kChunksPerThread = 1;  // rows mode: one chunk of 4 elements per thread and row
                                     // (keeps registers low: Philox + Box-Muller per chunk)
constexpr int kSegRows = 4;  // long-row kernels: rows per block (reuse of per-column parameters)
constexpr int64_t kMaxGrid = 1 << 20;  // grid-stride kernels never launch more blocks than this

// Rows mode: row groups per thread per grid-stride step. Each thread first issues the loads of
// all its R rows (independent, so R x 16 bytes per array are in flight), then computes and
// stores. The noise is counter-based, so results do not depend on R or the grid.
template <typename T>
struct RowsUnroll {
  static constexpr int value = sizeof(T) == 4 ? 2 : 1;
};
// Minimum resident 256-thread blocks per SM of the rows-mode kernels (register cap
// 65536 / (256 * blocks)): 3 -> 80 registers (37.5% occupancy; float takes 2 rows per thread).
template <typename T>
constexpr int kRowsMinBlocks = 3;

inline cudaStream_t as_stream(void* s) { return reinterpret_cast<cudaStream_t>(s); }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Blocks for a grid-stride loop over `items` block-sized work items: all resident, a few waves.
inline unsigned grid_for(int64_t items, int sm_count, int blocks_per_sm = 8) {
  int64_t cap = static_cast<int64_t>(sm_count > 0 ? sm_count : 132) * blocks_per_sm;
  if (cap > kMaxGrid) cap = kMaxGrid;
  int64_t g = items < cap ? items : cap;
  return static_cast<unsigned>(g < 1 ? 1 : g);
}

// Population of a flattened row (row >= 0, N >= 1): cheap 32-bit division when it fits.
__device__ __forceinline__ int64_t pop_of(int64_t row, int64_t N, int64_t B) {
  if (B == 1) return 0;
  if (row <= 0x7fffffff && N <= 0x7fffffff)
    return static_cast<int64_t>(static_cast<uint32_t>(row) / static_cast<uint32_t>(N));
  return row / N;
}

inline int ceil_log2(int64_t v) {  // smallest k with 2^k >= v (v >= 1)
  int k = 0;
  while ((int64_t{1} << k) < v) ++k;
  return k;
}

[[noreturn]] inline void bad_arg(const std::string& what) { throw std::invalid_argument("fkdiff CUDA: " + what); }

// ------------------------------------------------------------------------------------------
// Normals (csrc/include/fkdiff/philox.h): z(e) = lane e & 3 of Box–Muller on Philox block e >> 2.
// ------------------------------------------------------------------------------------------

struct Normal4 {
  float z[4];
};

// (r cos 2 pi b, r sin 2 pi b) with r = sqrt(-2 log max(a, 1e-7)), accurate to ~1e-6 absolute
// whatever the compile flags: --use_fast_math turns logf into lg2.approx, whose absolute error
// (~4e-7) near a = 1 would dominate r = sqrt(-2 log a) there. So log a = log1pf(a - 1) for
// a > 0.5 (a - 1 is exact; log1pf is not replaced by fast-math), __logf below 0.5 (3 ulp of a
// log of magnitude >= 0.69); sincospif is an exact-reduction polynomial in every mode.
__device__ __forceinline__ void box_muller(float a, float b, float& z0, float& z1) {
  a = fmaxf(a, kBoxMullerMinU);
  const float l = (a > 0.5f) ? log1pf(a - 1.0f) : __logf(a);
  const float r = sqrtf(-2.0f * l);
  float s, c;
  sincospif(2.0f * b, &s, &c);
  z0 = r * c;
  z1 = r * s;
}

__device__ __forceinline__ Normal4 normal_block(uint64_t seed, uint64_t block) {
  const PhiloxWords w = philox4x32_10(seed, block);
  Normal4 n;
  box_muller(philox_uniform(w.w[0]), philox_uniform(w.w[1]), n.z[0], n.z[1]);
  box_muller(philox_uniform(w.w[2]), philox_uniform(w.w[3]), n.z[2], n.z[3]);
  return n;
}

// Normals of the four consecutive element counters e0, e0 + 1, e0 + 2, e0 + 3 (mod 2^64).
// One Philox block when e0 % 4 == 0, else two (the second is block (e0 >> 2) + 1 mod 2^62, which
// is where counters that wrap past 2^64 land).
__device__ __forceinline__ Normal4 normal4(uint64_t seed, uint64_t e0) {
  const uint64_t g = e0 >> 2;
  const unsigned sh = static_cast<unsigned>(e0 & 3u);
  const Normal4 a = normal_block(seed, g);
  if (sh == 0) return a;
  const Normal4 b = normal_block(seed, (g + 1) & ((uint64_t{1} << 62) - 1));
  Normal4 r;
  if (sh == 1) {
    r.z[0] = a.z[1]; r.z[1] = a.z[2]; r.z[2] = a.z[3]; r.z[3] = b.z[0];
  } else if (sh == 2) {
    r.z[0] = a.z[2]; r.z[1] = a.z[3]; r.z[2] = b.z[0]; r.z[3] = b.z[1];
  } else {
    r.z[0] = a.z[3]; r.z[1] = b.z[0]; r.z[2] = b.z[1]; r.z[3] = b.z[2];
  }
  return r;
}

// ------------------------------------------------------------------------------------------
// 4-element chunks: vector loads/stores when VEC (the caller checked 16-byte alignment and
// d % 4 == 0, so cnt == 4), scalar otherwise (cnt in 1..4; missing lanes read as 0).
// ------------------------------------------------------------------------------------------

template <typename T>
struct V4 {
  T v[4];
};

template <typename T, bool VEC>
__device__ __forceinline__ V4<T> load4(const T* p, int cnt);

template <>
__device__ __forceinline__ V4<float> load4<float, true>(const float* p, int) {
  const float4 f = *reinterpret_cast<const float4*>(p);
  return V4<float>{{f.x, f.y, f.z, f.w}};
}
template <>
__device__ __forceinline__ V4<double> load4<double, true>(const double* p, int) {
  const double2 a = reinterpret_cast<const double2*>(p)[0];
  const double2 b = reinterpret_cast<const double2*>(p)[1];
  return V4<double>{{a.x, a.y, b.x, b.y}};
}
template <>
__device__ __forceinline__ V4<float> load4<float, false>(const float* p, int cnt) {
  V4<float> r{{0.f, 0.f, 0.f, 0.f}};
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < cnt) r.v[k] = p[k];
  return r;
}
template <>
__device__ __forceinline__ V4<double> load4<double, false>(const double* p, int cnt) {
  V4<double> r{{0.0, 0.0, 0.0, 0.0}};
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < cnt) r.v[k] = p[k];
  return r;
}

template <typename T, bool VEC>
__device__ __forceinline__ void store4(T* p, const V4<T>& v, int cnt);

template <>
__device__ __forceinline__ void store4<float, true>(float* p, const V4<float>& v, int) {
  *reinterpret_cast<float4*>(p) = make_float4(v.v[0], v.v[1], v.v[2], v.v[3]);
}
template <>
__device__ __forceinline__ void store4<double, true>(double* p, const V4<double>& v, int) {
  reinterpret_cast<double2*>(p)[0] = make_double2(v.v[0], v.v[1]);
  reinterpret_cast<double2*>(p)[1] = make_double2(v.v[2], v.v[3]);
}
template <>
__device__ __forceinline__ void store4<float, false>(float* p, const V4<float>& v, int cnt) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < cnt) p[k] = v.v[k];
}
template <>
__device__ __forceinline__ void store4<double, false>(double* p, const V4<double>& v, int cnt) {
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < cnt) p[k] = v.v[k];
}

// ------------------------------------------------------------------------------------------
// Row layouts.
//   Rows mode (row length <= 4 * kChunksPerThread * 256 elements): a row is handled by
//   tpr = 2^tpr_log2 threads (1..256) of one block, each taking chunks lane, lane + tpr, ...
//   (at most kChunksPerThread);
//   a block covers 256 / tpr rows per step of its grid-stride loop.
//   Segment mode (longer rows): a block covers kSegRows rows x 256 chunks (one per thread).
// ------------------------------------------------------------------------------------------

__host__ __device__ inline int64_t chunks_of(int64_t d) { return (d + 3) / 4; }

inline bool rows_mode(int64_t d) { return chunks_of(d) <= int64_t{kThreads} * kChunksPerThread; }

inline int rows_tpr_log2(int64_t d) {
  int64_t per_thread = (chunks_of(d) + kChunksPerThread - 1) / kChunksPerThread;
  int k = ceil_log2(per_thread < 1 ? 1 : per_thread);
  return k > 8 ? 8 : k;
}

// Sum of v over the tpr threads of each row (all of them get the total). Every thread of the
// block must call it (it may __syncthreads); `red` is a __shared__ double[8].
__device__ __forceinline__ double row_group_sum(double v, int tpr_log2, double* red) {
  if (tpr_log2 <= 5) {
    for (int off = (1 << tpr_log2) >> 1; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) red[warp] = v;
  __syncthreads();
  const int wpr = 1 << (tpr_log2 - 5);  // warps per row
  const int first = (warp / wpr) * wpr;
  double t = 0.0;
  for (int w = 0; w < wpr; ++w) t += red[first + w];
  __syncthreads();
  return t;
}

// Block-wide sums of R values (segment mode): thread r < R gets total r in out_r. `red` is a
// __shared__ double[8 * R]. Every thread must call it.
template <int R>
__device__ __forceinline__ void block_sums(double (&v)[R], double* red) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) v[r] += __shfl_xor_sync(0xffffffffu, v[r], off);
    if (lane == 0) red[warp * R + r] = v[r];
  }
  __syncthreads();
  if (threadIdx.x < R) {
    double t = 0.0;
    for (int w = 0; w < kThreads / 32; ++w) t += red[w * R + threadIdx.x];
    v[0] = t;  // only thread r's v[0] is meaningful: total of row r
  }
  __syncthreads();
}

__device__ __forceinline__ void or_flags(int32_t* flags, int bits) {
  if (bits) atomicOr(reinterpret_cast<int*>(flags), bits);
}

}  // namespace cuda
}  // namespace fkdiff
