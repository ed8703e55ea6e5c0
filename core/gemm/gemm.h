// The GEMM entry points. Each product reads one operand as "Rows": its row t is read in place
// at src + off[t] (implicit GEMM). For stride-1 convolution, row t is a shifted view of the
// padded input and the output is computed on the "wide" grid j = p*Wp + q (columns q >= Q are
// discarded); for the linear layers and the im2col path the offsets simply step through a
// row-major matrix. The names say what is computed: a_rows = A * Rows, a_rows_t = A * Rows^T,
// rows_d = Rows * D. Each function runs the micro-kernels of the SIMD level in use (simd.h);
// none reads past the J columns it is given.
#pragma once
#include <cstdint>

#include "gemm/simd.h"

namespace pylenet {

// C (M, J; row stride ldc) = A (M, T) * Rows  [+ C when accumulate], Rows[t][j] = src[off[t] + j].
void gemm_a_rows(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
                 const int64_t* off, int64_t J, bool accumulate);
// C rows += A (M, T) * Rows, row i of C at C + coff[i]: the rows' ranges [coff[i], coff[i] + J)
// must not overlap (a tile loads its rows before it stores them).
void gemm_a_rows_scatter(float* C, const int64_t* coff, const float* A, int64_t M, int64_t T,
                         const float* src, const int64_t* off, int64_t J);
// C (M, T) += A (M, J; row stride lda) * Rows^T, Rows[t][j] = src[off[t] + j]: dot products.
void gemm_a_rows_t(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
                   const int64_t* off, int64_t J);
// C (T, Kc; row stride ldc) += Rows (T, J) * D (J, Kc; row stride ldd), Kc a multiple of 16,
// Rows[t][j] = src[off[t] + j], or src[off[t] + offj[j]] when offj is not null. Each Rows value
// is broadcast against a row of D: no horizontal sums. Serves the weight gradient of a conv
// with 16k output channels (t = tap, j = output position) and its forward on the exact
// output grid (t = output position, j = tap; D = w^T).
void gemm_rows_d(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
                 const float* src, const int64_t* off, const int64_t* offj, int64_t J);

// The kernels of one SIMD level, with the register tiles it was compiled with.
struct GemmKernels {
    const char* level;
    int width;                     // floats per vector register
    int a_rows_mr, a_rows_nv;      // gemm_a_rows tile: rows x (vectors * width) columns
    int a_rows_t_mr, a_rows_t_tn;  // gemm_a_rows_t tile: rows x taps, a vector accumulator each
    int rows_d_mr;                 // gemm_rows_d tile: taps x 16 columns
    int exact_conv_from;           // images per call from which a 16k-channel conv's forward
                                   // runs on the exact grid (gemm_rows_d), not the wide one
    decltype(&gemm_a_rows) a_rows;
    decltype(&gemm_a_rows_scatter) a_rows_scatter;
    decltype(&gemm_a_rows_t) a_rows_t;
    decltype(&gemm_rows_d) rows_d;
};

#if defined(PYLENET_SIMD_X86)
extern const GemmKernels kGemmAvx512, kGemmAvx2, kGemmSse2;
#endif
#if defined(PYLENET_SIMD_NEON)
extern const GemmKernels kGemmNeon;
#endif
extern const GemmKernels kGemmScalar;

}  // namespace pylenet
