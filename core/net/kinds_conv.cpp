// Registry entries of the convolutions: conv2d and LeCun 1998's masked C3 (masked_conv2d).
#include <string>

#include "net/kinds.h"
#include "ops/conv2d.h"
#include "ops/masked_conv2d.h"

namespace pylenet {

namespace {

enum ConvAttr : size_t { kIn, kOut, kKernel, kStride, kPad, kBias, kConnections };

// The chain's own words for what check_conv2d would say in terms of x and w.
void check_fits(const NetLayer& L, const std::string& where) {
    const Shape& s = L.in_shape;
    const LayerDesc& d = L.desc;
    const std::string what = where + " (" + d.kind->class_name + ")";
    check_equal("Net", (what + " in_channels").c_str(), d.i(kIn), "channels coming in", s[0]);
    const int64_t k = d.i(kKernel), hp = s[1] + 2 * d.i(kPad), wp = s[2] + 2 * d.i(kPad);
    if (k > hp || k > wp)
        throw std::invalid_argument("Net: " + what + " kernel_size " + std::to_string(k) +
                                    " is larger than the padded input " + std::to_string(hp) + "x" +
                                    std::to_string(wp));
}

Shape conv_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params,
                 std::vector<Shape>&) {
    need_planes(L, where, "Conv2d");
    check_fits(L, where);
    const Shape& s = L.in_shape;
    const LayerDesc& d = L.desc;
    const Shape w = {d.i(kOut), d.i(kIn), d.i(kKernel), d.i(kKernel)};
    L.conv = check_conv2d({1, s[0], s[1], s[2]}, w, std::nullopt, d.i(kStride), d.i(kPad));
    add_weight_bias(L, params, w, d.b(kBias), d.i(kOut));
    return {L.conv.K, L.conv.out_h(), L.conv.out_w()};
}
int64_t conv_workspace(const NetLayer& L, int64_t n) { return conv2d_workspace(L.conv, n); }
void conv_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    conv2d_forward_images(out, in, a.w, a.b, a.n, L.conv, a.scratch, relu);
}
void conv_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                   const float*, const float* dy, const BlockArgs& a) {
    conv2d_backward_images(dx, dw, db, in, a.w, dy, a.n, L.conv, a.scratch);
}

Shape masked_conv_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params,
                        std::vector<Shape>&) {
    need_planes(L, where, "MaskedConv2d");
    check_fits(L, where);
    const Shape& s = L.in_shape;
    const LayerDesc& d = L.desc;
    const Shape w = {d.i(kOut), d.i(kIn), d.i(kKernel), d.i(kKernel)};
    need_constant(L, where, "(MaskedConv2d) connections", {d.i(kOut), d.i(kIn)});
    L.conv = check_masked_conv2d({1, s[0], s[1], s[2]}, w, d.const_shape, d.constant.data(),
                                 std::nullopt, d.i(kStride), d.i(kPad));
    add_weight_bias(L, params, w, d.b(kBias), d.i(kOut));
    return {L.conv.K, L.conv.out_h(), L.conv.out_w()};
}
int64_t masked_conv_workspace(const NetLayer& L, int64_t n) { return masked_conv2d_workspace(L.conv, n); }
void masked_conv_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    masked_conv2d_forward_images(out, in, a.w, L.desc.constant.data(), a.b, a.n, L.conv, a.scratch, relu);
}
void masked_conv_backward(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                          const float*, const float* dy, const BlockArgs& a) {
    masked_conv2d_backward_images(dx, dw, db, in, a.w, L.desc.constant.data(), dy, a.n, L.conv, a.scratch);
}

}  // namespace

std::vector<LayerKindInfo> conv_kinds() {
    return {
        Kind("conv2d", "Conv2d").torch("Conv2d").onnx("Conv").family(Family::kConv)
            .integer("in_channels", 1).integer("out_channels", 1).integer("kernel_size", 1)
            .integer("stride", 1, 1).integer("padding", 0, 0).boolean("bias", true)
            .params({"weight", "bias"}).fuses_relu()
            .runs(conv_setup, conv_workspace, conv_forward, conv_backward).build(),
        // C3 of LeNet5(variant="lecun98"): output map k reads the input maps c with
        // connections[k][c] == 1.
        Kind("masked_conv2d", "MaskedConv2d").family(Family::kConv)
            .integer("in_channels", 1).integer("out_channels", 1).integer("kernel_size", 1)
            .integer("stride", 1, 1).integer("padding", 0, 0).boolean("bias", true)
            .table("connections", AttrType::kTable).params({"weight", "bias"}).fuses_relu()
            .runs(masked_conv_setup, masked_conv_workspace, masked_conv_forward, masked_conv_backward)
            .build(),
    };
}

}  // namespace pylenet
