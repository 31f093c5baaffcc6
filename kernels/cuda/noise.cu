// Protocol 6 (normal) and 7 (philox): streaming kernels, one Philox block per 4 outputs.
#include "common.cuh"
#include "fkdiff_cuda.h"

namespace fkdiff {
namespace cuda {
namespace {

// out[k] = z(offset + k): thread item c covers out[4c, 4c + 4).
template <typename T, bool VEC>
__global__ void __launch_bounds__(kThreads) normal_kernel(T* __restrict__ out, int64_t n, uint64_t seed,
                                                           uint64_t offset) {
  const int64_t nchunk = (n + 3) / 4;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < nchunk; c += stride) {
    const int64_t i0 = 4 * c;
    const int64_t left = n - i0;
    const int cnt = left < 4 ? static_cast<int>(left) : 4;
    const Normal4 z = normal4(seed, offset + static_cast<uint64_t>(i0));
    V4<T> v{{static_cast<T>(z.z[0]), static_cast<T>(z.z[1]), static_cast<T>(z.z[2]), static_cast<T>(z.z[3])}};
    if (VEC && cnt == 4)
      store4<T, true>(out + i0, v, 4);
    else
      store4<T, false>(out + i0, v, cnt);
  }
}

template <bool VEC>
__global__ void __launch_bounds__(kThreads) philox_kernel(int32_t* __restrict__ out, int64_t n, uint64_t seed,
                                                           uint64_t counter) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const PhiloxWords w = philox4x32_10(seed, counter + static_cast<uint64_t>(k));
    if (VEC) {
      reinterpret_cast<int4*>(out)[k] = make_int4(static_cast<int>(w.w[0]), static_cast<int>(w.w[1]),
                                                  static_cast<int>(w.w[2]), static_cast<int>(w.w[3]));
    } else {
#pragma unroll
      for (int l = 0; l < 4; ++l) out[4 * k + l] = static_cast<int32_t>(w.w[l]);
    }
  }
}

}  // namespace

void normal(void* out, int dtype, int64_t n, uint64_t seed, uint64_t offset, int sm_count, void* stream) {
  if (n <= 0) return;
  const int64_t nchunk = (n + 3) / 4;
  const unsigned grid = grid_for((nchunk + kThreads - 1) / kThreads, sm_count);
  const bool vec = aligned16(out);
  cudaStream_t st = as_stream(stream);
  if (dtype == kFloat32) {
    if (vec)
      normal_kernel<float, true><<<grid, kThreads, 0, st>>>(static_cast<float*>(out), n, seed, offset);
    else
      normal_kernel<float, false><<<grid, kThreads, 0, st>>>(static_cast<float*>(out), n, seed, offset);
  } else if (dtype == kFloat64) {
    if (vec)
      normal_kernel<double, true><<<grid, kThreads, 0, st>>>(static_cast<double*>(out), n, seed, offset);
    else
      normal_kernel<double, false><<<grid, kThreads, 0, st>>>(static_cast<double*>(out), n, seed, offset);
  } else {
    bad_arg("normal: unknown dtype code");
  }
}

void philox(int32_t* out, int64_t n, uint64_t seed, uint64_t counter, int sm_count, void* stream) {
  if (n <= 0) return;
  const unsigned grid = grid_for((n + kThreads - 1) / kThreads, sm_count);
  if (aligned16(out))
    philox_kernel<true><<<grid, kThreads, 0, as_stream(stream)>>>(out, n, seed, counter);
  else
    philox_kernel<false><<<grid, kThreads, 0, as_stream(stream)>>>(out, n, seed, counter);
}

}  // namespace cuda
}  // namespace fkdiff
