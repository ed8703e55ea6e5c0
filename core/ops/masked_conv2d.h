// A convolution with a fixed connection table (LeCun 1998's C3: each output map reads only
// some input maps). The weight (K,C,R,S) is multiplied by a 0/1 mask (K,C) in forward, and
// the weight gradient is masked too, so the unconnected weights never move from their value
// (0 as the layer initialises them). The arithmetic is conv2d's on the masked weight.
#pragma once
#include <optional>

#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// check_conv2d's checks plus mask (K,C) holding only 0s and 1s (values checked unless null).
Conv2dParams check_masked_conv2d(const Shape& x, const Shape& w, const Shape& mask,
                                 const float* mask_values, const std::optional<Shape>& b,
                                 int64_t stride, int64_t pad, const Shape* dy = nullptr);

// wm (K,C,R,S) = w * mask[k,c]: the weight the convolution uses.
void mask_weight(float* wm, const float* w, const float* mask, const Conv2dParams& p);

// y (N,K,P,Q) = x correlated with w * mask, + b (b may be null).
void masked_conv2d_forward(float* y, const float* x, const float* w, const float* mask,
                           const float* b, const Conv2dParams& p);
// Overwrites dx (N,C,H,W) = conv2d's dx for w * mask, dw (K,C,R,S) = mask * conv2d's dw,
// db (K,). Splits the batch as conv2d_backward does.
void masked_conv2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* mask, const float* dy, const Conv2dParams& p);

// Single-threaded building blocks for the fused network; `ws` holds
// masked_conv2d_workspace(p, n) floats (64-byte aligned).
int64_t masked_conv2d_workspace(const Conv2dParams& p, int64_t n);
// y (n,K,P,Q) for the images x (n,C,H,W); with relu, y = relu(conv).
void masked_conv2d_forward_images(float* y, const float* x, const float* w, const float* mask,
                                  const float* b, int64_t n, const Conv2dParams& p, float* ws,
                                  bool relu = false);
// ADDS mask * the images' dw into dw and their db into db (may be null); overwrites dx unless null.
void masked_conv2d_backward_images(float* dx, float* dw, float* db, const float* x,
                                   const float* w, const float* mask, const float* dy, int64_t n,
                                   const Conv2dParams& p, float* ws);

}  // namespace pylenet
