// Whole-network benchmark of LeNet-5 on the core's fused engine (pylenet::Net), no Python:
// validates Net::train_step (loss, logits, every gradient) and Net::forward against a
// layer-by-layer reference built from the naive conv and plain loops, then times training
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

#include "bench_common.h"
#include "conv2d.h"
#include "net.h"
#include "parallel.h"

using namespace pylenet;

namespace {

using Vec = std::vector<float>;

// LeNet-5, relu/max, as pylenet.LeNet5 describes it to the core.
std::vector<LayerDesc> lenet5_layers() {
    auto conv = [](int64_t c, int64_t k) {
        LayerDesc d;
        d.kind = &layer_kind("conv2d"), d.in = c, d.out = k, d.kernel = 5;
        return d;
    };
    auto linear = [](int64_t i, int64_t o) {
        LayerDesc d;
        d.kind = &layer_kind("linear"), d.in = i, d.out = o;
        return d;
    };
    auto simple = [](const char* kind) {
        LayerDesc d;
        d.kind = &layer_kind(kind);
        return d;
    };
    auto pool = [] {
        LayerDesc d;
        d.kind = &layer_kind("maxpool2d"), d.kernel = 2, d.stride = 2;
        return d;
    };
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

void relu_ref(Vec& y, const Vec& x) {
    y.resize(x.size());
    for (size_t i = 0; i < x.size(); i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}
// dx = dy where x > 0.
void relu_back_ref(Vec& dx, const Vec& x, const Vec& dy) {
    dx.resize(x.size());
    for (size_t i = 0; i < x.size(); i++) dx[i] = x[i] > 0 ? dy[i] : 0.0f;
}

// 2x2 stride-2 max pool over (N*C) planes of H x W; arg holds the winner's index into x.
void maxpool_ref(Vec& y, std::vector<int64_t>& arg, const Vec& x, int64_t planes, int64_t H, int64_t W) {
    const int64_t P = H / 2, Q = W / 2;
    y.assign(size_t(planes * P * Q), 0.0f);
    arg.assign(y.size(), 0);
    for (int64_t c = 0; c < planes; c++)
        for (int64_t i = 0; i < P; i++)
            for (int64_t j = 0; j < Q; j++) {
                int64_t best = c * H * W + 2 * i * W + 2 * j;
                for (int64_t di = 0; di < 2; di++)
                    for (int64_t dj = 0; dj < 2; dj++) {
                        const int64_t k = c * H * W + (2 * i + di) * W + 2 * j + dj;
                        if (x[size_t(k)] > x[size_t(best)]) best = k;
                    }
                const size_t o = size_t((c * P + i) * Q + j);
                y[o] = x[size_t(best)];
                arg[o] = best;
            }
}
// dx = 0, then dx[arg] += dy.
void maxpool_back_ref(Vec& dx, size_t nx, const Vec& dy, const std::vector<int64_t>& arg) {
    dx.assign(nx, 0.0f);
    for (size_t o = 0; o < dy.size(); o++) dx[size_t(arg[o])] += dy[o];
}

// y (N,O) = x (N,I) w (O,I)^T + b, accumulated in double.
void linear_ref(Vec& y, const Vec& x, const Vec& w, const Vec& b, int64_t N, int64_t I, int64_t O) {
    y.resize(size_t(N * O));
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            double s = b[size_t(o)];
            for (int64_t i = 0; i < I; i++) s += double(x[size_t(n * I + i)]) * w[size_t(o * I + i)];
            y[size_t(n * O + o)] = float(s);
        }
}
// dx = dy w, dw = dy^T x, db = sum_n dy.
void linear_back_ref(Vec& dx, Vec& dw, Vec& db, const Vec& x, const Vec& w, const Vec& dy,
                     int64_t N, int64_t I, int64_t O) {
    dx.assign(size_t(N * I), 0.0f);
    dw.assign(size_t(O * I), 0.0f);
    db.assign(size_t(O), 0.0f);
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t o = 0; o < O; o++) s += double(dy[size_t(n * O + o)]) * w[size_t(o * I + i)];
            dx[size_t(n * I + i)] = float(s);
        }
    for (int64_t o = 0; o < O; o++) {
        double sb = 0;
        for (int64_t n = 0; n < N; n++) sb += dy[size_t(n * O + o)];
        db[size_t(o)] = float(sb);
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += double(dy[size_t(n * O + o)]) * x[size_t(n * I + i)];
            dw[size_t(o * I + i)] = float(s);
        }
    }
}

struct Reference {
    Vec logits;
    double loss = 0;
    std::vector<Vec> grads;  // param_shapes order
};

// LeNet-5 forward (and, when labels is non-null, mean cross-entropy and backward) layer by
// layer: conv2d_*_naive for the convolutions, the plain loops above for everything else.
Reference reference(const Vec& x, const int64_t* labels, int64_t N, const std::vector<Vec>& p) {
    const Conv2dParams c1 = check_conv2d({N, 1, 32, 32}, {6, 1, 5, 5}, 6, 1, 0);
    const Conv2dParams c3 = check_conv2d({N, 6, 14, 14}, {16, 6, 5, 5}, 16, 1, 0);
    Vec a1(size_t(N * 6 * 28 * 28)), r1, s2, a3(size_t(N * 16 * 10 * 10)), r3, s4, f5, r5, f6, r6;
    std::vector<int64_t> arg2, arg4;
    Reference ref;
    conv2d_forward_naive(a1.data(), x.data(), p[0].data(), p[1].data(), c1);  // 6@28x28
    relu_ref(r1, a1);
    maxpool_ref(s2, arg2, r1, N * 6, 28, 28);                                 // 6@14x14
    conv2d_forward_naive(a3.data(), s2.data(), p[2].data(), p[3].data(), c3);  // 16@10x10
    relu_ref(r3, a3);
    maxpool_ref(s4, arg4, r3, N * 16, 10, 10);                                // 16@5x5 = 400
    linear_ref(f5, s4, p[4], p[5], N, 400, 120);
    relu_ref(r5, f5);
    linear_ref(f6, r5, p[6], p[7], N, 120, 84);
    relu_ref(r6, f6);
    linear_ref(ref.logits, r6, p[8], p[9], N, 84, 10);
    if (!labels) return ref;

    // loss = mean_n [logsumexp(z_n) - z_n[label]]; dz = (softmax(z) - onehot) / N.
    Vec dz(ref.logits.size());
    for (int64_t n = 0; n < N; n++) {
        const float* z = ref.logits.data() + n * 10;
        double m = z[0], s = 0;
        for (int k = 1; k < 10; k++) m = std::max<double>(m, z[k]);
        for (int k = 0; k < 10; k++) s += std::exp(z[k] - m);
        ref.loss += m + std::log(s) - z[labels[n]];
        for (int k = 0; k < 10; k++)
            dz[size_t(n * 10 + k)] = float((std::exp(z[k] - m) / s - (k == labels[n])) / double(N));
    }
    ref.loss /= double(N);

    ref.grads.resize(p.size());
    Vec d6, d5, d4, dr6, dr5, dr3, dr1, d3, d2, unused;
    linear_back_ref(dr6, ref.grads[8], ref.grads[9], r6, p[8], dz, N, 84, 10);
    relu_back_ref(d6, f6, dr6);
    linear_back_ref(dr5, ref.grads[6], ref.grads[7], r5, p[6], d6, N, 120, 84);
    relu_back_ref(d5, f5, dr5);
    linear_back_ref(d4, ref.grads[4], ref.grads[5], s4, p[4], d5, N, 400, 120);
    maxpool_back_ref(dr3, r3.size(), d4, arg4);
    relu_back_ref(d3, a3, dr3);
    Vec dx3(s2.size());
    ref.grads[2].resize(p[2].size());
    ref.grads[3].resize(p[3].size());
    conv2d_backward_naive(dx3.data(), ref.grads[2].data(), ref.grads[3].data(), s2.data(), p[2].data(),
                          d3.data(), c3);
    maxpool_back_ref(dr1, r1.size(), dx3, arg2);
    relu_back_ref(d2, a1, dr1);
    Vec dx1(x.size());
    ref.grads[0].resize(p[0].size());
    ref.grads[1].resize(p[1].size());
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
        loss = net.train_step(out.data(), g.data(), x.data(), labels.data(), N, p.data(),
                              loss_kind("cross_entropy"));
    Vec fwd(size_t(N * 10), std::numeric_limits<float>::quiet_NaN());
    net.forward(fwd.data(), x.data(), N, p.data());

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
                net.train_step(out.data(), g.data(), x.data(), labels.data(), N, p.data(),
                               loss_kind("cross_entropy"));
            });
            report("train", N, threads, sec, flops.train);
            if (N == 64 && (threads == 1 || threads == 2)) train64[threads - 1] = sec;
        }
        for (int64_t N : {1, 1000}) {
            const Vec x = bench::randn(size_t(N * 32 * 32), 3);
            Vec out(size_t(N * 10));
            const double sec = time_call([&] { net.forward(out.data(), x.data(), N, p.data()); });
            report("inference", N, threads, sec, flops.fwd);
        }
    }
    if (train64[0] > 0 && train64[1] > 0)
        std::printf("speedup train N=64 threads 1->2: %.2fx\n", train64[0] / train64[1]);
    return 0;
}
