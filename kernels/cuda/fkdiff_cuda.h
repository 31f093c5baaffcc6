// Host launchers of the CUDA kernels (contract: csrc/KERNELS.md). This header needs no CUDA
// headers, so csrc/cuda/bind_cuda.cpp (compiled by the C++ compiler) can include it.
//
// Every launcher takes raw device pointers, sizes, seeds and the caller's stream (a cudaStream_t
// passed as void*), enqueues its kernels and returns without synchronising. Launchers never
// allocate: kernels that need scratch (reductions, scans) take a device buffer of at least
// the size the matching *_scratch_bytes function returns. Errors of the launches themselves are
// left in the CUDA runtime's error state (cudaGetLastError) for the caller to check; bad
// arguments (an unknown dtype code, a size that does not fit a grid) throw std::invalid_argument.
//
// dtype codes: 0 = float32, 1 = float64.  Index codes: 0 = int32, 1 = int64.
// Sizes are int64; strides are in elements.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fkdiff {
namespace cuda {

enum DType : int { kFloat32 = 0, kFloat64 = 1 };
enum IType : int { kInt32 = 0, kInt64 = 1 };

// 1. logsumexp_stats: out (B, 3) float64 row-major, flags int32[1].
size_t logsumexp_stats_scratch_bytes(int64_t B, int64_t N);
void logsumexp_stats(const void* log_weights, int dtype, int64_t B, int64_t N, int64_t lw_stride, double* out,
                     int32_t* flags, void* scratch, int sm_count, void* stream);

// 2. resample: exactly one of u (B,) and positions (B, N) (row stride pos_stride) is non-null.
//    x/rows: optional (both null or both set), (B, N, d) contiguous of dtype x_dtype.
size_t resample_scratch_bytes(int64_t B, int64_t N);
void resample(const void* log_weights, int dtype, int64_t B, int64_t N, int64_t lw_stride, void* ancestors,
              int index_dtype, int32_t* flags, const double* u, const double* positions, int64_t pos_stride,
              const void* x, void* rows, int x_dtype, int64_t d, void* scratch, int sm_count, void* stream);

// 3. gaussian_potential. x (B, N, m) with strides (N*ld, ld, 1); t/a/v (B, m) with batch strides
//    st/sa/sv (m or 0). x2 == nullptr: no second term. cst: (B,) float64 or nullptr. out (B, N).
struct PotentialTerm {
  const void* x = nullptr;
  int64_t ld = 0;
  int64_t m = 0;
  const void* t = nullptr;
  int64_t st = 0;
  const void* a = nullptr;
  int64_t sa = 0;
  const void* v = nullptr;
  int64_t sv = 0;
};
size_t gaussian_potential_scratch_bytes(int64_t B, int64_t N, int64_t m, int64_t m2);
void gaussian_potential(int dtype, int64_t B, int64_t N, const PotentialTerm& term1, const PotentialTerm* term2,
                        const double* cst, void* out, bool accumulate, int32_t* flags, void* scratch, int sm_count,
                        void* stream);

// 4. mutation. m (B, Np, d) contiguous; ancestors (B, N) or nullptr (then N == Np);
//    K/c/s (B, d) with batch strides sK/sc/ss; out (B, N, d).
void mutation(int dtype, const void* m, int64_t B, int64_t Np, int64_t d, const void* ancestors, int index_dtype,
              int64_t N, const void* K, int64_t sK, const void* c, int64_t sc, const void* s, int64_t ss,
              uint64_t seed, uint64_t offset, void* out, int32_t* flags, int sm_count, void* stream);

// 5. tamed_langevin. x, grad, out (B, N, d) contiguous; out may equal x.
size_t tamed_langevin_scratch_bytes(int64_t B, int64_t N, int64_t d);
void tamed_langevin(int dtype, const void* x, const void* grad, int64_t B, int64_t N, int64_t d, double gamma,
                    uint64_t seed, uint64_t offset, void* out, int32_t* flags, void* scratch, int sm_count,
                    void* stream);

// 8. variational_update. mu, log_std, xi (updated in place), m, grad, sample (rows, d)
//    contiguous, all distinct except m / grad may be shared.
size_t variational_update_scratch_bytes(int64_t rows, int64_t d);
void variational_update(int dtype, void* mu, void* log_std, const void* m, const void* grad, void* xi, int64_t rows,
                        int64_t d, double var, double lr_mu, double lr_l, uint64_t seed, uint64_t offset,
                        void* sample, int32_t* flags, void* scratch, int sm_count, void* stream);

// 6. normal: out (n,) float32/float64, out[k] = z(offset + k).
void normal(void* out, int dtype, int64_t n, uint64_t seed, uint64_t offset, int sm_count, void* stream);

// 7. philox: out (n, 4) int32, row k = Philox4x32-10 block counter + k.
void philox(int32_t* out, int64_t n, uint64_t seed, uint64_t counter, int sm_count, void* stream);

}  // namespace cuda
}  // namespace fkdiff
