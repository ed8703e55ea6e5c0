// Fully connected layer y = x w^T + b.
#pragma once
#include <optional>

#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// Validates x (N,I), w (O,I), b (O,) unless there is no bias (nullopt), dy (N,O) when given.
LinearParams check_linear(const Shape& x, const Shape& w, const std::optional<Shape>& b,
                          const Shape* dy = nullptr);

// y (N,O) = x (N,I) w (O,I)^T + b (O,) (b may be null).
void linear_forward(float* y, const float* x, const float* w, const float* b,
                    const LinearParams& p);
// Overwrites dx (N,I) = dy w, dw (O,I) = dy^T x, db (O,) = sum_n dy.
void linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const LinearParams& p);

// Single-threaded building blocks for callers that split a batch themselves (the fused
// network); `ws` holds linear_workspace(p) floats.
int64_t linear_workspace(const LinearParams& p);
// y (N,O) = x w^T + b, as linear_forward; with relu, y = max(y, 0) (a fused ReLU layer).
void linear_forward_rows(float* y, const float* x, const float* w, const float* b,
                         const LinearParams& p, float* ws, bool relu = false);
// ADDS dy^T x into dw and sum_n dy into db (may be null); overwrites dx = dy w unless null.
void linear_backward_rows(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, const LinearParams& p, float* ws);

}  // namespace pylenet
