// 2-D convolution (cross-correlation, as in PyTorch) with zero padding and stride:
// a naive reference kept as the oracle; stride 1 runs on the wide-grid implicit GEMM
// (conv2d_gemm.h), other strides on im2col + the same GEMM kernels.
#pragma once
#include <optional>

#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// Validates conv2d shapes and returns the params. x (N,C,H,W), w (K,C,R,S), b (K,) unless
// there is no bias (nullopt); dy, when given, must be (N,K,P,Q).
Conv2dParams check_conv2d(const Shape& x, const Shape& w, const std::optional<Shape>& b, int64_t stride,
                          int64_t pad, const Shape* dy = nullptr);

// y (N,K,P,Q) = x (N,C,H,W) correlated with w (K,C,R,S) + b (K,) (b may be null).
void conv2d_forward(float* y, const float* x, const float* w, const float* b,
                    const Conv2dParams& p);
// Overwrites dx (N,C,H,W), dw (K,C,R,S), db (K,) given dy (N,K,P,Q).
// dx = W^T dy (full correlation with the flipped kernel), dw = dy (x) correlated, db = sum dy.
void conv2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const Conv2dParams& p);

// Whether the convolution is a Linear layer in disguise: unpadded and the kernel as large as
// the input, so y (N, K) = x (N, C*H*W) w (K, C*R*S)^T. It runs on linear's kernels.
inline bool conv2d_is_dense(const Conv2dParams& p) { return p.pad == 0 && p.R == p.H && p.S == p.W; }

// Single-threaded building blocks of the two functions above for n images, for callers that
// split a batch themselves (the fused network). `ws` holds conv2d_workspace(p, n) floats for
// calls of up to n images.
int64_t conv2d_workspace(const Conv2dParams& p, int64_t n);
// y (n,K,P,Q) for the images x (n,C,H,W); with relu, y = relu(conv) (a fused ReLU layer).
void conv2d_forward_images(float* y, const float* x, const float* w, const float* b, int64_t n,
                           const Conv2dParams& p, float* ws, bool relu = false);
// ADDS the images' gradients into dw (K,C,R,S) and db (K,) (db may be null), image by image
// in order; overwrites dx (n,C,H,W) unless dx is null (the first layer needs no dx).
void conv2d_backward_images(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* dy, int64_t n, const Conv2dParams& p, float* ws);

}  // namespace pylenet
