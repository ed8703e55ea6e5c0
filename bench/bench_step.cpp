// Whole-network benchmark of LeNet-5 on the core's fused engine (pylenet::Net), no Python:
// validates Net::train_step (loss, logits, every gradient) and Net::forward against a
// layer-by-layer reference built from the core's naive oracles (*_naive), then times training
// steps at batch 16, 64, 256 and inference at batch 1 and 1000 for each thread count.
// Output: one fixed-format line per variant (workload, batch, threads, ms/iter, images/s,
// us/image, GFLOP/s, % of the threads' measured peak), then the 1 -> 2 thread speedup.
// Usage: bench_step [THREADS,...]   (default 1,2)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/parallel.h"
#include "bench_common.h"
#include "net/net.h"
#include "ops/activations.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#include "ops/losses.h"
#include "ops/pool2d.h"
#include "oracle/activations.h"
#include "oracle/conv2d.h"
#include "oracle/linear.h"
#include "oracle/losses.h"
#include "oracle/pool2d.h"

using namespace pylenet;

namespace {

using Vec = std::vector<float>;

// LeNet-5, relu/max, as pylenet.LeNet5 describes it to the core.
std::vector<LayerDesc> lenet5_layers() {
    auto conv = [](int64_t c, int64_t k) {
        return make_layer("conv2d", {{"in_channels", c}, {"out_channels", k}, {"kernel_size", 5}});
    };
    auto linear = [](int64_t i, int64_t o) {
        return make_layer("linear", {{"in_features", i}, {"out_features", o}});
    };
    auto simple = [](const char* kind) { return make_layer(kind); };
    auto pool = [] { return make_layer("maxpool2d", {{"kernel_size", 2}}); };
    return {conv(1, 6),        simple("relu"), pool(),  // 1@32x32 -> 6@28x28 -> 6@14x14
            conv(6, 16),       simple("relu"), pool(),  // -> 16@10x10 -> 16@5x5
            simple("flatten"),                          // -> 400
            linear(400, 120),  simple("relu"),          // F5
            linear(120, 84),   simple("relu"),          // F6
            linear(84, 10)};                                     // logits
}

// Multiply-adds per image of each weighted layer, and the training FLOPs derived from them:
// forward 2*MACs; backward 2*MACs for the weight gradient plus 2*MACs for the input
// gradient, except C1, whose input gradient nobody needs (the engine skips it). Pools,
// activations, biases and the loss are left out (under 1% of the total).
struct Flops {
    double fwd = 0, train = 0;
};
Flops lenet5_flops() {
    const double c1 = 6.0 * 28 * 28 * 1 * 25, c3 = 16.0 * 10 * 10 * 6 * 25;
    const double f5 = 400.0 * 120, f6 = 120.0 * 84, out = 84.0 * 10;
    const double macs = c1 + c3 + f5 + f6 + out;
    return {2 * macs, 6 * macs - 2 * c1};
}

// ---------------------------------------------------------------- reference (plain loops)

// Parameters in Net::param_shapes order, PyTorch's default init U(+-1/sqrt(fan_in)).
std::vector<Vec> random_params(const Net& net, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<Vec> params;
    const auto& shapes = net.param_shapes();
    for (size_t i = 0; i < shapes.size(); i++) {
        // Weights and the bias after them share the weight's fan-in.
        const Shape& w = shapes[i - (shapes[i].size() == 1 ? 1 : 0)];
        int64_t fan_in = 1;
        for (size_t d = 1; d < w.size(); d++) fan_in *= w[d];
        const float bound = 1.0f / std::sqrt(float(fan_in));
        std::uniform_real_distribution<float> u(-bound, bound);
        Vec p(size_t(numel(shapes[i])));
        for (float& v : p) v = u(rng);
        params.push_back(std::move(p));
    }
    return params;
}

struct Reference {
    Vec logits;
    double loss = 0;
    std::vector<Vec> grads;  // param_shapes order
};

// LeNet-5 forward (and, when labels is non-null, mean cross-entropy and backward) layer by
// layer on the core's naive oracles (the *_naive function of every op).
Reference reference(const Vec& x, const int64_t* labels, int64_t N, const std::vector<Vec>& p) {
    const Conv2dParams c1 = check_conv2d({N, 1, 32, 32}, {6, 1, 5, 5}, Shape{6}, 1, 0);
    const Conv2dParams c3 = check_conv2d({N, 6, 14, 14}, {16, 6, 5, 5}, Shape{16}, 1, 0);
    const Pool2dParams s2p = check_pool2d("S2", {N, 6, 28, 28}, 2, 2);
    const Pool2dParams s4p = check_pool2d("S4", {N, 16, 10, 10}, 2, 2);
    const LinearParams f5p = {N, 400, 120}, f6p = {N, 120, 84}, outp = {N, 84, 10};
    auto vec = [](int64_t n) { return Vec(static_cast<size_t>(n)); };
    Vec a1 = vec(N * 6 * 28 * 28), r1 = vec(N * 6 * 28 * 28), s2 = vec(N * 6 * 14 * 14);
    Vec a3 = vec(N * 16 * 10 * 10), r3 = vec(N * 16 * 10 * 10), s4 = vec(N * 400);
    Vec f5 = vec(N * 120), r5 = vec(N * 120), f6 = vec(N * 84), r6 = vec(N * 84);
    std::vector<int32_t> arg2(s2.size()), arg4(s4.size());
    Reference ref;
    ref.logits = vec(N * 10);
    conv2d_forward_naive(a1.data(), x.data(), p[0].data(), p[1].data(), c1);  // 6@28x28
    relu_forward_naive(r1.data(), a1.data(), int64_t(a1.size()));
    maxpool2d_forward_naive(s2.data(), arg2.data(), r1.data(), s2p);           // 6@14x14
    conv2d_forward_naive(a3.data(), s2.data(), p[2].data(), p[3].data(), c3);  // 16@10x10
    relu_forward_naive(r3.data(), a3.data(), int64_t(a3.size()));
    maxpool2d_forward_naive(s4.data(), arg4.data(), r3.data(), s4p);           // 16@5x5 = 400
    linear_forward_naive(f5.data(), s4.data(), p[4].data(), p[5].data(), f5p);  // F5
    relu_forward_naive(r5.data(), f5.data(), int64_t(f5.size()));
    linear_forward_naive(f6.data(), r5.data(), p[6].data(), p[7].data(), f6p);  // F6
    relu_forward_naive(r6.data(), f6.data(), int64_t(f6.size()));
    linear_forward_naive(ref.logits.data(), r6.data(), p[8].data(), p[9].data(), outp);
    if (!labels) return ref;

    Vec dz = vec(N * 10);
    ref.loss = softmax_cross_entropy_naive(dz.data(), ref.logits.data(), labels, N, 10);
    ref.grads.resize(p.size());
    for (size_t i = 0; i < p.size(); i++) ref.grads[i].resize(p[i].size());
    Vec dr6 = vec(N * 84), d6 = vec(N * 84), dr5 = vec(N * 120), d5 = vec(N * 120), d4 = vec(N * 400);
    Vec dr3 = vec(N * 16 * 10 * 10), d3 = vec(N * 16 * 10 * 10), dx3 = vec(N * 6 * 14 * 14);
    Vec dr1 = vec(N * 6 * 28 * 28), d2 = vec(N * 6 * 28 * 28), dx1(x.size());
    linear_backward_naive(dr6.data(), ref.grads[8].data(), ref.grads[9].data(), r6.data(), p[8].data(), dz.data(), outp);
    relu_backward_naive(d6.data(), f6.data(), dr6.data(), int64_t(d6.size()));
    linear_backward_naive(dr5.data(), ref.grads[6].data(), ref.grads[7].data(), r5.data(), p[6].data(), d6.data(), f6p);
    relu_backward_naive(d5.data(), f5.data(), dr5.data(), int64_t(d5.size()));
    linear_backward_naive(d4.data(), ref.grads[4].data(), ref.grads[5].data(), s4.data(), p[4].data(), d5.data(), f5p);
    maxpool2d_backward_naive(dr3.data(), d4.data(), arg4.data(), s4p);
    relu_backward_naive(d3.data(), a3.data(), dr3.data(), int64_t(d3.size()));
    conv2d_backward_naive(dx3.data(), ref.grads[2].data(), ref.grads[3].data(), s2.data(), p[2].data(),
                          d3.data(), c3);
    maxpool2d_backward_naive(dr1.data(), dx3.data(), arg2.data(), s2p);
    relu_backward_naive(d2.data(), a1.data(), dr1.data(), int64_t(d2.size()));
    conv2d_backward_naive(dx1.data(), ref.grads[0].data(), ref.grads[1].data(), x.data(), p[0].data(),
                          d2.data(), c1);
    return ref;
}

// max|a - b| / max|b|: the error relative to the tensor's scale (NaN anywhere fails).
double rel_err(const Vec& a, const Vec& b) {
    if (a.size() != b.size()) return std::numeric_limits<double>::infinity();
    double err = 0, scale = 1e-30;
    for (size_t i = 0; i < a.size(); i++) {
        const double d = std::fabs(double(a[i]) - b[i]);
        if (!(d <= err)) err = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
        scale = std::max(scale, std::fabs(double(b[i])));
    }
    return err / scale;
}

std::vector<const float*> const_ptrs(const std::vector<Vec>& v) {
    std::vector<const float*> p;
    for (const Vec& a : v) p.push_back(a.data());
    return p;
}
std::vector<float*> ptrs(std::vector<Vec>& v) {
    std::vector<float*> p;
    for (Vec& a : v) p.push_back(a.data());
    return p;
}
std::vector<Vec> zeros_like(const std::vector<Vec>& v, float fill = 0.0f) {
    std::vector<Vec> z;
    for (const Vec& a : v) z.emplace_back(a.size(), fill);
    return z;
}

std::vector<int64_t> random_labels(int64_t N, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int64_t> y(static_cast<size_t>(N));
    for (auto& v : y) v = int64_t(rng() % 10);
    return y;
}

int g_failures = 0;

// One line per check: worst relative error of each quantity, then ok or FAIL with the names
// of the tensors beyond tolerance.
struct Check {
    std::string failed;
    void add(const std::string& what, double err, double tol) {
        if (!(err <= tol)) failed += " " + what;
    }
};

// Net::train_step and Net::forward against the reference at batch N; train_step's grads
// are prefilled with NaN (they must be overwritten) and the step is run twice (no
// accumulation across calls). Returns the step's grads for the thread-invariance check.
std::vector<Vec> validate(Net& net, const std::vector<Vec>& params, int64_t N, int threads) {
    set_num_threads(threads);
    const Vec x = bench::randn(size_t(N * 32 * 32), 100 + uint32_t(N));
    const std::vector<int64_t> labels = random_labels(N, 200 + uint32_t(N));
    const Reference ref = reference(x, labels.data(), N, params);
    constexpr double kTolOut = 1e-4, kTolGrad = 1e-3, kTolLoss = 1e-5;
    static const char* names[] = {"dC1.weight", "dC1.bias", "dC3.weight", "dC3.bias", "dF5.weight",
                                  "dF5.bias",   "dF6.weight", "dF6.bias", "dout.weight", "dout.bias"};

    std::vector<Vec> grads = zeros_like(params, std::numeric_limits<float>::quiet_NaN());
    Vec out(size_t(N * 10), std::numeric_limits<float>::quiet_NaN());
    auto g = ptrs(grads);
    const auto p = const_ptrs(params);
    double loss = 0;
    for (int rep = 0; rep < 2; rep++)
        loss = net.train_step(out.data(), g.data(), x.data(), labels.data(), N, p.data(), nullptr,
                              loss_kind("cross_entropy"), StepNoise{});
    Vec fwd(size_t(N * 10), std::numeric_limits<float>::quiet_NaN());
    net.forward(fwd.data(), x.data(), N, p.data(), nullptr);

    Check c;
    const double loss_err = std::fabs(loss - ref.loss) / std::max(1.0, std::fabs(ref.loss));
    c.add("loss", loss_err, kTolLoss);
    const double out_err = rel_err(out, ref.logits), fwd_err = rel_err(fwd, ref.logits);
    c.add("train_step-logits", out_err, kTolOut);
    c.add("forward-logits", fwd_err, kTolOut);
    double grad_err = 0;
    for (size_t i = 0; i < grads.size(); i++) {
        const double e = rel_err(grads[i], ref.grads[i]);
        c.add(names[i], e, kTolGrad);
        grad_err = std::max(grad_err, e);
    }
    std::printf("check      N=%-5lld threads=%d  rel err: loss %.1e  train logits %.1e  grads %.1e  "
                "forward %.1e  (tol %.0e/%.0e/%.0e)  %s%s\n",
                (long long)N, threads, loss_err, out_err, grad_err, fwd_err, kTolLoss, kTolOut,
                kTolGrad, c.failed.empty() ? "ok" : "FAIL:", c.failed.c_str());
    if (!c.failed.empty()) g_failures++;
    return grads;
}

// ---------------------------------------------------------------- timing

bench::Peak g_peak;  // of one core at the level the core runs

// Median seconds per call, with the inner count chosen so one timed repeat takes ~50 ms.
template <class F>
double time_call(F&& f) {
    f();
    const double t0 = bench::now_s();
    f();
    const double once = std::max(bench::now_s() - t0, 1e-7);
    return bench::time_per_call(f, std::max(1, int(0.05 / once)), 7);
}

void report(const char* workload, int64_t N, int threads, double sec, double flops_per_image) {
    const double ips = double(N) / sec, flops = flops_per_image * double(N) / sec;
    std::printf("%-10s N=%-5lld threads=%d  %9.3f ms/iter  %9.0f img/s  %9.2f us/img  %7.2f GFLOP/s  %5.1f%% of %s peak\n",
                workload, (long long)N, threads, sec * 1e3, ips, 1e6 / ips, flops * 1e-9,
                100.0 * flops / (g_peak.flops * threads), g_peak.level.c_str());
}

std::vector<int> parse_threads(int argc, char** argv) {
    std::vector<int> t;
    std::stringstream ss(argc > 1 ? argv[1] : "1,2");
    for (std::string item; std::getline(ss, item, ',');)
        if (std::atoi(item.c_str()) >= 1) t.push_back(std::atoi(item.c_str()));
    return t.empty() ? std::vector<int>{1} : t;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<int> thread_counts = parse_threads(argc, argv);
    Net net(lenet5_layers(), 1, 32, 32);
    const std::vector<Vec> params = random_params(net, 7);
    const auto p = const_ptrs(params);
    const Flops flops = lenet5_flops();

    // 1. Validate: every thread count, odd batches (uneven blocks, a partial inference chunk).
    for (int64_t N : {1, 37}) {
        std::vector<Vec> first;
        for (int threads : thread_counts) {
            std::vector<Vec> g = validate(net, params, N, threads);
            if (first.empty()) {
                first = g;
                continue;
            }
            bool same = true;  // Net promises bit-identical results for any thread count
            for (size_t i = 0; i < g.size(); i++)
                same = same && std::memcmp(g[i].data(), first[i].data(), sizeof(float) * g[i].size()) == 0;
            std::printf("check      N=%-5lld threads=%d  grads bit-identical to threads=%d: %s\n",
                        (long long)N, threads, thread_counts[0], same ? "ok" : "FAIL");
            if (!same) g_failures++;
        }
    }
    if (g_failures) {
        std::printf("FAIL: %d validation failures; nothing timed\n", g_failures);
        return 1;
    }

    // 2. Time.
    g_peak = bench::peak_flops_per_core();
    std::printf("%s\n", g_peak.header().c_str());
    std::printf("LeNet-5 FLOPs per image (conv/linear MACs x2): forward %.3f M, training step %.3f M\n",
                flops.fwd * 1e-6, flops.train * 1e-6);
    double train64[2] = {0, 0};  // seconds per step at batch 64 with 1 and 2 threads
    for (int threads : thread_counts) {
        set_num_threads(threads);
        for (int64_t N : {16, 64, 256}) {
            const Vec x = bench::randn(size_t(N * 32 * 32), 1);
            const std::vector<int64_t> labels = random_labels(N, 2);
            std::vector<Vec> grads = zeros_like(params);
            Vec out(size_t(N * 10));
            auto g = ptrs(grads);
            const double sec = time_call([&] {
                net.train_step(out.data(), g.data(), x.data(), labels.data(), N, p.data(), nullptr,
                               loss_kind("cross_entropy"), StepNoise{});
            });
            report("train", N, threads, sec, flops.train);
            if (N == 64 && (threads == 1 || threads == 2)) train64[threads - 1] = sec;
        }
        for (int64_t N : {1, 1000}) {
            const Vec x = bench::randn(size_t(N * 32 * 32), 3);
            Vec out(size_t(N * 10));
            const double sec = time_call([&] { net.forward(out.data(), x.data(), N, p.data(), nullptr); });
            report("inference", N, threads, sec, flops.fwd);
        }
    }
    if (train64[0] > 0 && train64[1] > 0)
        std::printf("speedup train N=64 threads 1->2: %.2fx\n", train64[0] / train64[1]);
    return 0;
}
