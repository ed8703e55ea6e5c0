// Registry entries of the layers that behave differently in training and evaluation:
// BatchNorm2d and BatchNorm1d (batch statistics over the whole batch, running statistics in
// evaluation) and Dropout (a hashed mask in training, the identity in evaluation).
#include <algorithm>
#include <cstring>

#include "net/kinds.h"
#include "ops/batchnorm.h"
#include "ops/dropout.h"

namespace pylenet {

namespace {

enum BatchNormAttr : size_t { kFeatures, kEps, kMomentum, kAffine };

// The layer's BatchNormParams for a batch of N samples.
BatchNormParams bn_params(const NetLayer& L, int64_t N) {
    BatchNormParams p;
    p.N = N;
    p.C = L.desc.i(kFeatures);
    p.HW = L.in_shape.size() == 3 ? L.in_shape[1] * L.in_shape[2] : 1;
    p.eps = L.desc.values[kEps];
    p.momentum = L.desc.values[kMomentum];
    return p;
}

Shape bn_setup(NetLayer& L, const std::string& where, std::vector<Shape>& params,
               std::vector<Shape>& buffers) {
    const LayerDesc& d = L.desc;
    const bool planes = d.kind->name == "batchnorm2d";
    if (planes)
        need_planes(L, where, "BatchNorm2d");
    else if (L.in_shape.size() != 1)
        throw std::invalid_argument("Net: " + where + " (BatchNorm1d) needs flat input (N, C); for "
                                    "(C, H, W) maps use BatchNorm2d (input " + shape_str(L.in_shape) + ")");
    check_equal("Net", (where + " (" + d.kind->class_name + ") num_features").c_str(), d.i(kFeatures),
                "channels coming in", L.in_shape[0]);
    if (d.b(kAffine)) add_weight_bias(L, params, {d.i(kFeatures)}, true, d.i(kFeatures));
    L.buffer = int(buffers.size());
    buffers.push_back({d.i(kFeatures)});  // running_mean
    buffers.push_back({d.i(kFeatures)});  // running_var
    return L.in_shape;
}
int64_t bn_workspace(const NetLayer& L, int64_t) { return 2 * L.desc.i(kFeatures); }
int64_t bn_stat_size(const NetLayer& L) { return 2 * L.desc.i(kFeatures); }
// The batch state: mean, invstd, scale and shift, C floats each.
int64_t bn_state_size(const NetLayer& L) { return 4 * L.desc.i(kFeatures); }

void bn_forward_stats(const NetLayer& L, int pass, double* s, const float* in, int64_t n,
                      const float* state) {
    const BatchNormParams p = bn_params(L, n);
    if (pass == 0)
        batchnorm_sum(s, in, n, p);
    else
        batchnorm_sum_sq(s, in, state, n, p);
}

void bn_forward_combine(const NetLayer& L, int pass, const double* total, int64_t N, float* state,
                        float* const* buffers, const float* w, const float* b) {
    const BatchNormParams p = bn_params(L, N);
    float *mean = state, *invstd = state + p.C, *scale = state + 2 * p.C, *shift = state + 3 * p.C;
    if (pass == 0) {
        batchnorm_mean(mean, total, p);
        return;
    }
    batchnorm_invstd(invstd, buffers[0], buffers[1], mean, total, p);
    batchnorm_affine(scale, shift, mean, invstd, w, b, p.C);
}

// Training: the batch state's scale and shift; evaluation: the running statistics'.
void bn_forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu) {
    const BatchNormParams p = bn_params(L, a.n);
    if (a.training) {
        batchnorm_apply(out, in, a.state + 2 * p.C, a.state + 3 * p.C, a.n, p, relu);
        return;
    }
    batchnorm_eval_affine(a.scratch, a.scratch + p.C, a.buffers[0], a.buffers[1], a.w, a.b, p);
    batchnorm_apply(out, in, a.scratch, a.scratch + p.C, a.n, p, relu);
}

void bn_backward_stats(const NetLayer& L, double* s, const float* in, const float* dy, int64_t n,
                       const float* state) {
    batchnorm_backward_sums(s, in, dy, state, n, bn_params(L, n));
}

void bn_backward_combine(const NetLayer& L, const double* total, int64_t, const float* state,
                         float* dw, float* db) {
    const int64_t C = L.desc.i(kFeatures);
    batchnorm_param_grads(dw, db, state + C, total, C);
}

// Training: from the batch's sums (the weight gradients came from backward_combine);
// evaluation: the affine map's dx = scale dy (input gradients of a trained network).
void bn_backward(const NetLayer& L, float* dx, float*, float*, const float* in, const float*,
                 const float* dy, const BlockArgs& a) {
    if (!dx) return;
    const BatchNormParams p = bn_params(L, a.n);
    if (a.training) {
        const BatchNormParams whole = bn_params(L, a.batch);  // M = the whole batch's values
        batchnorm_backward_apply(dx, in, dy, a.state, a.state + p.C, a.w, a.batch_sums, a.n, whole);
        return;
    }
    batchnorm_eval_affine(a.scratch, a.scratch + p.C, a.buffers[0], a.buffers[1], a.w, nullptr, p);
    std::fill(a.scratch + p.C, a.scratch + 2 * p.C, 0.0f);
    batchnorm_apply(dx, dy, a.scratch, a.scratch + p.C, a.n, p, false);
}

Kind batchnorm(const char* name, const char* class_name) {
    Kind k(name, class_name);
    k.torch(class_name).onnx("BatchNormalization").family(Family::kBatchNorm)
        .integer("num_features", 1).real("eps", 0.0, 1e300, true, false, 1e-5)
        .real("momentum", 0.0, 1.0, false, false, 0.1).boolean("affine", true)
        .params({"weight", "bias"}).buffers({"running_mean", "running_var"}).fuses_relu()
        .runs(bn_setup, bn_workspace, bn_forward, bn_backward);
    LayerKindInfo& info = k.info();
    info.stat_passes = 2;
    info.stat_size = bn_stat_size;
    info.state_size = bn_state_size;
    info.forward_stats = bn_forward_stats;
    info.forward_combine = bn_forward_combine;
    info.backward_stats = bn_backward_stats;
    info.backward_combine = bn_backward_combine;
    return k;
}

enum DropoutAttr : size_t { kP };

void dropout_fwd(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    if (a.training)
        dropout_forward(out, in, a.n, L.in_size, L.desc.values[kP], a.noise, a.sample0);
    else
        std::memcpy(out, in, sizeof(float) * size_t(a.n * L.in_size));
}
void dropout_bwd(const NetLayer& L, float* dx, float*, float*, const float*, const float*,
                 const float* dy, const BlockArgs& a) {
    if (!dx) return;
    if (a.training)
        dropout_backward(dx, dy, a.n, L.in_size, L.desc.values[kP], a.noise, a.sample0);
    else
        std::memcpy(dx, dy, sizeof(float) * size_t(a.n * L.in_size));
}

}  // namespace

std::vector<LayerKindInfo> norm_kinds() {
    return {
        batchnorm("batchnorm2d", "BatchNorm2d").build(),
        batchnorm("batchnorm1d", "BatchNorm1d").build(),
        Kind("dropout", "Dropout").torch("Dropout").onnx("Dropout").family(Family::kDropout)
            .real("p", 0.0, 1.0, false, false, 0.5)
            .runs(same_shape, no_workspace, dropout_fwd, dropout_bwd).build(),
    };
}

}  // namespace pylenet
