// Registry entries of the layers on flat features: flatten, linear and LeCun 1998's RBF output.
#include "net/kinds.h"
#include "ops/linear.h"
#include "ops/rbf.h"

namespace pylenet {

namespace {

Shape flatten_setup(NetLayer& L, const std::string&, std::vector<Shape>&, std::vector<Shape>&) {
    return {numel(L.in_shape)};
}
void flatten_forward(const NetLayer&, float*, const float*, const BlockArgs&, bool) {}
void flatten_backward(const NetLayer&, float*, float*, float*, const float*, const float*,
                      const float*, const BlockArgs&) {}

enum LinearAttr : size_t { kIn, kOut, kBias };

Shape linear_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params,
                   std::vector<Shape>&) {
    need_flat(L, where, "Linear");
    const LayerDesc& d = L.desc;
    check_equal("Net", (where + " (Linear) in_features").c_str(), d.i(kIn), "features coming in",
                L.in_shape[0]);
    L.linear = {1, d.i(kIn), d.i(kOut)};
    add_weight_bias(L, params, {d.i(kOut), d.i(kIn)}, d.b(kBias), d.i(kOut));
    return {d.i(kOut)};
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

enum RbfAttr : size_t { kRbfIn, kRbfOut, kCentres };

Shape rbf_setup(NetLayer& L, const std::string& where, std::vector<Shape>&, std::vector<Shape>&) {
    if (L.in_shape.size() != 1)
        throw std::invalid_argument("Net: " + where + " (RBF) needs flat input (input " +
                                    shape_str(L.in_shape) + ")");
    const LayerDesc& d = L.desc;
    check_equal("Net", (where + " (RBF) in_features").c_str(), d.i(kRbfIn), "features coming in",
                L.in_shape[0]);
    need_constant(L, where, "(RBF) centres", {d.i(kRbfOut), d.i(kRbfIn)});
    L.linear = {1, d.i(kRbfIn), d.i(kRbfOut)};
    return {d.i(kRbfOut)};
}
void rbf_fwd(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    rbf_forward(out, in, L.desc.constant.data(), {a.n, L.linear.I, L.linear.O});
}
void rbf_bwd(const NetLayer& L, float* dx, float*, float*, const float* in, const float*,
             const float* dy, const BlockArgs& a) {
    if (dx) rbf_backward(dx, in, L.desc.constant.data(), dy, {a.n, L.linear.I, L.linear.O});
}

}  // namespace

std::vector<LayerKindInfo> dense_kinds() {
    return {
        Kind("flatten", "Flatten").torch("Flatten").onnx("Flatten").family(Family::kFlatten)
            .in_place().runs(flatten_setup, no_workspace, flatten_forward, flatten_backward).build(),
        Kind("linear", "Linear").torch("Linear").onnx("Gemm").family(Family::kLinear)
            .integer("in_features", 1).integer("out_features", 1).boolean("bias", true)
            .params({"weight", "bias"}).fuses_relu()
            .runs(linear_setup, linear_ws, linear_fwd, linear_bwd).build(),
        // The output of LeNet5(variant="lecun98"): penalties y_i = sum_j (x_j - centres[i][j])^2.
        Kind("rbf", "RBF").family(Family::kRbf)
            .integer("in_features", 1).integer("out_features", 1).table("centres", AttrType::kMatrix)
            .penalty_output().runs(rbf_setup, no_workspace, rbf_fwd, rbf_bwd).build(),
    };
}

}  // namespace pylenet
