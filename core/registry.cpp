// The layer and loss registry: one entry per kind, each calling that op's kernels.
#include "registry.h"

#include <algorithm>
#include <stdexcept>

#include "activations.h"
#include "conv2d.h"
#include "linear.h"
#include "losses.h"
#include "masked_conv2d.h"
#include "pool2d.h"
#include "rbf.h"
#include "subsample2d.h"

namespace pylenet {

const char* const kSlotNames[kNumSlots] = {"in", "out", "kernel", "stride", "pad", "bias", "const"};

namespace {

void need_planes(const NetLayer& L, const std::string& where, const char* what) {
    if (L.in_shape.size() != 3)
        throw std::invalid_argument("Net: " + where + " (" + what + ") needs (C, H, W) input, got " +
                                    shape_str(L.in_shape));
}

// Weight `w`, then a bias of `out` when the layer has one.
void add_params(NetLayer& L, std::vector<Shape>& params, const Shape& w) {
    L.weight = int(params.size());
    params.push_back(w);
    if (L.desc.bias) {
        L.bias = int(params.size());
        params.push_back({L.desc.out});
    }
}

Shape same_shape(NetLayer& L, const std::string&, std::vector<Shape>&) { return L.in_shape; }

// The layer's fixed array must have shape `want` ("Net: layer 3 (RBF) centres must ...").
void need_constant(const NetLayer& L, const std::string& where, const char* what, const Shape& want) {
    if (L.desc.const_shape != want)
        throw std::invalid_argument("Net: " + where + " " + what + " must have shape " +
                                    shape_str(want) + ", got " +
                                    (L.desc.const_shape.empty() ? std::string("none")
                                                                : shape_str(L.desc.const_shape)));
}
int64_t no_workspace(const NetLayer&, int64_t) { return 0; }

// ---------------------------------------------------------------- conv2d
Shape conv_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params) {
    need_planes(L, where, "Conv2d");
    const Shape& s = L.in_shape;
    const Shape w = {L.desc.out, L.desc.in, L.desc.kernel, L.desc.kernel};
    L.conv = check_conv2d({1, s[0], s[1], s[2]}, w, std::nullopt, L.desc.stride, L.desc.pad);
    add_params(L, params, w);
    return {L.conv.K, L.conv.out_h(), L.conv.out_w()};
}
int64_t conv_workspace(const NetLayer& L, int64_t) { return conv2d_workspace(L.conv); }
void conv_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    conv2d_forward_images(out, in, a.w, a.b, a.n, L.conv, a.scratch, relu);
}
void conv_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                   const float*, const float* dy, const BlockArgs& a) {
    conv2d_backward_images(dx, dw, db, in, a.w, dy, a.n, L.conv, a.scratch);
}

// The layer's pooling parameters for a block of n samples.
Pool2dParams block_pool(const NetLayer& L, int64_t n) {
    Pool2dParams p = L.pool;
    p.N = n;
    return p;
}

// ---------------------------------------------------------------- masked conv2d
Shape masked_conv_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params) {
    need_planes(L, where, "MaskedConv2d");
    const Shape& s = L.in_shape;
    const Shape w = {L.desc.out, L.desc.in, L.desc.kernel, L.desc.kernel};
    need_constant(L, where, "(MaskedConv2d) connections", {L.desc.out, L.desc.in});
    L.conv = check_masked_conv2d({1, s[0], s[1], s[2]}, w, L.desc.const_shape,
                                 L.desc.constant.data(), std::nullopt, L.desc.stride, L.desc.pad);
    add_params(L, params, w);
    return {L.conv.K, L.conv.out_h(), L.conv.out_w()};
}
int64_t masked_conv_workspace(const NetLayer& L, int64_t) { return masked_conv2d_workspace(L.conv); }
void masked_conv_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    masked_conv2d_forward_images(out, in, a.w, L.desc.constant.data(), a.b, a.n, L.conv, a.scratch, relu);
}
void masked_conv_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                          const float*, const float* dy, const BlockArgs& a) {
    masked_conv2d_backward_images(dx, dw, db, in, a.w, L.desc.constant.data(), dy, a.n, L.conv, a.scratch);
}

// ---------------------------------------------------------------- trainable subsampling
Shape subsample_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params) {
    need_planes(L, where, "Subsample2d");
    const Shape& s = L.in_shape;
    check_equal("Net", (where + " (Subsample2d) channels").c_str(), L.desc.in, "maps coming in", s[0]);
    const Shape b = {s[0]};
    L.pool = check_subsample2d({1, s[0], s[1], s[2]}, {s[0]},
                               L.desc.bias ? std::optional<Shape>(b) : std::nullopt,
                               L.desc.kernel, L.desc.stride);
    L.weight = int(params.size());
    params.push_back({s[0]});
    if (L.desc.bias) {
        L.bias = int(params.size());
        params.push_back({s[0]});
    }
    return {s[0], L.pool.out_h(), L.pool.out_w()};
}
void subsample_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    subsample2d_forward(out, in, a.w, a.b, block_pool(L, a.n));
}
void subsample_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                        const float*, const float* dy, const BlockArgs& a) {
    subsample2d_backward_images(dx, dw, db, in, a.w, dy, block_pool(L, a.n));
}

// ---------------------------------------------------------------- RBF output
Shape rbf_setup(NetLayer& L, const std::string& where, std::vector<Shape>&) {
    if (L.in_shape.size() != 1)
        throw std::invalid_argument("Net: " + where + " (RBF) needs flat input (input " +
                                    shape_str(L.in_shape) + ")");
    check_equal("Net", (where + " (RBF) in_features").c_str(), L.desc.in, "features coming in",
                L.in_shape[0]);
    check_at_least("Net", (where + " (RBF) out_features").c_str(), L.desc.out, 1);
    need_constant(L, where, "(RBF) centres", {L.desc.out, L.desc.in});
    L.linear = {1, L.desc.in, L.desc.out};
    return {L.desc.out};
}
void rbf_fwd(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    rbf_forward(out, in, L.desc.constant.data(), {a.n, L.linear.I, L.linear.O});
}
void rbf_bwd(const NetLayer& L, float* dx, float*, float*, const float* in, const float*,
             const float* dy, const BlockArgs& a) {
    if (dx) rbf_backward(dx, in, L.desc.constant.data(), dy, {a.n, L.linear.I, L.linear.O});
}

// ---------------------------------------------------------------- rescale
Shape rescale_setup(NetLayer& L, const std::string& where, std::vector<Shape>&) {
    need_constant(L, where, "(Rescale) scale_shift", {2});
    return L.in_shape;
}
void rescale_fwd(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    rescale_forward(out, in, a.n * L.in_size, L.desc.constant[0], L.desc.constant[1]);
}
void rescale_bwd(const NetLayer& L, float* dx, float*, float*, const float*, const float*,
                 const float* dy, const BlockArgs& a) {
    if (dx) rescale_backward(dx, dy, a.n * L.in_size, L.desc.constant[0]);
}

// ---------------------------------------------------------------- pooling
Shape pool_setup(NetLayer& L, const std::string& where, std::vector<Shape>&) {
    need_planes(L, where, "pool");
    const Shape& s = L.in_shape;
    L.pool = check_pool2d("Net pool", {1, s[0], s[1], s[2]}, L.desc.kernel, L.desc.stride);
    return {s[0], L.pool.out_h(), L.pool.out_w()};
}
void maxpool_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    maxpool2d_forward(out, a.argmax, in, block_pool(L, a.n));
}
void maxpool_backward(const NetLayer& L, float* dx, float*, float*, const float*, const float*,
                      const float* dy, const BlockArgs& a) {
    maxpool2d_backward(dx, dy, a.argmax, a.n, L.in_shape[0], L.in_shape[1], L.in_shape[2],
                       L.out_shape[1], L.out_shape[2]);
}
void avgpool_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    avgpool2d_forward(out, in, block_pool(L, a.n));
}
void avgpool_backward(const NetLayer& L, float* dx, float*, float*, const float*, const float*,
                      const float* dy, const BlockArgs& a) {
    avgpool2d_backward(dx, dy, block_pool(L, a.n));
}

// ---------------------------------------------------------------- linear
Shape linear_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params) {
    if (L.in_shape.size() != 1)
        throw std::invalid_argument("Net: " + where + " (Linear) needs flat input; add a "
                                    "Flatten before it (input " + shape_str(L.in_shape) + ")");
    check_equal("Net", (where + " (Linear) in_features").c_str(), L.desc.in,
                "features coming in", L.in_shape[0]);
    check_at_least("Net", (where + " (Linear) out_features").c_str(), L.desc.out, 1);
    L.linear = {1, L.desc.in, L.desc.out};
    add_params(L, params, {L.desc.out, L.desc.in});
    return {L.desc.out};
}
int64_t linear_ws(const NetLayer& L, int64_t cap) {
    return linear_workspace({cap, L.linear.I, L.linear.O});
}
void linear_fwd(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    linear_forward_rows(out, in, a.w, a.b, {a.n, L.linear.I, L.linear.O}, a.scratch, relu);
}
void linear_bwd(const NetLayer& L, float* dx, float* dw, float* db, const float* in, const float*,
                const float* dy, const BlockArgs& a) {
    linear_backward_rows(dx, dw, db, in, a.w, dy, {a.n, L.linear.I, L.linear.O}, a.scratch);
}

// ---------------------------------------------------------------- element-wise and flatten
template <void (*F)(float*, const float*, int64_t)>
void unary_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    F(out, in, a.n * L.in_size);
}
// ReLU's backward takes the forward input, but out > 0 iff in > 0 (and NaN stays NaN), so it
// reads the output: a ReLU fused into the layer before it leaves no input of its own.
template <void (*F)(float*, const float*, const float*, int64_t)>
void from_output_backward(const NetLayer& L, float* dx, float*, float*, const float*,
                          const float* out, const float* dy, const BlockArgs& a) {
    F(dx, out, dy, a.n * L.in_size);
}
Shape flatten_setup(NetLayer& L, const std::string&, std::vector<Shape>&) { return {numel(L.in_shape)}; }
void flatten_forward(const NetLayer&, float*, const float*, const BlockArgs&, bool) {}
void flatten_backward(const NetLayer&, float*, float*, float*, const float*, const float*,
                      const float*, const BlockArgs&) {}

// ---------------------------------------------------------------- losses
double cross_entropy_sum(float* dout, const float* out, const int64_t* labels, int64_t n,
                         int64_t C, int64_t N, float smoothing) {
    return softmax_cross_entropy_sum(dout, out, labels, n, C, 1.0f / float(N), smoothing);
}
double rbf_map_block_sum(float* dout, const float* out, const int64_t* labels, int64_t n,
                         int64_t C, int64_t N, float) {
    return rbf_map_sum(dout, out, labels, n, C, 1.0f / float(N));
}
double mse_sum(float* dout, const float* out, const int64_t* labels, int64_t n, int64_t C,
               int64_t N, float) {
    return mse_onehot_sum(dout, out, labels, n, C, 2.0f / float(N * C));
}

}  // namespace

const std::vector<LayerKindInfo>& layer_kinds() {
    //  name         in / out / kernel / stride / pad / bias: the attribute each slot comes from
    //               fuses_relu, is_relu, in_place, keeps_argmax, setup, workspace, forward, backward
    static const std::vector<LayerKindInfo> kinds = {
        {"conv2d", {"in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"},
         true, false, false, false, conv_setup, conv_workspace, conv_forward, conv_backward},
        {"maxpool2d", {nullptr, nullptr, "kernel_size", "stride", nullptr, nullptr},
         false, false, false, true, pool_setup, no_workspace, maxpool_forward, maxpool_backward},
        {"avgpool2d", {nullptr, nullptr, "kernel_size", "stride", nullptr, nullptr},
         false, false, false, false, pool_setup, no_workspace, avgpool_forward, avgpool_backward},
        {"relu", {}, false, true, false, false, same_shape, no_workspace,
         unary_forward<relu_forward>, from_output_backward<relu_backward>},
        {"sigmoid", {}, false, false, false, false, same_shape, no_workspace,
         unary_forward<sigmoid_forward>, from_output_backward<sigmoid_backward>},
        {"tanh", {}, false, false, false, false, same_shape, no_workspace,
         unary_forward<tanh_forward>, from_output_backward<tanh_backward>},
        {"flatten", {}, false, false, true, false, flatten_setup, no_workspace, flatten_forward,
         flatten_backward},
        {"linear", {"in_features", "out_features", nullptr, nullptr, nullptr, "bias"},
         true, false, false, false, linear_setup, linear_ws, linear_fwd, linear_bwd},
        // The layers of LeNet5(variant="lecun98").
        {"masked_conv2d", {"in_channels", "out_channels", "kernel_size", "stride", "padding", "bias",
                           "connections"},
         true, false, false, false, masked_conv_setup, masked_conv_workspace, masked_conv_forward,
         masked_conv_backward},
        {"subsample2d", {"channels", nullptr, "kernel_size", "stride", nullptr, "bias"},
         false, false, false, false, subsample_setup, no_workspace, subsample_forward,
         subsample_backward},
        {"scaled_tanh", {}, false, false, false, false, same_shape, no_workspace,
         unary_forward<scaled_tanh_forward>, from_output_backward<scaled_tanh_backward>},
        {"rbf", {"in_features", "out_features", nullptr, nullptr, nullptr, nullptr, "centres"},
         false, false, false, false, rbf_setup, no_workspace, rbf_fwd, rbf_bwd, /*penalty_output=*/true},
        {"rescale", {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, "scale_shift"},
         false, false, false, false, rescale_setup, no_workspace, rescale_fwd, rescale_bwd},
    };
    return kinds;
}

const LayerKindInfo& layer_kind(const std::string& name) {
    std::string known;
    for (const LayerKindInfo& k : layer_kinds()) {
        if (name == k.name) return k;
        known += (known.empty() ? "" : ", ") + std::string(k.name);
    }
    throw std::invalid_argument("Net: unknown layer kind '" + name + "' (expected one of " + known + ")");
}

const std::vector<LossKindInfo>& loss_kinds() {
    static const std::vector<LossKindInfo> kinds = {
        {"cross_entropy", cross_entropy_sum, [](int64_t N, int64_t) { return double(N); },
         /*takes_smoothing=*/true},
        {"mse", mse_sum, [](int64_t N, int64_t C) { return double(N * C); }},
        {"rbf_map", rbf_map_block_sum, [](int64_t N, int64_t) { return double(N); }},
    };
    return kinds;
}

const LossKindInfo& loss_kind(const std::string& name) {
    std::string known;
    for (const LossKindInfo& k : loss_kinds()) {
        if (name == k.name) return k;
        known += (known.empty() ? "'" : "', '") + std::string(k.name);
    }
    throw std::invalid_argument("Net.train_step: loss must be one of " + known + "', got '" + name + "'");
}

}  // namespace pylenet
