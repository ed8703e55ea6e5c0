"""The core's operations over numpy arrays (float32, NCHW): forward/backward pairs.

Every function converts its float inputs to C-contiguous float32 (copying when needed, never
writing back), validates shapes (ValueError/TypeError naming the argument and what was
received), allocates fresh outputs and runs the C++ kernel with the GIL released.
NaN and Inf propagate as in PyTorch.
"""
from pylenet._core import (  # noqa: F401  (re-exported API)
    avgpool2d_backward,
    avgpool2d_forward,
    batchnorm_backward,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    dropout_backward,
    dropout_forward,
    elementwise_backward,
    elementwise_forward,
    global_avgpool2d_backward,
    global_avgpool2d_forward,
    build_info,
    conv2d_backward,
    conv2d_forward,
    get_num_threads,
    linear_backward,
    linear_forward,
    masked_conv2d_backward,
    masked_conv2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    mse_loss,
    rbf_backward,
    rbf_forward,
    rbf_map_loss,
    relu_backward,
    relu_forward,
    rescale_backward,
    rescale_forward,
    scaled_tanh_backward,
    scaled_tanh_forward,
    set_num_threads,
    set_simd_level,
    sigmoid_backward,
    sigmoid_forward,
    simd_level,
    softmax,
    softmax_cross_entropy,
    subsample2d_backward,
    subsample2d_forward,
    tanh_backward,
    tanh_forward,
)

__all__ = [
    "avgpool2d_backward", "avgpool2d_forward", "build_info", "conv2d_backward",
    "conv2d_forward", "get_num_threads", "linear_backward", "linear_forward",
    "maxpool2d_backward", "maxpool2d_forward", "mse_loss", "relu_backward", "relu_forward",
    "set_num_threads", "set_simd_level", "sigmoid_backward", "sigmoid_forward",
    "simd_level", "softmax",
    "softmax_cross_entropy", "tanh_backward", "tanh_forward",
    # LeNet5(variant="lecun98")'s ops
    "masked_conv2d_backward", "masked_conv2d_forward", "rbf_backward", "rbf_forward",
    "rbf_map_loss", "rescale_backward", "rescale_forward", "scaled_tanh_backward",
    "scaled_tanh_forward", "subsample2d_backward", "subsample2d_forward",
    # any element-wise kind of the registry by name, BatchNorm, Dropout, global pooling
    "elementwise_forward", "elementwise_backward", "batchnorm_forward_train",
    "batchnorm_forward_eval", "batchnorm_backward", "dropout_forward", "dropout_backward",
    "global_avgpool2d_forward", "global_avgpool2d_backward",
]
