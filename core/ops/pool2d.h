// Max and average pooling (no padding, floor rule for windows that do not tile the input).
#pragma once
#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// Validates pooling of x (N,C,H,W): kernel >= 1, stride >= 1, kernel <= H and W; for a
// backward also dy (N,C,P,Q) when given; with argmax (max pooling) each H*W plane must fit
// int32 indices. Returns the params.
Pool2dParams check_pool2d(const char* op, const Shape& x, int64_t kernel, int64_t stride,
                          const Shape* dy = nullptr, bool argmax = false);
// Max-pool backward knows x only as x_shape and its windows only through argmax: x_shape
// (N,C,H,W), dy (N,C,P,Q) and argmax of dy's shape with values in [0, H*W).
void check_maxpool2d_backward(const Shape& x_shape, const Shape& dy, const Shape& argmax_shape,
                              const int64_t* argmax);

// y (N,C,P,Q) = window max; argmax (N,C,P,Q) = flat index ih*W+iw of the first maximum in
// each window's H*W plane, unless argmax is null (inference). NaN wins over numbers, as in
// PyTorch.
void maxpool2d_forward(float* y, int32_t* argmax, const float* x, const Pool2dParams& p);
// Overwrites dx (N,C,H,W): zero, then dx[n,c,argmax] += dy (the gradient is 1 at the max).
// argmax values must lie in [0, H*W) (checked at the boundary); P, Q are dy's plane size.
void maxpool2d_backward(float* dx, const float* dy, const int32_t* argmax, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t P, int64_t Q);

// y (N,C,P,Q) = window mean.
void avgpool2d_forward(float* y, const float* x, const Pool2dParams& p);
// Overwrites dx (N,C,H,W): each window spreads dy / (kernel*kernel) over its pixels.
void avgpool2d_backward(float* dx, const float* dy, const Pool2dParams& p);

// Global average pooling (PyTorch's AdaptiveAvgPool2d(1)): y (N, C) = the mean of each
// (H, W) plane of x (N, C, H, W), HW = H * W values per plane.
void global_avgpool2d_forward(float* y, const float* x, int64_t N, int64_t C, int64_t HW);
// Overwrites dx (N, C, H, W) = dy[n, c] / HW over each plane.
void global_avgpool2d_backward(float* dx, const float* dy, int64_t N, int64_t C, int64_t HW);

}  // namespace pylenet
