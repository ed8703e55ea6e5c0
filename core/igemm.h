// "Implicit GEMM" kernels for stride-1 convolution: the rows of the im2col matrix are never
// built; row t is read in place as src + off[t] (a shifted view of the padded input), and
// the output is computed on the "wide" grid j = p*Wp + q (columns q >= Q are discarded).
#pragma once
#include <cstdint>

namespace pylenet {

// C (M, Jp) = A (M, T) * B, B[t][j] = src[off[t] + j]; Jp a multiple of 16.
// src must be readable up to max(off) + Jp.
void igemm_nn(float* C, const float* A, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t Jp);
// C (M, T) += A (M, Jp) * B^T, B[t][j] = src[off[t] + j]; Jp a multiple of 16.
void igemm_nt(float* C, const float* A, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t Jp);

}  // namespace pylenet
