// C++ tests of the GPU part on a machine without a GPU: every kernel's per-element functor
// (core/cuda/element.h) run over its whole launch grid on the host, against the core's naive
// oracles, on shapes with odd sizes, strides, paddings and overlapping pool windows; then the
// emulated GpuNet against the CPU Net (forward, backward, a training step with each loss and
// optimiser), determinism, the non-finite rules, and allocations that fail (a device out of
// memory) in the middle of a resize. Exits non-zero when any check fails.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "cuda/element.h"
#include "cuda/host_backend.h"
#include "cuda/net_impl.h"
#include "cuda/gpu.h"
#include "net/net.h"
#include "net/registry.h"
#include "ops/activations.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#include "ops/losses.h"
#include "ops/masked_conv2d.h"
#include "ops/optim.h"
#include "ops/pool2d.h"
#include "ops/preprocess.h"
#include "ops/rbf.h"
#include "ops/subsample2d.h"
#include "oracle/activations.h"
#include "oracle/conv2d.h"
#include "oracle/linear.h"
#include "oracle/losses.h"
#include "oracle/masked_conv2d.h"
#include "oracle/pool2d.h"
#include "oracle/rbf.h"
#include "oracle/subsample2d.h"

using namespace pylenet;
using namespace pylenet_test;
using namespace pylenet::gpu;

namespace {

// The launch grid of one kernel, on the host: f(i) for every i < n (what a GPU does, one
// thread per index).
template <class F>
void grid(int64_t n, const F& f) {
    for (int64_t i = 0; i < n; i++) f(i);
}

ConvGeom geom(const Conv2dParams& p) {
    return {p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.stride, p.pad, p.out_h(), p.out_w()};
}
PoolGeom geom(const Pool2dParams& p) { return {p.N, p.C, p.H, p.W, p.kernel, p.stride, p.out_h(), p.out_w()}; }

// dw, db from the chunk kernel and the in-order reduction, as net_impl.h runs them.
template <class Chunks>
std::vector<float> chunked(int64_t E, int64_t T, Chunks make) {
    std::vector<float> part(size_t(E * T), NAN), out(size_t(E), NAN);
    grid(E * T, make(part.data()));
    grid(E, ReduceChunks{out.data(), part.data(), E, T});
    return out;
}

void test_conv(std::mt19937& rng) {
    struct Case { int64_t N, C, H, W, K, R, S, stride, pad; bool masked; };
    const Case cases[] = {{1, 1, 32, 32, 6, 5, 5, 1, 0, false}, {3, 6, 14, 14, 16, 5, 5, 1, 0, true},
                          {2, 3, 17, 13, 4, 3, 5, 2, 1, false}, {3, 2, 7, 9, 5, 3, 3, 3, 2, false},
                          {1, 1, 1, 1, 1, 1, 1, 1, 0, false},   {5, 4, 6, 5, 3, 2, 4, 1, 2, true},
                          {17, 2, 9, 11, 3, 5, 5, 2, 2, false}, {2, 3, 5, 5, 2, 5, 5, 1, 0, false},
                          {40, 2, 8, 8, 2, 3, 3, 1, 1, false},  // 40*64 terms: several chunks
                          {2, 11, 6, 6, 19, 3, 3, 1, 1, true}};  // channel blocks of 8 and a rest
    for (const Case& c : cases) {
        const Shape xs = {c.N, c.C, c.H, c.W}, ws = {c.K, c.C, c.R, c.S};
        const Conv2dParams p = check_conv2d(xs, ws, Shape{c.K}, c.stride, c.pad);
        const std::string tag = std::string(c.masked ? "masked " : "") + "conv " + shape_str(xs) + " w " +
                                shape_str(ws) + " stride " + std::to_string(c.stride) + " pad " +
                                std::to_string(c.pad);
        auto x = randn(size_t(numel(xs)), rng), w = randn(size_t(numel(ws)), rng), b = randn(size_t(c.K), rng);
        std::vector<float> mask(size_t(c.K * c.C), 1.0f);
        if (c.masked)
            for (size_t i = 0; i < mask.size(); i++) mask[i] = float((i * 7 + 3) % 3 != 0);
        const float* m = c.masked ? mask.data() : nullptr;
        const ConvGeom g = geom(p);
        const size_t ny = size_t(c.N * c.K * g.P * g.Q);
        std::vector<float> y(ny, NAN), y_ref(ny);
        const int64_t out_grid = c.N * channel_blocks(c.K) * g.P * g.Q;
        const int64_t in_grid = c.N * channel_blocks(c.C) * c.H * c.W;
        grid(out_grid, ConvForward{y.data(), x.data(), w.data(), b.data(), m, g, false});
        if (m) masked_conv2d_forward_naive(y_ref.data(), x.data(), w.data(), m, b.data(), p);
        else conv2d_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-5, tag + " forward");

        std::vector<float> yr(ny, NAN), yr_ref(ny);
        grid(out_grid, ConvForward{yr.data(), x.data(), w.data(), b.data(), m, g, true});
        for (size_t i = 0; i < ny; i++) yr_ref[i] = y_ref[i] > 0 ? y_ref[i] : 0.0f;
        expect(max_rel_err(yr, yr_ref) < 1e-5, tag + " forward with ReLU");

        auto dy = randn(ny, rng);
        std::vector<float> dx(x.size(), NAN), dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
        grid(in_grid, ConvBackwardInput{dx.data(), dy.data(), w.data(), m, g});
        if (m) masked_conv2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), m, dy.data(), p);
        else conv2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-5, tag + " dx");
        const int64_t E = int64_t(w.size() + b.size()), T = chunks_of(c.N * g.P * g.Q);
        std::vector<float> dwb = chunked(E, T, [&](float* part) {
            return ConvWeightChunks{part, x.data(), dy.data(), m, g, E};
        });
        std::vector<float> dw(dwb.begin(), dwb.begin() + long(w.size())), db(dwb.begin() + long(w.size()), dwb.end());
        expect(max_rel_err(dw, dw_ref) < 1e-4, tag + " dw (" + std::to_string(T) + " chunks)");
        expect(max_rel_err(db, db_ref) < 1e-4, tag + " db");
    }
}

void test_pool(std::mt19937& rng) {
    struct Case { int64_t N, C, H, W, k, s; };
    for (const Case& c : {Case{2, 6, 28, 28, 2, 2}, Case{3, 2, 7, 9, 3, 2}, Case{1, 1, 5, 5, 2, 1},
                          Case{2, 3, 6, 6, 3, 1}, Case{1, 2, 5, 7, 2, 3}, Case{1, 1, 1, 1, 1, 1}}) {
        const Shape xs = {c.N, c.C, c.H, c.W};
        const Pool2dParams p = check_pool2d("test", xs, c.k, c.s);
        const PoolGeom g = geom(p);
        const std::string tag = "pool " + shape_str(xs) + " k" + std::to_string(c.k) + " s" + std::to_string(c.s);
        auto x = randn(size_t(numel(xs)), rng);
        // Ties: repeat some values, so the first-max rule is exercised.
        for (size_t i = 1; i < x.size(); i += 5) x[i] = x[i - 1];
        const size_t ny = size_t(c.N * c.C * g.P * g.Q);
        std::vector<float> y(ny, NAN), y_ref(ny);
        std::vector<int32_t> am(ny, -1), am_ref(ny);
        grid(int64_t(ny), MaxPoolForward{y.data(), am.data(), x.data(), g});
        maxpool2d_forward_naive(y_ref.data(), am_ref.data(), x.data(), p);
        expect(max_rel_err(y, y_ref) == 0.0 && am == am_ref, tag + " max forward and argmax");
        auto dy = randn(ny, rng);
        std::vector<float> dx(x.size(), NAN), dx_ref(x.size());
        grid(int64_t(x.size()), MaxPoolBackward{dx.data(), dy.data(), am.data(), nullptr, g});
        maxpool2d_backward_naive(dx_ref.data(), dy.data(), am_ref.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-6, tag + " max backward (gather)");
        // With a ReLU's output as the pool's input, its backward folded in.
        grid(int64_t(x.size()), MaxPoolBackward{dx.data(), dy.data(), am.data(), x.data(), g});
        for (size_t i = 0; i < x.size(); i++) dx_ref[i] = x[i] <= 0.0f ? 0.0f : dx_ref[i];
        expect(max_rel_err(dx, dx_ref) < 1e-6, tag + " max backward with the ReLU folded in");

        grid(int64_t(ny), AvgPoolForward{y.data(), x.data(), nullptr, nullptr, g});
        avgpool2d_forward_naive(y_ref.data(), x.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-6, tag + " avg forward");
        grid(int64_t(x.size()), AvgPoolBackward{dx.data(), dy.data(), nullptr, g});
        avgpool2d_backward_naive(dx_ref.data(), dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-6, tag + " avg backward");

        if (c.s > c.k) continue;  // trainable subsampling: the same windows
        auto w = randn(size_t(c.C), rng), b = randn(size_t(c.C), rng);
        grid(int64_t(ny), AvgPoolForward{y.data(), x.data(), w.data(), b.data(), g});
        subsample2d_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-5, tag + " subsample forward");
        std::vector<float> dw_ref(w.size()), db_ref(b.size());
        grid(int64_t(x.size()), AvgPoolBackward{dx.data(), dy.data(), w.data(), g});
        subsample2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-5, tag + " subsample dx");
        const int64_t E = 2 * c.C, T = chunks_of(c.N * g.P * g.Q);
        std::vector<float> dwb = chunked(E, T, [&](float* part) {
            return SubsampleWeightChunks{part, x.data(), dy.data(), g, E};
        });
        std::vector<float> dw(dwb.begin(), dwb.begin() + c.C), db(dwb.begin() + c.C, dwb.end());
        expect(max_rel_err(dw, dw_ref) < 1e-4 && max_rel_err(db, db_ref) < 1e-4, tag + " subsample dw, db");
    }
    // NaN wins (the last one), as the core's scan.
    std::vector<float> x = {1.0f, NAN, 3.0f, NAN};
    float y = 0;
    int32_t am = -1;
    grid(1, MaxPoolForward{&y, &am, x.data(), PoolGeom{1, 1, 2, 2, 2, 2, 1, 1}});
    expect(std::isnan(y) && am == 3, "max pool: NaN wins, the last one");
}

void test_linear_rbf(std::mt19937& rng) {
    struct Case { int64_t N, I, O; };
    for (const Case& c : {Case{1, 1, 1}, Case{3, 17, 5}, Case{64, 400, 120}, Case{300, 7, 3}}) {
        const LinearParams p{c.N, c.I, c.O};
        const std::string tag = "linear N" + std::to_string(c.N) + " I" + std::to_string(c.I) + " O" + std::to_string(c.O);
        auto x = randn(size_t(c.N * c.I), rng), w = randn(size_t(c.O * c.I), rng), b = randn(size_t(c.O), rng);
        auto dy = randn(size_t(c.N * c.O), rng);
        std::vector<float> y(size_t(c.N * c.O), NAN), y_ref(y.size());
        grid(c.N * c.O, LinearForward{y.data(), x.data(), w.data(), b.data(), c.I, c.O, false});
        linear_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-4, tag + " forward");
        std::vector<float> dx(x.size(), NAN), dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
        grid(c.N * c.I, LinearBackwardInput{dx.data(), dy.data(), w.data(), c.I, c.O});
        linear_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-5, tag + " dx");
        const int64_t E = c.O * c.I + c.O, T = chunks_of(c.N);
        std::vector<float> dwb = chunked(E, T, [&](float* part) {
            return LinearWeightChunks{part, x.data(), dy.data(), c.N, c.I, c.O, E};
        });
        std::vector<float> dw(dwb.begin(), dwb.begin() + long(w.size())), db(dwb.begin() + long(w.size()), dwb.end());
        expect(max_rel_err(dw, dw_ref) < 1e-4 && max_rel_err(db, db_ref) < 1e-4, tag + " dw, db");

        grid(c.N * c.O, RbfForward{y.data(), x.data(), w.data(), c.I, c.O});
        rbf_forward_naive(y_ref.data(), x.data(), w.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-4, tag + " rbf forward");
        grid(c.N * c.I, RbfBackward{dx.data(), x.data(), w.data(), dy.data(), c.I, c.O});
        rbf_backward_naive(dx_ref.data(), x.data(), w.data(), dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-4, tag + " rbf backward");
    }
}

void test_unary_losses(std::mt19937& rng) {
    auto x = randn(999, rng);
    x[3] = 0.0f;
    const int64_t n = int64_t(x.size());
    std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
    auto dy = randn(x.size(), rng);
    struct U { Unary kind; void (*fwd)(float*, const float*, int64_t); void (*bwd)(float*, const float*, const float*, int64_t); const char* name; };
    for (const U& u : {U{Unary::kRelu, relu_forward_naive, relu_backward_naive, "relu"},
                       U{Unary::kSigmoid, sigmoid_forward_naive, sigmoid_backward_naive, "sigmoid"},
                       U{Unary::kTanh, tanh_forward_naive, tanh_backward_naive, "tanh"},
                       U{Unary::kScaledTanh, scaled_tanh_forward_naive, scaled_tanh_backward_naive, "scaled_tanh"}}) {
        grid(n, UnaryForward{y.data(), x.data(), u.kind, 1.0f, 0.0f});
        u.fwd(y_ref.data(), x.data(), n);
        expect(max_rel_err(y, y_ref) < 1e-5, std::string(u.name) + " forward");
        // ReLU's backward reads its output here (the fused layer's), the oracle its input:
        // the same mask, since y > 0 iff x > 0.
        grid(n, UnaryBackward{dx.data(), y.data(), y.data(), dy.data(), u.kind, 1.0f, 0.0f});
        u.bwd(dx_ref.data(), u.kind == Unary::kRelu ? x.data() : y.data(), dy.data(), n);
        expect(max_rel_err(dx, dx_ref) < 1e-5, std::string(u.name) + " backward");
    }
    grid(n, UnaryForward{y.data(), x.data(), Unary::kRescale, 2.5f, -0.5f});
    rescale_forward_naive(y_ref.data(), x.data(), n, 2.5f, -0.5f);
    expect(max_rel_err(y, y_ref) < 1e-6, "rescale forward");

    const int64_t N = 37, C = 10;
    auto out = randn(size_t(N * C), rng);
    for (auto& v : out) v *= 4.0f;
    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; i++) labels[size_t(i)] = (i * 7) % C;
    std::vector<float> onehot(out.size(), 0.0f);
    for (int64_t i = 0; i < N; i++) onehot[size_t(i * C + labels[size_t(i)])] = 1.0f;
    for (const std::string name : {"cross_entropy", "mse", "rbf_map"}) {
        const LossKindInfo& kind = loss_kind(name);
        std::vector<float> d(out.size(), NAN), d_ref(out.size());
        std::vector<double> rows(static_cast<size_t>(N));
        std::vector<int32_t> ok(static_cast<size_t>(N));
        grid(N, LossRows{d.data(), rows.data(), ok.data(), out.data(), labels.data(), C, kind.kind,
                         name == "rbf_map", kind.scale(N, C), 0.0f});
        StepControl ctrl{};
        StepSlot slot{};
        grid(1, FinishLoss{&ctrl, &slot, rows.data(), ok.data(), N, kind.mean_count(N, C)});
        // Against the naive oracles (definitions in double), not the CPU's row formulas.
        const double ref = name == "cross_entropy" ? softmax_cross_entropy_naive(d_ref.data(), out.data(), labels.data(), N, C)
                           : name == "mse" ? mse_loss_naive(d_ref.data(), out.data(), onehot.data(), N * C)
                                           : rbf_map_loss_naive(d_ref.data(), out.data(), labels.data(), N, C);
        expect(std::fabs(slot.loss - ref) < 1e-6 * (1 + std::fabs(ref)), name + " loss");
        expect(max_rel_err(d, d_ref) < 1e-6, name + " gradient");
        expect(ctrl.apply == 1 && slot.applied == 1, name + " finite loss applies");
        int64_t correct = 0;
        for (int64_t i = 0; i < N; i++) {
            int64_t best = 0;
            for (int64_t c = 1; c < C; c++) {
                const float a = out[size_t(i * C + c)], b = out[size_t(i * C + best)];
                if (name == "rbf_map" ? a < b : a > b) best = c;
            }
            correct += best == labels[size_t(i)];
        }
        expect(slot.correct == correct, name + " correct count");
    }
    // Softmax rows against the core's.
    std::vector<float> probs(out.size()), probs_ref(out.size());
    grid(N, SoftmaxRows{probs.data(), out.data(), C, false});
    softmax(probs_ref.data(), out.data(), N, C);
    expect(max_rel_err(probs, probs_ref) < 1e-6, "softmax rows");
    // A non-finite loss: no update, and with stop_on_nonfinite every later one halts.
    out[5] = NAN;
    std::vector<float> d(out.size());
    std::vector<double> rows(static_cast<size_t>(N));
    std::vector<int32_t> ok(static_cast<size_t>(N));
    grid(N, LossRows{d.data(), rows.data(), ok.data(), out.data(), labels.data(), C, LossKind::kCrossEntropy, false,
                     1.0f / float(N), 0.0f});
    StepControl ctrl{};
    ctrl.stop_on_nonfinite = 1;
    StepSlot slot{};
    grid(1, FinishLoss{&ctrl, &slot, rows.data(), ok.data(), N, double(N)});
    expect(ctrl.apply == 0 && ctrl.halted == 1 && std::isnan(slot.loss), "NaN loss: no update, halted");
}

void test_optimizer(std::mt19937& rng) {
    const int64_t n = 333;
    auto p0 = randn(size_t(n), rng), g = randn(size_t(n), rng), b0 = randn(size_t(n), rng);
    auto v0 = randn(size_t(n), rng);
    for (auto& v : v0) v = std::fabs(v);
    const float lrs[1] = {0.05f};
    for (int first = 0; first < 2; first++)
        for (bool nesterov : {false, true}) {
            std::vector<float> p = p0, buf = b0, p_ref = p0, buf_ref = b0;
            StepControl ctrl{};
            ctrl.apply = 1;
            ctrl.buf_ready = !first;
            grid(n, OptimizerUpdate{p.data(), buf.data(), nullptr, g.data(), lrs, &ctrl, 0, 0.9f, 1e-3f, 0.9, 0.999, 1e-8f, nesterov});
            sgd_update(p_ref.data(), buf_ref.data(), g.data(), n, 0.05f, 0.9f, 1e-3f, nesterov, first);
            expect(max_rel_err(p, p_ref) < 1e-6 && max_rel_err(buf, buf_ref) < 1e-6,
                   "sgd update (first " + std::to_string(first) + ", nesterov " + std::to_string(nesterov) + ")");
        }
    for (int64_t t : {0, 5}) {
        std::vector<float> p = p0, m = b0, v = v0, p_ref = p0, m_ref = b0, v_ref = v0;
        StepControl ctrl{};
        ctrl.apply = 1;
        ctrl.opt_steps = t;
        grid(n, OptimizerUpdate{p.data(), m.data(), v.data(), g.data(), lrs, &ctrl, 1, 0.0f, 1e-2f, 0.9, 0.999, 1e-8f, false});
        const double c1 = 1.0 - std::pow(0.9, double(t + 1)), c2 = 1.0 - std::pow(0.999, double(t + 1));
        adam_update(p_ref.data(), m_ref.data(), v_ref.data(), g.data(), n, 0.05f, 0.9f, 0.999f, 1e-8f, 1e-2f,
                    float(c1), float(c2));
        expect(max_rel_err(p, p_ref) < 1e-6 && max_rel_err(m, m_ref) < 1e-6 && max_rel_err(v, v_ref) < 1e-6,
               "adam update at step " + std::to_string(t + 1));
    }
    std::vector<float> p = p0;
    StepControl ctrl{};  // apply = 0
    grid(n, OptimizerUpdate{p.data(), nullptr, nullptr, g.data(), lrs, &ctrl, 0, 0.0f, 0.0f, 0.9, 0.999, 1e-8f, false});
    expect(p == p0, "no update when the step does not apply");
}

// A layer of `kind` from positional sizes, named as its registry entry names them.
LayerDesc layer(const char* kind, int64_t in = 0, int64_t out = 0, int64_t k = 0, int64_t stride = 1,
                int64_t pad = 0, bool bias = false) {
    const std::string name = kind;
    const double b = bias ? 1.0 : 0.0;
    if (name == "conv2d")
        return make_layer(kind, {{"in_channels", in}, {"out_channels", out}, {"kernel_size", k},
                                 {"stride", stride}, {"padding", pad}, {"bias", b}});
    if (name == "maxpool2d" || name == "avgpool2d") return make_layer(kind, {{"kernel_size", k}, {"stride", stride}});
    if (name == "linear") return make_layer(kind, {{"in_features", in}, {"out_features", out}, {"bias", b}});
    return make_layer(kind);
}

std::vector<LayerDesc> lenet5() {
    return {layer("conv2d", 1, 6, 5, 1, 0, true), layer("relu"), layer("maxpool2d", 0, 0, 2, 2),
            layer("conv2d", 6, 16, 5, 1, 0, true), layer("relu"), layer("maxpool2d", 0, 0, 2, 2),
            layer("flatten"), layer("linear", 400, 120, 0, 1, 0, true), layer("relu"),
            layer("linear", 120, 84, 0, 1, 0, true), layer("sigmoid"), layer("linear", 84, 10, 0, 1, 0, true)};
}

// The emulated GpuNet against the CPU Net: forward, a training step with each loss and both
// optimisers (the CPU step = Net::train_step + sgd_update / adam_update).
void test_net(std::mt19937& rng) {
    const std::vector<LayerDesc> descs = lenet5();
    Net net(descs, 1, 32, 32);
    GpuNet gnet(descs, 1, 32, 32, true);
    expect(gnet.emulated() && gnet.param_shapes() == net.param_shapes(), "GpuNet: emulated, same parameters");
    std::vector<std::vector<float>> params;
    std::vector<const float*> pp;
    for (const Shape& s : net.param_shapes()) {
        params.push_back(randn(size_t(numel(s)), rng));
        for (auto& v : params.back()) v *= 0.2f;
    }
    for (auto& p : params) pp.push_back(p.data());
    gnet.set_params(pp);
    const int64_t N = 9;
    auto x = randn(size_t(N * 32 * 32), rng);
    std::vector<float> out(size_t(N * 10)), out_ref(out.size());
    gnet.forward(out.data(), x.data(), N);
    net.forward(out_ref.data(), x.data(), N, pp.data(), nullptr);
    expect(max_rel_err(out, out_ref) < 1e-5, "GpuNet forward vs Net");

    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; i++) labels[size_t(i)] = i % 10;
    for (const std::string loss : {"cross_entropy", "mse"})
        for (int adam = 0; adam < 2; adam++) {
            std::vector<std::vector<float>> p = params, buf(params.size()), v(params.size());
            std::vector<const float*> ptrs;
            for (size_t i = 0; i < p.size(); i++) {
                ptrs.push_back(p[i].data());
                buf[i].assign(p[i].size(), 0.0f);
                v[i].assign(p[i].size(), 0.0f);
            }
            GpuNet g(descs, 1, 32, 32, true);
            g.set_params(ptrs);
            OptimConfig cfg;
            cfg.kind = adam ? OptimConfig::kAdam : OptimConfig::kSgd;
            cfg.momentum = 0.9f;
            cfg.weight_decay = 1e-4f;
            // Adam divides by sqrt(v) + eps: with a tiny eps a gradient that is ~0 (summed in
            // another order on each side) would step by a whole rate either way.
            cfg.eps = 1e-3f;
            g.set_optimizer(cfg);
            g.set_optimizer_state({}, false, 0);
            double worst_loss = 0;
            for (int step = 0; step < 3; step++) {
                const float lr = adam ? 1e-3f : 0.05f;
                const StepResult r = g.train_step(nullptr, x.data(), labels.data(), N, lr, loss, StepNoise{});
                std::vector<std::vector<float>> grads;
                std::vector<float*> gp;
                for (const auto& q : p) grads.emplace_back(q.size());
                for (auto& q : grads) gp.push_back(q.data());
                const double ref = net.train_step(out_ref.data(), gp.data(), x.data(), labels.data(), N,
                                                  ptrs.data(), nullptr, loss_kind(loss), StepNoise{});
                worst_loss = std::fmax(worst_loss, std::fabs(r.loss - ref));
                for (size_t i = 0; i < p.size(); i++) {
                    if (adam) {
                        const double c1 = 1 - std::pow(0.9, step + 1), c2 = 1 - std::pow(0.999, step + 1);
                        adam_update(p[i].data(), buf[i].data(), v[i].data(), grads[i].data(), int64_t(p[i].size()),
                                    lr, 0.9f, 0.999f, 1e-3f, 1e-4f, float(c1), float(c2));
                    } else {
                        sgd_update(p[i].data(), buf[i].data(), grads[i].data(), int64_t(p[i].size()), lr, 0.9f,
                                   1e-4f, false, step == 0);
                    }
                }
                expect(r.applied, "GpuNet step applied");
            }
            std::vector<std::vector<float>> got(p.size());
            std::vector<float*> gptr;
            for (size_t i = 0; i < p.size(); i++) {
                got[i].resize(p[i].size());
                gptr.push_back(got[i].data());
            }
            g.get_params(gptr);
            double worst = 0;
            for (size_t i = 0; i < p.size(); i++) worst = std::fmax(worst, max_rel_err(got[i], p[i]));
            const std::string tag = "GpuNet 3 steps " + loss + (adam ? " adam" : " sgd");
            expect(worst_loss < 1e-5, tag + ": losses match Net");
            expect(worst < 1e-5, tag + ": weights match the CPU (" + std::to_string(worst) + ")");
            expect(g.optimizer_steps() == 3, tag + ": 3 updates counted");
        }
}

// Two runs from the same start give the same bits; a NaN step skips its update and, with
// stop_on_nonfinite, halts the rest; bad input is std::invalid_argument.
void test_net_rules(std::mt19937& rng) {
    const std::vector<LayerDesc> descs = lenet5();
    const int64_t N = 50;
    std::vector<uint8_t> images(size_t(N * 28 * 28));
    std::uniform_int_distribution<int> pix(0, 255);
    for (auto& v : images) v = uint8_t(pix(rng));
    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; i++) labels[size_t(i)] = (i * 3) % 10;
    std::vector<float> lut(256);
    for (int i = 0; i < 256; i++) lut[size_t(i)] = (i / 255.0f - 0.1307f) / 0.3081f;
    std::vector<int64_t> idx(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; i++) idx[size_t(i)] = (i * 17) % N;
    Net net(descs, 1, 32, 32);
    std::vector<std::vector<float>> params;
    std::vector<const float*> pp;
    for (const Shape& s : net.param_shapes()) {
        params.push_back(randn(size_t(numel(s)), rng));
        for (auto& v : params.back()) v *= 0.1f;
    }
    for (auto& p : params) pp.push_back(p.data());
    auto train = [&](const std::vector<float>& lrs, bool stop, std::vector<StepResult>& res) {
        GpuNet g(descs, 1, 32, 32, true);
        g.set_params(pp);
        OptimConfig cfg;
        cfg.momentum = 0.9f;
        g.set_optimizer(cfg);
        g.set_dataset(images.data(), labels.data(), N, 28, 28, 2, lut.data());
        res = g.train_indices(idx.data(), N, 16, lrs.data(), "cross_entropy", stop, StepNoise{});
        std::vector<std::vector<float>> out;
        std::vector<float*> ptrs;
        for (const auto& p : params) out.emplace_back(p.size());
        for (auto& o : out) ptrs.push_back(o.data());
        g.get_params(ptrs);
        return out;
    };
    std::vector<StepResult> r1, r2;
    const auto w1 = train({0.05f, 0.05f, 0.05f, 0.05f}, false, r1), w2 = train({0.05f, 0.05f, 0.05f, 0.05f}, false, r2);
    expect(r1.size() == 4 && w1 == w2 && r1[3].loss == r2[3].loss, "train_indices: same bits run after run");
    {   // A second run with another batch size replays no program of the first: the same bits
        // as a fresh net given the same weights and state.
        std::vector<StepResult> first, again, fresh;
        GpuNet g(descs, 1, 32, 32, true), h(descs, 1, 32, 32, true);
        OptimConfig cfg;
        cfg.momentum = 0.9f;
        for (GpuNet* net : {&g, &h}) {
            net->set_params(pp);
            net->set_optimizer(cfg);
            net->set_dataset(images.data(), labels.data(), N, 28, 28, 2, lut.data());
        }
        const std::vector<float> lrs = {0.05f, 0.05f, 0.05f, 0.05f};
        first = g.train_indices(idx.data(), N, 16, lrs.data(), "cross_entropy", false, StepNoise{});
        std::vector<std::vector<float>> w(params.size()), buf(params.size());
        std::vector<float*> wp, bp;
        for (size_t i = 0; i < params.size(); i++) {
            w[i].resize(params[i].size());
            buf[i].resize(params[i].size());
            wp.push_back(w[i].data());
            bp.push_back(buf[i].data());
        }
        g.get_params(wp);
        g.get_optimizer_state({bp});
        std::vector<const float*> wc(wp.begin(), wp.end()), bc(bp.begin(), bp.end());
        h.set_params(wc);
        h.set_optimizer_state({bc}, true, g.optimizer_steps());
        const int64_t idx2[4] = {3, 7, 1, 0};
        again = g.train_indices(idx2, 4, 2, lrs.data(), "cross_entropy", false, StepNoise{});
        fresh = h.train_indices(idx2, 4, 2, lrs.data(), "cross_entropy", false, StepNoise{});
        expect(again.size() == 2 && fresh.size() == 2 && again[0].loss == fresh[0].loss &&
                   again[1].loss == fresh[1].loss && again[1].correct == fresh[1].correct,
               "train_indices with another batch size: no program of the first run replayed");
    }
    {   // set_params after training uploads again, even the values it uploaded before.
        GpuNet g(descs, 1, 32, 32, true);
        g.set_params(pp);
        g.set_dataset(images.data(), labels.data(), N, 28, 28, 2, lut.data());
        const std::vector<float> lrs = {0.05f, 0.05f, 0.05f, 0.05f};
        g.train_indices(idx.data(), N, 16, lrs.data(), "cross_entropy", false, StepNoise{});
        g.set_params(pp);
        std::vector<std::vector<float>> back;
        std::vector<float*> ptrs;
        for (const auto& p : params) back.emplace_back(p.size());
        for (auto& b : back) ptrs.push_back(b.data());
        g.get_params(ptrs);
        expect(back == params, "set_params after training restores the given weights");
    }
    // The same steps through the CPU Net (the batch prepared as predict_u8 does).
    {
        std::vector<std::vector<float>> p = params, buf(params.size());
        std::vector<const float*> ptrs;
        for (auto& q : p) ptrs.push_back(q.data());
        double worst_loss = 0;
        for (int64_t s = 0; s < 4; s++) {
            const int64_t n0 = s * 16, n = std::min<int64_t>(16, N - n0);
            std::vector<float> x(size_t(n * 32 * 32));
            std::vector<int64_t> y(static_cast<size_t>(n));
            gather_pad_normalize(x.data(), images.data(), idx.data() + n0, n, 28, 28, 2, lut.data());
            for (int64_t i = 0; i < n; i++) y[size_t(i)] = labels[size_t(idx[size_t(n0 + i)])];
            std::vector<std::vector<float>> grads;
            std::vector<float*> gp;
            for (const auto& q : p) grads.emplace_back(q.size());
            for (auto& q : grads) gp.push_back(q.data());
            std::vector<float> out(size_t(n * 10));
            const double ref = net.train_step(out.data(), gp.data(), x.data(), y.data(), n, ptrs.data(), nullptr,
                                              loss_kind("cross_entropy"), StepNoise{});
            worst_loss = std::fmax(worst_loss, std::fabs(ref - r1[size_t(s)].loss));
            for (size_t i = 0; i < p.size(); i++) {
                if (buf[i].empty()) buf[i].assign(p[i].size(), 0.0f);
                sgd_update(p[i].data(), buf[i].data(), grads[i].data(), int64_t(p[i].size()), 0.05f, 0.9f, 0.0f,
                           false, s == 0);
            }
        }
        double worst = 0;
        for (size_t i = 0; i < p.size(); i++) worst = std::fmax(worst, max_rel_err(w1[i], p[i]));
        expect(worst_loss < 1e-5 && worst < 1e-5, "train_indices (last batch partial) vs Net + sgd_update");
    }
    // Step 1 at an infinite rate makes the weights NaN: step 2 on is not finite.
    std::vector<StepResult> r3, r4;
    const auto w3 = train({0.05f, INFINITY, 0.05f, 0.05f}, false, r3);
    expect(r3[0].applied && r3[1].applied && !std::isfinite(r3[2].loss) && !r3[2].applied && !r3[3].applied,
           "a non-finite loss skips its update");
    const auto w4 = train({0.05f, 1e30f, 0.05f, 0.05f}, true, r4);
    bool halted_ok = r4[0].applied;
    for (size_t s = 1; s < r4.size(); s++)
        if (!std::isfinite(r4[s].loss)) {
            for (size_t t = s; t < r4.size(); t++) halted_ok = halted_ok && !r4[t].applied;
            break;
        }
    expect(halted_ok, "stop_on_nonfinite: no update after the first non-finite loss");

    GpuNet g(descs, 1, 32, 32, true);
    bool threw = false;
    try {
        const int64_t bad = N;
        g.set_dataset(images.data(), labels.data(), N, 28, 28, 2, lut.data());
        const float lr = 0.1f;
        g.train_indices(&bad, 1, 1, &lr, "cross_entropy", false, StepNoise{});
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    expect(threw, "train_indices: an index past the dataset is std::invalid_argument");
    threw = false;
    std::string want;
    try {
        Net bad({layer("conv2d", 2, 6, 5, 1, 0, true), layer("flatten")}, 1, 32, 32);
    } catch (const std::invalid_argument& e) {
        want = e.what();
    }
    for (bool emulate : {true, false}) {
        try {
            GpuNet bad({layer("conv2d", 2, 6, 5, 1, 0, true), layer("flatten")}, 1, 32, 32, emulate);
        } catch (const std::invalid_argument& e) {
            threw = !want.empty() && e.what() == want;
        }
        expect(threw, "GpuNet: an invalid chain is Net's std::invalid_argument, device or not");
        threw = false;
    }
    threw = false;
    try {
        GpuNet dev(descs, 1, 32, 32, false);
        threw = device_info().usable;  // a device build on a GPU machine
    } catch (const std::runtime_error& e) {
        threw = std::string(e.what()).find("CUDA is not available") == 0;
    }
    expect(threw, "GpuNet on the device: runs with a GPU, else says why not");
}


// The host emulation with a device's failure modes, for NetImpl<FaultyBackend>: the alloc
// numbered fail_at (counted from 0 in `allocs`) throws std::bad_alloc, as cudaMalloc runs out
// of memory; memory released while captured programs exist (a later replay would read it) is
// counted in stale_releases and kept, unchanged, instead of freed (so such a replay reads old
// values rather than freed memory); a copy to or from memory that is not a live allocation
// throws std::logic_error instead of writing through a null or freed pointer; with fail_uploads
// every upload throws std::runtime_error (a failed copy).
struct FaultyBackend : HostBackend {
    static inline int64_t fail_at = -1, allocs = 0, stale_releases = 0;
    static inline bool fail_uploads = false;
    static inline std::map<const char*, size_t> live;  // start -> bytes
    static inline std::vector<void*> kept;

    void* alloc(size_t bytes) {
        if (allocs++ == fail_at) throw std::bad_alloc();
        void* p = HostBackend::alloc(bytes);
        live[static_cast<const char*>(p)] = bytes;
        return p;
    }
    void release(void* p) {
        live.erase(static_cast<const char*>(p));
        if (graphs.empty()) {
            HostBackend::release(p);
        } else {
            stale_releases++;
            kept.push_back(p);
        }
    }
    void upload(void* dst, const void* src, size_t bytes) {
        if (fail_uploads) throw std::runtime_error("upload failed");
        in_live("upload", dst, bytes);
        HostBackend::upload(dst, src, bytes);
    }
    void download(void* dst, const void* src, size_t bytes) {
        in_live("download", src, bytes);
        HostBackend::download(dst, src, bytes);
    }
    void zero(void* dst, size_t bytes) {
        in_live("zero", dst, bytes);
        HostBackend::zero(dst, bytes);
    }
    static void in_live(const char* what, const void* p, size_t bytes) {
        if (bytes == 0) return;
        const char* c = static_cast<const char*>(p);
        auto it = live.upper_bound(c);
        if (it == live.begin() || c + bytes > std::prev(it)->first + std::prev(it)->second)
            throw std::logic_error(std::string(what) + " outside the live device memory");
    }
    static void reset() {
        for (void* p : kept) std::free(p);
        kept.clear();
        fail_at = -1;
        allocs = stale_releases = 0;
        fail_uploads = false;
    }
};
using FaultyNet = NetImpl<FaultyBackend>;

// A resize that runs out of memory part way (every allocation in turn fails) drops the captured
// programs before it releases memory, keeps the capacity it had, and leaves a net that trains
// on as one that never tried: the same bits at the old batch size and, memory back, the new.
// A dataset upload that fails leaves no dataset (not a half-replaced one), then works again.
void test_allocation_failures(std::mt19937& rng) {
    // A small net with every kind of buffer (activations, argmax, chunk sums): 1x12x12 inputs.
    const std::vector<LayerDesc> descs = {layer("conv2d", 1, 4, 3, 1, 0, true), layer("relu"),
                                          layer("maxpool2d", 0, 0, 2, 2), layer("flatten"),
                                          layer("linear", 100, 10, 0, 1, 0, true)};
    const int64_t S = 12, image = 8, pad = 2;  // the dataset's 8x8 images, padded to 12x12
    Net shapes(descs, 1, S, S);
    std::vector<std::vector<float>> params;
    std::vector<const float*> pp;
    for (const Shape& s : shapes.param_shapes()) {
        params.push_back(randn(size_t(numel(s)), rng));
        for (auto& v : params.back()) v *= 0.1f;
    }
    for (auto& p : params) pp.push_back(p.data());
    const int64_t small = 8, large = 16;
    const auto x_a = randn(size_t(small * S * S), rng), x_b = randn(size_t(small * S * S), rng);
    const auto x_large = randn(size_t(large * S * S), rng);
    std::vector<int64_t> labels(static_cast<size_t>(large));
    for (int64_t i = 0; i < large; i++) labels[size_t(i)] = (i * 7) % 10;
    const LossKindInfo& ce = loss_kind("cross_entropy");
    auto weights = [&](FaultyNet& net) {
        std::vector<std::vector<float>> out;
        std::vector<float*> ptrs;
        for (const auto& p : params) out.emplace_back(p.size());
        for (auto& o : out) ptrs.push_back(o.data());
        net.get_params(ptrs);
        return out;
    };
    auto start = [&](FaultyNet& net) {
        net.set_params(pp);
        OptimConfig cfg;
        cfg.momentum = 0.9f;
        net.set_optimizer(cfg);
        net.set_optimizer_state({}, false, 0);
    };

    int failures = 0;
    bool all_ok = true;
    for (int64_t k = 0; k < 100; k++) {
        FaultyBackend::reset();
        bool ok = true, failed = false;
        std::string what;
        try {
            FaultyNet net(descs, 1, S, S, true), ref(descs, 1, S, S, true);
            start(net);
            start(ref);
            std::vector<float> out(size_t(large * 10)), out_ref(out.size());
            const StepResult a = net.train_step(nullptr, x_a.data(), labels.data(), small, 0.05f, ce, StepNoise{}, 0.0f);
            ref.train_step(nullptr, x_a.data(), labels.data(), small, 0.05f, ce, StepNoise{}, 0.0f);  // the program for 8 is captured
            FaultyBackend::allocs = 0;
            FaultyBackend::fail_at = k;
            try {
                net.train_step(nullptr, x_large.data(), labels.data(), large, 0.05f, ce, StepNoise{}, 0.0f);
            } catch (const std::bad_alloc&) {
                failed = true;
            }
            FaultyBackend::fail_at = -1;
            if (!failed) break;  // k is past the allocations of a step at the larger batch
            failures++;
            (void)a;
            const StepResult b = net.train_step(out.data(), x_b.data(), labels.data(), small, 0.05f, ce, StepNoise{}, 0.0f);
            const StepResult b_ref = ref.train_step(out_ref.data(), x_b.data(), labels.data(), small, 0.05f, ce, StepNoise{}, 0.0f);
            ok = ok && b.loss == b_ref.loss && b.correct == b_ref.correct && out == out_ref;
            const StepResult c = net.train_step(out.data(), x_large.data(), labels.data(), large, 0.05f, ce, StepNoise{}, 0.0f);
            const StepResult c_ref = ref.train_step(out_ref.data(), x_large.data(), labels.data(), large, 0.05f, ce, StepNoise{}, 0.0f);
            ok = ok && c.loss == c_ref.loss && out == out_ref;
            net.forward(out.data(), x_a.data(), small);
            ref.forward(out_ref.data(), x_a.data(), small);
            ok = ok && out == out_ref && weights(net) == weights(ref);
        } catch (const std::exception& e) {
            ok = false;
            what = e.what();
        }
        if (!ok || FaultyBackend::stale_releases != 0) {
            all_ok = false;
            std::printf("  allocation %lld failing: %s, %lld release(s) under captured programs%s%s\n",
                        (long long)k, ok ? "trains on alike" : "trains on differently",
                        (long long)FaultyBackend::stale_releases, what.empty() ? "" : ": ", what.c_str());
        }
    }
    FaultyBackend::reset();
    expect(failures >= 10, "allocation failures: every allocation of a resize failed in turn (" +
                               std::to_string(failures) + ")");
    expect(all_ok, "a resize out of memory: programs dropped before any release, the old capacity kept, "
                   "training goes on as if it had not been tried");

    // The dataset: uploaded, trained on (its programs captured), then a larger one fails.
    const int64_t N = 30, M = 60;
    std::vector<uint8_t> images(size_t(M * image * image));
    std::uniform_int_distribution<int> pix(0, 255);
    for (auto& v : images) v = uint8_t(pix(rng));
    std::vector<int64_t> dlabels(static_cast<size_t>(M));
    for (int64_t i = 0; i < M; i++) dlabels[size_t(i)] = (i * 3) % 10;
    std::vector<float> lut(256);
    for (int i = 0; i < 256; i++) lut[size_t(i)] = i / 255.0f;
    std::vector<int64_t> idx(static_cast<size_t>(M)), idx_first(static_cast<size_t>(N));
    for (int64_t i = 0; i < M; i++) idx[size_t(i)] = (i * 7) % M;
    for (int64_t i = 0; i < N; i++) idx_first[size_t(i)] = (i * 7) % N;  // in the first dataset
    const std::vector<float> lrs(8, 0.05f);
    for (int64_t k = 0; k < 2; k++) {  // the images, then the labels
        FaultyBackend::reset();
        bool ok = true, failed = false;
        std::string what;
        try {
            FaultyNet net(descs, 1, S, S, true), ref(descs, 1, S, S, true);
            start(net);
            start(ref);
            for (FaultyNet* n : {&net, &ref}) {
                n->set_dataset(images.data(), dlabels.data(), N, image, image, pad, lut.data());
                n->train_indices(idx_first.data(), N / 2, 5, lrs.data(), ce, false, StepNoise{}, 0.0f);
            }
            FaultyBackend::allocs = 0;
            FaultyBackend::fail_at = k;
            try {
                net.set_dataset(images.data(), dlabels.data(), M, image, image, pad, lut.data());
            } catch (const std::bad_alloc&) {
                failed = true;
            }
            FaultyBackend::fail_at = -1;
            ok = failed && net.dataset_size() == 0;
            for (FaultyNet* n : {&net, &ref}) n->set_dataset(images.data(), dlabels.data(), M, image, image, pad, lut.data());
            const auto r = net.train_indices(idx.data(), M, 10, lrs.data(), ce, false, StepNoise{}, 0.0f);
            const auto r_ref = ref.train_indices(idx.data(), M, 10, lrs.data(), ce, false, StepNoise{}, 0.0f);
            for (size_t s = 0; s < r.size() && s < r_ref.size(); s++) ok = ok && r[s].loss == r_ref[s].loss;
            ok = ok && r.size() == r_ref.size() && weights(net) == weights(ref);
        } catch (const std::exception& e) {
            ok = false;
            what = e.what();
        }
        expect(ok && FaultyBackend::stale_releases == 0,
               "set_dataset out of memory (allocation " + std::to_string(k) + "): no dataset left, no program "
               "over released memory, the next upload trains as on a fresh net" + (what.empty() ? "" : ": " + what));
    }
    FaultyBackend::reset();

    {   // A failed upload of parameters or of a lookup table is not taken as done: the same
        // values given again go up.
        FaultyNet net(descs, 1, S, S, true), ref(descs, 1, S, S, true);
        std::vector<std::vector<float>> other = params;
        for (auto& p : other)
            for (auto& v : p) v += 1.0f;
        std::vector<const float*> op;
        for (auto& p : other) op.push_back(p.data());
        net.set_params(pp);
        ref.set_params(op);
        std::vector<uint8_t> img(size_t(2 * image * image), 7);
        std::vector<float> lut_b(lut);
        for (auto& v : lut_b) v = 1.0f - v;
        std::vector<float> probs(20), probs_ref(20);
        net.predict_u8(probs.data(), img.data(), 2, image, image, pad, lut.data());
        FaultyBackend::fail_uploads = true;
        int threw = 0;
        try {
            net.set_params(op);
        } catch (const std::runtime_error&) {
            threw++;
        }
        try {
            net.predict_u8(probs.data(), img.data(), 2, image, image, pad, lut_b.data());
        } catch (const std::runtime_error&) {
            threw++;
        }
        FaultyBackend::fail_uploads = false;
        net.set_params(op);
        net.predict_u8(probs.data(), img.data(), 2, image, image, pad, lut_b.data());
        ref.predict_u8(probs_ref.data(), img.data(), 2, image, image, pad, lut_b.data());
        expect(threw == 2 && weights(net) == other && probs == probs_ref,
               "a failed upload of parameters or of a lookup table is uploaded again");
    }
    {   // The loss test hook is no optimiser step (Adam's bias correction counts the steps).
        FaultyNet net(descs, 1, S, S, true);
        net.set_params(pp);
        OptimConfig cfg;
        cfg.kind = OptimConfig::kAdam;
        net.set_optimizer(cfg);
        std::vector<float> out = randn(size_t(small * 10), rng), dout(out.size());
        net.loss(dout.data(), out.data(), labels.data(), small, ce);
        expect(net.optimizer_steps() == 0, "GpuNet.loss: not counted as an optimiser step");
        net.forward(out.data(), x_a.data(), small);  // a captured program when the net goes
    }
    expect(FaultyBackend::stale_releases == 0, "no memory released under a captured program at destruction");
    FaultyBackend::reset();
}

}  // namespace

int main() {
    std::mt19937 rng(4321);
    const DeviceInfo info = device_info();
    std::printf("CUDA compiled: %s, usable: %s%s%s\n", info.compiled ? "yes" : "no", info.usable ? "yes" : "no",
                info.usable ? "" : " - ", info.reason.c_str());
    test_conv(rng);
    test_pool(rng);
    test_linear_rbf(rng);
    test_unary_losses(rng);
    test_optimizer(rng);
    test_net(rng);
    test_net_rules(rng);
    test_allocation_failures(rng);
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
