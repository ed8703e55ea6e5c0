// "Implicit GEMM" kernels: the rows of B are read in place as src + off[t]. For stride-1
// convolution, row t is a shifted view of the padded input and the output is computed on
// the "wide" grid j = p*Wp + q (columns q >= Q are discarded); for the linear layers and the
// im2col path the offsets simply step through a row-major matrix. Each function runs the
// micro-kernels of the SIMD level in use (simd.h); none reads past the J columns it is given.
#pragma once
#include <cstdint>

#include "simd.h"

namespace pylenet {

// C (M, J; row stride ldc) = A (M, T) * B  [+ C when accumulate], B[t][j] = src[off[t] + j].
void igemm_nn(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J, bool accumulate);
// C rows += A (M, T) * B, row i of C at C + coff[i]: the rows' ranges [coff[i], coff[i] + J)
// must not overlap (a tile loads its rows before it stores them).
void igemm_nn_scatter(float* C, const int64_t* coff, const float* A, int64_t M, int64_t T,
                      const float* src, const int64_t* off, int64_t J);
// C (M, T) += A (M, J; row stride lda) * B^T, B[t][j] = src[off[t] + j].
void igemm_nt(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J);
// C (T, Kc; row stride ldc) += B (T, J) * D (J, Kc; row stride ldd), Kc a multiple of 16,
// B[t][j] = src[off[t] + j], or src[off[t] + offj[j]] when offj is not null. Each B value
// is broadcast against a row of D: no horizontal sums. Serves the weight gradient of a conv
// with 16k output channels (t = tap, j = output position) and its forward on the exact
// output grid (t = output position, j = tap; D = w^T).
void igemm_tn(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
              const float* src, const int64_t* off, const int64_t* offj, int64_t J);

// The kernels of one SIMD level, with the register tiles it was compiled with.
struct IgemmKernels {
    const char* level;
    int width;                 // floats per vector register
    int nn_rows, nn_vectors;   // igemm_nn tile: rows x (vectors * width) columns
    int nt_rows, nt_taps;      // igemm_nt tile: rows x taps, one vector accumulator each
    int tn_rows;               // igemm_tn tile: taps x 16 columns
    int exact_conv_from;       // images per call from which a 16k-channel conv's forward runs
                               // on the exact grid (igemm_tn) rather than the wide one
    decltype(&igemm_nn) nn;
    decltype(&igemm_nn_scatter) nn_scatter;
    decltype(&igemm_nt) nt;
    decltype(&igemm_tn) tn;
};

#if defined(PYLENET_SIMD_X86)
extern const IgemmKernels kIgemmAvx512, kIgemmAvx2, kIgemmSse2;
#endif
#if defined(PYLENET_SIMD_NEON)
extern const IgemmKernels kIgemmNeon;
#endif
extern const IgemmKernels kIgemmScalar;

}  // namespace pylenet
