// Shape parameters of the layers, and the dimension legend used throughout core/.
//
// Legend: N batch, C input channels, H x W input height/width, K output channels
// (conv filters), R x S kernel height/width, P x Q output height/width,
// I / O linear input / output features. Layout everywhere: NCHW float32,
// C-contiguous; conv weights (K, C, R, S); bias (K,); labels int64 (N,);
// max-pool argmax int32 holding flat indices into each H*W plane.
#pragma once
#include <cstdint>

namespace pylenet {

// Convolution with zero padding `pad` on every side and equal strides.
struct Conv2dParams {
    int64_t N = 0, C = 0, H = 0, W = 0;  // input
    int64_t K = 0, R = 0, S = 0;         // filters
    int64_t stride = 1, pad = 0;
    int64_t out_h() const { return (H + 2 * pad - R) / stride + 1; }
    int64_t out_w() const { return (W + 2 * pad - S) / stride + 1; }
    int64_t crs() const { return C * R * S; }  // rows of the im2col matrix
};

// Pooling without padding; windows that do not tile the input are floored (PyTorch's rule).
struct Pool2dParams {
    int64_t N = 0, C = 0, H = 0, W = 0;
    int64_t kernel = 2, stride = 2;
    int64_t out_h() const { return (H - kernel) / stride + 1; }
    int64_t out_w() const { return (W - kernel) / stride + 1; }
};

// Fully connected layer y = x w^T + b.
struct LinearParams {
    int64_t N = 0, I = 0, O = 0;
};

}  // namespace pylenet
