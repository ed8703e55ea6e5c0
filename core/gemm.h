// Single-threaded float32 matrix products on row-major matrices with leading dimensions.
// Callers split work across threads by rows of C, so every C element is computed by the
// same instruction sequence whatever the thread count (bit-identical results).
#pragma once
#include <cstdint>

namespace pylenet {

// C (M,N) = A (M,K) * B (K,N)          [+ C when accumulate]
void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate);
// C (M,N) = A (M,K) * B (N,K)^T        [+ C when accumulate]
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate);
// C (M,N) = A (K,M)^T * B (K,N)        [+ C when accumulate]
void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate);

}  // namespace pylenet
