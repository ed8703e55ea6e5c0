// Registry entries of the poolings: max, average, LeCun 1998's trainable subsampling, and
// global average pooling (AdaptiveAvgPool2d(1)).
#include "net/kinds.h"
#include "ops/pool2d.h"
#include "ops/subsample2d.h"

namespace pylenet {

namespace {

enum PoolAttr : size_t { kKernel, kStride };

// The layer's pooling parameters for a block of n samples.
Pool2dParams block_pool(const NetLayer& L, int64_t n) {
    Pool2dParams p = L.pool;
    p.N = n;
    return p;
}

Shape pool_setup(NetLayer& L, const std::string& where, std::vector<Shape>&, std::vector<Shape>&) {
    need_planes(L, where, L.desc.kind->class_name.c_str());
    const Shape& s = L.in_shape;
    L.pool = check_pool2d(("Net: " + where + " (" + L.desc.kind->class_name + ")").c_str(),
                          {1, s[0], s[1], s[2]}, L.desc.i(kKernel), L.desc.i(kStride));
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

enum SubsampleAttr : size_t { kChannels, kSubKernel, kSubStride, kBias };

Shape subsample_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params,
                      std::vector<Shape>&) {
    need_planes(L, where, "Subsample2d");
    const Shape& s = L.in_shape;
    const LayerDesc& d = L.desc;
    check_equal("Net", (where + " (Subsample2d) channels").c_str(), d.i(kChannels), "maps coming in", s[0]);
    const Shape b = {s[0]};
    L.pool = check_subsample2d({1, s[0], s[1], s[2]}, {s[0]},
                               d.b(kBias) ? std::optional<Shape>(b) : std::nullopt,
                               d.i(kSubKernel), d.i(kSubStride));
    add_weight_bias(L, params, {s[0]}, d.b(kBias), s[0]);
    return {s[0], L.pool.out_h(), L.pool.out_w()};
}
void subsample_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    subsample2d_forward(out, in, a.w, a.b, block_pool(L, a.n));
}
void subsample_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                        const float*, const float* dy, const BlockArgs& a) {
    subsample2d_backward_images(dx, dw, db, in, a.w, dy, block_pool(L, a.n));
}

// Global average pooling: (C, H, W) -> (C, 1, 1), as PyTorch's AdaptiveAvgPool2d(1).
Shape global_setup(NetLayer& L, const std::string& where, std::vector<Shape>&, std::vector<Shape>&) {
    need_planes(L, where, "AdaptiveAvgPool2d");
    return {L.in_shape[0], 1, 1};
}
void global_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    global_avgpool2d_forward(out, in, a.n, L.in_shape[0], L.in_shape[1] * L.in_shape[2]);
}
void global_backward(const NetLayer& L, float* dx, float*, float*, const float*, const float*,
                     const float* dy, const BlockArgs& a) {
    if (dx) global_avgpool2d_backward(dx, dy, a.n, L.in_shape[0], L.in_shape[1] * L.in_shape[2]);
}

}  // namespace

std::vector<LayerKindInfo> pool_kinds() {
    return {
        Kind("maxpool2d", "MaxPool2d").torch("MaxPool2d").onnx("MaxPool").family(Family::kMaxPool)
            .integer("kernel_size", 1, 2).integer_from("stride", 1, "kernel_size").keeps_argmax()
            .runs(pool_setup, no_workspace, maxpool_forward, maxpool_backward).build(),
        Kind("avgpool2d", "AvgPool2d").torch("AvgPool2d").onnx("AveragePool").family(Family::kAvgPool)
            .integer("kernel_size", 1, 2).integer_from("stride", 1, "kernel_size")
            .runs(pool_setup, no_workspace, avgpool_forward, avgpool_backward).build(),
        // S2 and S4 of LeNet5(variant="lecun98"): y[c] = weight[c] * window sum + bias[c].
        Kind("subsample2d", "Subsample2d").family(Family::kSubsample)
            .integer("channels", 1).integer("kernel_size", 1, 2).integer_from("stride", 1, "kernel_size")
            .boolean("bias", true).params({"weight", "bias"})
            .runs(subsample_setup, no_workspace, subsample_forward, subsample_backward).build(),
        Kind("global_avgpool2d", "AdaptiveAvgPool2d").torch("AdaptiveAvgPool2d")
            .onnx("GlobalAveragePool").family(Family::kGlobalAvgPool).fixed("output_size", 1)
            .runs(global_setup, no_workspace, global_forward, global_backward).build(),
    };
}

}  // namespace pylenet
