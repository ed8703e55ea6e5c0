// The GEMM entry points: each forwards to the micro-kernels of the level in use.
#include "gemm/gemm.h"

namespace pylenet {

void gemm_a_rows(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
                 const int64_t* off, int64_t J, bool accumulate) {
    simd_kernels().a_rows(C, ldc, A, M, T, src, off, J, accumulate);
}

void gemm_a_rows_scatter(float* C, const int64_t* coff, const float* A, int64_t M, int64_t T,
                         const float* src, const int64_t* off, int64_t J) {
    simd_kernels().a_rows_scatter(C, coff, A, M, T, src, off, J);
}

void gemm_a_rows_t(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
                   const int64_t* off, int64_t J) {
    simd_kernels().a_rows_t(C, A, lda, M, T, src, off, J);
}

void gemm_rows_d(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
                 const float* src, const int64_t* off, const int64_t* offj, int64_t J) {
    simd_kernels().rows_d(C, ldc, D, ldd, T, Kc, src, off, offj, J);
}

}  // namespace pylenet
