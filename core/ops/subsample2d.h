// Trainable subsampling (LeCun 1998's S2 and S4): each kernel x kernel window of a map is
// summed, multiplied by that map's trainable coefficient and shifted by its trainable bias:
// y[n,c,p,q] = w[c] * sum_window x[n,c,.,.] + b[c]. No padding; the floor rule of pooling.
#pragma once
#include <optional>

#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// Validates x (N,C,H,W), kernel and stride as pooling does, w (C,), b (C,) unless nullopt,
// and dy (N,C,P,Q) when given. Returns the params.
Pool2dParams check_subsample2d(const Shape& x, const Shape& w, const std::optional<Shape>& b,
                               int64_t kernel, int64_t stride, const Shape* dy = nullptr);

// y (N,C,P,Q) = w[c] * window sum of x (N,C,H,W) + b[c] (b may be null).
void subsample2d_forward(float* y, const float* x, const float* w, const float* b,
                         const Pool2dParams& p);
// Overwrites dx (N,C,H,W) = w[c] dy spread over each window (0 outside every window),
// dw (C,) = sum dy * window sum, db (C,) = sum dy. Splits the batch as the fused network.
void subsample2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, const Pool2dParams& p);

// Single-threaded building block of the backward for the p.N images at x (the fused network):
// ADDS into dw and db (db may be null), image by image in order; overwrites dx unless null.
void subsample2d_backward_images(float* dx, float* dw, float* db, const float* x, const float* w,
                                 const float* dy, const Pool2dParams& p);

}  // namespace pylenet
