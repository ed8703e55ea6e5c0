// Fully connected layer y = x w^T + b.
#pragma once
#include "checks.h"
#include "params.h"

namespace pylenet {

// Validates x (N,I), w (O,I), b (O,) or none (bias_len -1), dy (N,O) when given.
LinearParams check_linear(const Shape& x, const Shape& w, int64_t bias_len,
                          const Shape* dy = nullptr);

// y (N,O) = x (N,I) w (O,I)^T + b (O,) (b may be null).
void linear_forward(float* y, const float* x, const float* w, const float* b,
                    const LinearParams& p);
// Overwrites dx (N,I) = dy w, dw (O,I) = dy^T x, db (O,) = sum_n dy.
void linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const LinearParams& p);

}  // namespace pylenet
