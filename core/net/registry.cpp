// The registry: every family's entries in one fixed order, lookups, the attribute checks and
// the losses. The entries themselves live in net/kinds_*.cpp beside their glue code.
#include "net/registry.h"

#include <cmath>
#include <stdexcept>

#include "base/checks.h"
#include "net/kinds.h"
#include "ops/losses.h"

namespace pylenet {

const std::vector<LayerKindInfo>& layer_kinds() {
    static const std::vector<LayerKindInfo> kinds = [] {
        std::vector<LayerKindInfo> all;
        for (auto family : {conv_kinds, pool_kinds, dense_kinds, elementwise_kinds, norm_kinds})
            for (LayerKindInfo& k : family()) all.push_back(std::move(k));
        return all;
    }();
    return kinds;
}

const LayerKindInfo& layer_kind(const std::string& name) {
    std::string known;
    for (const LayerKindInfo& k : layer_kinds()) {
        if (name == k.name) return k;
        known += (known.empty() ? "" : ", ") + k.name;
    }
    throw std::invalid_argument("Net: unknown layer kind '" + name + "' (expected one of " + known + ")");
}

size_t LayerKindInfo::attr(const std::string& attr_name) const {
    for (size_t i = 0; i < attrs.size(); i++)
        if (attrs[i].name == attr_name) return i;
    throw std::invalid_argument(class_name + " has no attribute '" + attr_name + "'");
}

LayerDesc make_layer(const std::string& kind, const std::vector<std::pair<std::string, double>>& values) {
    LayerDesc d;
    d.kind = &layer_kind(kind);
    const LayerKindInfo& k = *d.kind;
    d.values.assign(k.attrs.size(), 0.0);
    std::vector<bool> given(k.attrs.size(), false);
    for (const auto& [name, value] : values) {
        const size_t i = k.attr(name);
        d.values[i] = value;
        given[i] = true;
    }
    for (size_t i = 0; i < k.attrs.size(); i++) {
        const AttrInfo& a = k.attrs[i];
        if (given[i]) continue;
        if (!a.default_from.empty())
            d.values[i] = d.values[k.attr(a.default_from)];
        else if (a.type == AttrType::kTable || a.type == AttrType::kMatrix)
            d.values[i] = std::nan("");
        else if (a.required)
            throw std::invalid_argument(k.class_name + ": " + a.name + " is required");
        else
            d.values[i] = a.fallback;
    }
    return d;
}

void check_attrs(const LayerDesc& d) {
    const LayerKindInfo& k = *d.kind;
    if (d.values.size() != k.attrs.size())
        throw std::invalid_argument(k.class_name + ": expected " + std::to_string(k.attrs.size()) +
                                    " attribute values, got " + std::to_string(d.values.size()));
    bool has_table = false;
    for (size_t i = 0; i < k.attrs.size(); i++) {
        const AttrInfo& a = k.attrs[i];
        const double v = d.values[i];
        const std::string what = k.class_name + ": " + a.name;
        if (a.type == AttrType::kTable || a.type == AttrType::kMatrix) {
            has_table = true;
            for (float c : d.constant) {
                if (a.type == AttrType::kTable && c != 0.0f && c != 1.0f)
                    throw std::invalid_argument(what + " must hold only 0 and 1");
                if (!std::isfinite(c)) throw std::invalid_argument(what + " must hold finite numbers");
            }
            continue;
        }
        if (std::isnan(v)) throw std::invalid_argument(what + " must be a number, got nan");
        if (a.type == AttrType::kInt && v != std::floor(v))
            throw std::invalid_argument(what + " must be an int, got " + num_str(v));
        if (a.lo == a.hi && v != a.lo)
            throw std::invalid_argument(what + " must be " + num_str(a.lo) + " (the only value pylenet "
                                        "supports), got " + num_str(v));
        const bool low = a.lo_open ? !(v > a.lo) : !(v >= a.lo);
        const bool high = a.hi_open ? !(v < a.hi) : !(v <= a.hi);
        if (low || high) {
            std::string range;
            if (a.hi >= 1e300)
                range = (a.lo_open ? "> " : ">= ") + num_str(a.lo);
            else if (a.lo <= -1e300)
                range = (a.hi_open ? "< " : "<= ") + num_str(a.hi);
            else
                range = std::string("in ") + (a.lo_open ? "(" : "[") + num_str(a.lo) + ", " + num_str(a.hi) +
                        (a.hi_open ? ")" : "]");
            throw std::invalid_argument(what + " must be " + range + ", got " + num_str(v));
        }
    }
    if (!has_table && !d.constant.empty())
        throw std::invalid_argument(k.class_name + " takes no table, got one of shape " +
                                    shape_str(d.const_shape));
}

Shape layer_output_shape(const LayerDesc& d, const Shape& in_shape) {
    check_attrs(d);
    NetLayer L;
    L.desc = d;
    L.in_shape = in_shape;
    L.in_size = numel(in_shape);
    std::vector<Shape> params, buffers;
    return d.kind->setup(L, d.kind->class_name, params, buffers);
}

// ------------------------------------------------------------------------- shared glue

void need_planes(const NetLayer& L, const std::string& where, const char* what) {
    if (L.in_shape.size() != 3)
        throw std::invalid_argument("Net: " + where + " (" + what + ") needs (C, H, W) input, got " +
                                    shape_str(L.in_shape));
}

void need_flat(const NetLayer& L, const std::string& where, const char* what) {
    if (L.in_shape.size() != 1)
        throw std::invalid_argument("Net: " + where + " (" + what + ") needs flat input; add a "
                                    "Flatten before it (input " + shape_str(L.in_shape) + ")");
}

void need_constant(const NetLayer& L, const std::string& where, const char* what, const Shape& want) {
    if (L.desc.const_shape != want)
        throw std::invalid_argument("Net: " + where + " " + what + " must have shape " +
                                    shape_str(want) + ", got " +
                                    (L.desc.const_shape.empty() ? std::string("none")
                                                                : shape_str(L.desc.const_shape)));
}

void add_weight_bias(NetLayer& L, std::vector<Shape>& params, const Shape& w, bool has_bias,
                     int64_t bias) {
    L.weight = int(params.size());
    params.push_back(w);
    if (has_bias) {
        L.bias = int(params.size());
        params.push_back({bias});
    }
}

Shape same_shape(NetLayer& L, const std::string&, std::vector<Shape>&, std::vector<Shape>&) {
    return L.in_shape;
}

int64_t no_workspace(const NetLayer&, int64_t) { return 0; }

// ------------------------------------------------------------------------- losses

const std::vector<LossKindInfo>& loss_kinds() {
    static const std::vector<LossKindInfo> kinds = {
        {"cross_entropy", LossKind::kCrossEntropy, true, [](int64_t N, int64_t) { return 1.0f / float(N); },
         [](int64_t N, int64_t) { return double(N); }},
        {"mse", LossKind::kMse, false, [](int64_t N, int64_t C) { return 2.0f / float(N * C); },
         [](int64_t N, int64_t C) { return double(N * C); }},
        {"rbf_map", LossKind::kRbfMap, false, [](int64_t N, int64_t) { return 1.0f / float(N); },
         [](int64_t N, int64_t) { return double(N); }},
    };
    return kinds;
}

const LossKindInfo& loss_kind(const std::string& name) {
    std::string known;
    for (const LossKindInfo& k : loss_kinds()) {
        if (name == k.name) return k;
        known += (known.empty() ? "'" : "', '") + k.name;
    }
    throw std::invalid_argument("Net.train_step: loss must be one of " + known + "', got '" + name + "'");
}

double loss_block_sum(const LossKindInfo& loss, float* dout, const float* out,
                      const int64_t* labels, int64_t n, int64_t C, int64_t N, float smoothing) {
    const float scale = loss.scale(N, C);
    double total = 0.0;
    for (int64_t r = 0; r < n; r++)
        total += loss_row(loss.kind, dout + r * C, out + r * C, labels[r], C, scale, smoothing);
    return total;
}

void check_loss_smoothing(const char* op, const LossKindInfo& loss, double smoothing) {
    check_label_smoothing(op, smoothing);
    if (smoothing != 0.0 && !loss.takes_smoothing)
        throw std::invalid_argument(std::string(op) + ": label smoothing applies to cross_entropy, not to the loss '" +
                                    loss.name + "' (got " + num_str(smoothing) + ")");
}

}  // namespace pylenet
