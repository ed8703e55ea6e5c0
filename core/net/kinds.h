// What the registry's entry files (net/kinds_*.cpp) share: a builder that writes an entry as
// a short list of what it is, and the checks their shape rules use. Internal to core/net.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "net/registry.h"

namespace pylenet {

// Builds one LayerKindInfo: Kind("conv2d", "Conv2d").torch("Conv2d").onnx("Conv")
// .integer("in_channels", 1)... Attributes are listed in constructor order.
class Kind {
public:
    Kind(const char* name, const char* class_name) {
        k_.name = name;
        k_.class_name = class_name;
    }
    Kind& torch(const char* cls) { k_.torch = cls; return *this; }
    Kind& onnx(const char* op) { k_.onnx = op; return *this; }
    Kind& family(Family f) { k_.family = f; return *this; }
    // An int attribute >= lo: required, or with a default.
    Kind& integer(const char* name, double lo) { return add(name, AttrType::kInt, lo, 1e300, true, 0.0); }
    Kind& integer(const char* name, double lo, double fallback) {
        return add(name, AttrType::kInt, lo, 1e300, false, fallback);
    }
    // An int attribute >= lo whose default is attribute `from`'s value.
    Kind& integer_from(const char* name, double lo, const char* from) {
        add(name, AttrType::kInt, lo, 1e300, false, 0.0);
        k_.attrs.back().default_from = from;
        return *this;
    }
    // An int attribute that must equal `only` (PyTorch's argument that pylenet fixes).
    Kind& fixed(const char* name, double only) { return add(name, AttrType::kInt, only, only, false, only); }
    Kind& boolean(const char* name, bool fallback) {
        return add(name, AttrType::kBool, 0, 1, false, fallback ? 1.0 : 0.0);
    }
    // A float attribute in [lo, hi] (open ends as given), required when fallback is null.
    Kind& real(const char* name, double lo, double hi, bool lo_open, bool hi_open, double fallback) {
        add(name, AttrType::kFloat, lo, hi, false, fallback);
        k_.attrs.back().lo_open = lo_open;
        k_.attrs.back().hi_open = hi_open;
        return *this;
    }
    Kind& real(const char* name) { return add(name, AttrType::kFloat, -1e300, 1e300, true, 0.0); }
    // The last attribute's ONNX attribute name (element-wise kinds: LeakyRelu's alpha).
    Kind& onnx_attr(const char* name) { k_.attrs.back().onnx = name; return *this; }
    Kind& table(const char* name, AttrType type) { return add(name, type, 0, 0, true, 0.0); }
    Kind& params(std::vector<std::string> names) { k_.params = std::move(names); return *this; }
    Kind& buffers(std::vector<std::string> names) { k_.buffers = std::move(names); return *this; }
    Kind& fuses_relu() { k_.fuses_relu = true; return *this; }
    Kind& in_place() { k_.in_place = true; return *this; }
    Kind& keeps_argmax() { k_.keeps_argmax = true; return *this; }
    Kind& penalty_output() { k_.penalty_output = true; return *this; }
    Kind& unary(Unary u) { k_.unary = u; return *this; }
    Kind& runs(decltype(LayerKindInfo::setup) setup, decltype(LayerKindInfo::workspace) workspace,
               decltype(LayerKindInfo::forward) forward, decltype(LayerKindInfo::backward) backward) {
        k_.setup = setup;
        k_.workspace = workspace;
        k_.forward = forward;
        k_.backward = backward;
        return *this;
    }
    LayerKindInfo& info() { return k_; }
    LayerKindInfo build() const { return k_; }

private:
    Kind& add(const char* name, AttrType t, double lo, double hi, bool required, double fallback) {
        AttrInfo a;
        a.name = name;
        a.type = t;
        a.lo = lo;
        a.hi = hi;
        a.required = required;
        a.fallback = fallback;
        k_.attrs.push_back(a);
        return *this;
    }
    LayerKindInfo k_;
};

// The entries of each family, in a fixed order (the registry concatenates them).
std::vector<LayerKindInfo> conv_kinds();         // conv2d, masked_conv2d
std::vector<LayerKindInfo> pool_kinds();         // maxpool2d, avgpool2d, subsample2d, global_avgpool2d
std::vector<LayerKindInfo> dense_kinds();        // flatten, linear, rbf
std::vector<LayerKindInfo> elementwise_kinds();  // relu, sigmoid, tanh, scaled_tanh, rescale, ...
std::vector<LayerKindInfo> norm_kinds();         // batchnorm2d, batchnorm1d, dropout

// Shape-rule helpers ("Net: <where> (<what>) ..." messages).
void need_planes(const NetLayer& L, const std::string& where, const char* what);
void need_flat(const NetLayer& L, const std::string& where, const char* what);
// The layer's fixed table must have shape `want`.
void need_constant(const NetLayer& L, const std::string& where, const char* what, const Shape& want);
// Appends the weight `w` (and a bias of `bias` entries when the layer has one) to params.
void add_weight_bias(NetLayer& L, std::vector<Shape>& params, const Shape& w, bool has_bias,
                     int64_t bias);
Shape same_shape(NetLayer& L, const std::string&, std::vector<Shape>&, std::vector<Shape>&);
int64_t no_workspace(const NetLayer&, int64_t);

}  // namespace pylenet
