// "Implicit GEMM" kernels: the rows of B are read in place as src + off[t]. For stride-1
// convolution, row t is a shifted view of the padded input and the output is computed on
// the "wide" grid j = p*Wp + q (columns q >= Q are discarded); for the linear layers the
// offsets simply step through a row-major matrix.
#pragma once
#include <cstdint>

namespace pylenet {

// C (M, J; row stride ldc) = A (M, T) * B  [+ C when accumulate], B[t][j] = src[off[t] + j].
// Columns past the last multiple of 16 go through a masked tail (nothing read past J).
void igemm_nn(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J, bool accumulate);
// C (M, T) += A (M, J; row stride lda) * B^T, B[t][j] = src[off[t] + j].
void igemm_nt(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J);

// C (T, Kc; row stride ldc) += B (T, J) * D (J, Kc; row stride ldd), B[t][j] = src[off[t] + j];
// Kc a multiple of 16. The weight gradient of a conv with 16k output channels, without
// horizontal sums: each B value is broadcast against a row of D.
void igemm_tn(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
              const float* src, const int64_t* off, int64_t J);

}  // namespace pylenet
