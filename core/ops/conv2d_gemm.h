// Convolution as implicit GEMM (gemm/gemm.h): the kernels read the padded image in place
// through tap offsets, so no im2col matrix is built. Used by conv2d's per-image functions
// whenever the stride is 1, and for a strided conv with 16k output channels (its forward and
// dw on the exact grid; its dx stays im2col's).
#pragma once
#include <cstdint>

#include "base/params.h"

namespace pylenet {

// Whether the implicit-GEMM functions handle p (stride 1, or output channels a multiple of
// 16; other convolutions use im2col).
inline bool conv2d_gemm_ok(const Conv2dParams& p) { return p.stride == 1 || p.K % 16 == 0; }
// Scratch floats the implicit-GEMM functions need for calls of up to n images.
int64_t conv2d_gemm_workspace(const Conv2dParams& p, int64_t n);
// y (n,K,P,Q) for the n images x (n,C,H,W), plus bias b (K,) when not null, then max(y, 0)
// when relu. Bit-identical for any n (the exact and the wide grid sum the taps alike).
void conv2d_forward_gemm(float* y, const float* x, const float* w, const float* b,
                         int64_t n, const Conv2dParams& p, float* ws, bool relu);
// ADDS the n images' dw (K,C,R,S) and db (K,) (may be null); overwrites dx (n,C,H,W) unless
// null (it must be null for a stride > 1). Returns false, touching nothing, when x (or w, when dx is wanted) holds Inf/NaN: the
// wide grid multiplies such values by the zero gradient of discarded columns, so the caller
// uses im2col instead.
bool conv2d_backward_gemm(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, int64_t n, const Conv2dParams& p, float* ws);

}  // namespace pylenet
