// C++ tests of the core without Python: the fast paths against the naive oracles, the
// thread-count invariance, and the shape checks. Exits non-zero when any check fails.
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "activations.h"
#include "conv2d.h"
#include "linear.h"
#include "losses.h"
#include "parallel.h"
#include "pool2d.h"

using namespace pylenet;

namespace {

int g_passed = 0, g_failed = 0;

void expect(bool ok, const std::string& what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

std::vector<float> randn(size_t n, std::mt19937& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// Largest |a - b| / (1 + |b|).
double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double worst = a.size() == b.size() ? 0.0 : INFINITY;
    for (size_t i = 0; i < a.size() && i < b.size(); i++)
        worst = std::fmax(worst, std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(double(b[i]))));
    return worst;
}

bool throws_invalid(void (*f)()) {
    try {
        f();
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

void test_conv2d(std::mt19937& rng) {
    struct Case { int64_t N, C, H, W, K, R, S, stride, pad; };
    const Case cases[] = {{1, 1, 32, 32, 6, 5, 5, 1, 0}, {4, 6, 14, 14, 16, 5, 5, 1, 0},
                          {2, 3, 17, 13, 4, 3, 5, 2, 1}, {3, 2, 7, 9, 5, 3, 3, 3, 2},
                          {1, 1, 1, 1, 1, 1, 1, 1, 0},   {5, 4, 6, 5, 3, 2, 4, 1, 2},
                          {17, 2, 9, 11, 3, 5, 5, 2, 2}};
    for (const Case& c : cases) {
        const Shape xs = {c.N, c.C, c.H, c.W}, ws = {c.K, c.C, c.R, c.S};
        const Conv2dParams p = check_conv2d(xs, ws, c.K, c.stride, c.pad);
        const std::string tag = "conv2d " + shape_str(xs) + " w " + shape_str(ws) + " stride " +
                                std::to_string(c.stride) + " pad " + std::to_string(c.pad);
        auto x = randn(size_t(numel(xs)), rng), w = randn(size_t(numel(ws)), rng);
        auto b = randn(size_t(c.K), rng);
        const size_t ny = size_t(c.N * c.K * p.out_h() * p.out_w());
        std::vector<float> y(ny, NAN), y_ref(ny);
        conv2d_forward(y.data(), x.data(), w.data(), b.data(), p);
        conv2d_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-5, tag + " forward");

        auto dy = randn(ny, rng);
        std::vector<float> dx(x.size(), NAN), dw(w.size(), NAN), db(b.size(), NAN);
        std::vector<float> dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
        conv2d_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
        conv2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(),
                              dy.data(), p);
        expect(max_rel_err(dx, dx_ref) < 1e-4, tag + " dx");
        expect(max_rel_err(dw, dw_ref) < 1e-4, tag + " dw");
        expect(max_rel_err(db, db_ref) < 1e-4, tag + " db");

        // Same results, bit for bit, with one thread and with two.
        const int saved = get_num_threads();
        set_num_threads(1);
        std::vector<float> dx1(x.size()), dw1(w.size()), db1(b.size());
        conv2d_backward(dx1.data(), dw1.data(), db1.data(), x.data(), w.data(), dy.data(), p);
        set_num_threads(2);
        std::vector<float> dx2(x.size()), dw2(w.size()), db2(b.size());
        conv2d_backward(dx2.data(), dw2.data(), db2.data(), x.data(), w.data(), dy.data(), p);
        set_num_threads(saved);
        expect(dx1 == dx2 && dw1 == dw2 && db1 == db2, tag + " 1 vs 2 threads bit-identical");
    }
}

void test_linear(std::mt19937& rng) {
    const int64_t shapes[][3] = {{1, 1, 1}, {64, 400, 120}, {3, 17, 5}, {64, 84, 10}};
    for (const auto& s : shapes) {
        const LinearParams p = check_linear({s[0], s[1]}, {s[2], s[1]}, s[2]);
        auto x = randn(size_t(p.N * p.I), rng), w = randn(size_t(p.O * p.I), rng);
        auto b = randn(size_t(p.O), rng), dy = randn(size_t(p.N * p.O), rng);
        std::vector<float> y(size_t(p.N * p.O)), y_ref(y.size());
        linear_forward(y.data(), x.data(), w.data(), b.data(), p);
        std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
        linear_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
        std::vector<float> dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) {
                double acc = b[o];
                for (int64_t i = 0; i < p.I; i++) acc += double(x[n * p.I + i]) * w[o * p.I + i];
                y_ref[n * p.O + o] = float(acc);
            }
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t i = 0; i < p.I; i++) {
                double acc = 0;
                for (int64_t o = 0; o < p.O; o++) acc += double(dy[n * p.O + o]) * w[o * p.I + i];
                dx_ref[n * p.I + i] = float(acc);
            }
        for (int64_t o = 0; o < p.O; o++) {
            double accb = 0;
            for (int64_t n = 0; n < p.N; n++) accb += dy[n * p.O + o];
            db_ref[o] = float(accb);
            for (int64_t i = 0; i < p.I; i++) {
                double acc = 0;
                for (int64_t n = 0; n < p.N; n++) acc += double(dy[n * p.O + o]) * x[n * p.I + i];
                dw_ref[o * p.I + i] = float(acc);
            }
        }
        const std::string tag = "linear N=" + std::to_string(p.N) + " I=" + std::to_string(p.I) +
                                " O=" + std::to_string(p.O);
        expect(max_rel_err(y, y_ref) < 1e-4, tag + " forward");
        expect(max_rel_err(dx, dx_ref) < 1e-4, tag + " dx");
        expect(max_rel_err(dw, dw_ref) < 1e-4, tag + " dw");
        expect(max_rel_err(db, db_ref) < 1e-4, tag + " db");
    }
}

void test_pool(std::mt19937& rng) {
    const Pool2dParams p = check_pool2d("maxpool2d", {2, 3, 7, 9}, 3, 2);
    auto x = randn(size_t(2 * 3 * 7 * 9), rng);
    const int64_t P = p.out_h(), Q = p.out_w(), ny = p.N * p.C * P * Q;
    std::vector<float> y(static_cast<size_t>(ny)), ya(static_cast<size_t>(ny));
    std::vector<int32_t> arg(static_cast<size_t>(ny));
    maxpool2d_forward(y.data(), arg.data(), x.data(), p);
    avgpool2d_forward(ya.data(), x.data(), p);
    bool max_ok = true, avg_ok = true;
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                float best = -INFINITY;
                double sum = 0;
                for (int64_t r = 0; r < 3; r++)
                    for (int64_t s = 0; s < 3; s++) {
                        const float v = x[nc * 63 + (oh * 2 + r) * 9 + ow * 2 + s];
                        best = std::fmax(best, v);
                        sum += v;
                    }
                const int64_t i = (nc * P + oh) * Q + ow;
                max_ok &= y[i] == best && x[nc * 63 + arg[i]] == best;
                avg_ok &= std::fabs(ya[i] - sum / 9) < 1e-5;
            }
    expect(max_ok, "maxpool2d forward and argmax");
    expect(avg_ok, "avgpool2d forward");
    std::vector<float> dy(static_cast<size_t>(ny), 1.0f), dx(x.size(), NAN);
    maxpool2d_backward(dx.data(), dy.data(), arg.data(), p.N, p.C, p.H, p.W, P, Q);
    double total = 0;
    for (float v : dx) total += v;
    expect(total == double(ny), "maxpool2d backward routes every dy once");
    std::vector<float> tie(16, 1.0f), yt(4);
    std::vector<int32_t> at(4);
    maxpool2d_forward(yt.data(), at.data(), tie.data(), check_pool2d("maxpool2d", {1, 1, 4, 4}, 2, 2));
    expect(at[0] == 0 && at[1] == 2 && at[2] == 8 && at[3] == 10, "maxpool2d ties pick the first");
}

void test_losses() {
    const float logits[] = {1.0f, 2.0f, 3.0f, 1000.0f, 0.0f, -1000.0f};
    const int64_t labels[] = {2, 0};
    float d[6];
    const double loss = softmax_cross_entropy(d, logits, labels, 2, 3);
    const double want0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
    expect(std::fabs(loss - want0 / 2) < 1e-5, "softmax_cross_entropy stable value");
    expect(std::fabs(d[0] + d[1] + d[2]) < 1e-6 && std::fabs(d[3]) < 1e-6, "dlogits rows sum to 0");
    float p[3], g[3];
    softmax(p, logits, 1, 3);
    expect(std::fabs(p[0] + p[1] + p[2] - 1.0f) < 1e-6, "softmax row sums to 1");
    const float a[] = {1, 2, 3}, t[] = {1, 0, 5};
    expect(std::fabs(mse_loss(g, a, t, 3) - 8.0 / 3) < 1e-6 && g[1] == 4.0f / 3, "mse_loss");
    const float xs[] = {-1.0f, 0.0f, 2.0f, NAN};
    float ys[4];
    relu_forward(ys, xs, 4);
    expect(ys[0] == 0 && ys[2] == 2 && std::isnan(ys[3]), "relu keeps NaN");
}

void test_checks() {
    expect(throws_invalid([] { check_conv2d({1, 3, 8, 8}, {4, 2, 3, 3}, -1, 1, 0); }),
           "conv2d channel mismatch throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 4, 4}, {1, 1, 7, 7}, -1, 1, 1); }),
           "conv2d kernel larger than padded input throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 8, 8}, {1, 1, 3, 3}, -1, 0, 0); }),
           "conv2d stride 0 throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 8, 8}, {1, 1, 3, 3}, -1, 1, -1); }),
           "conv2d negative padding throws");
    expect(throws_invalid([] { check_conv2d({1, 8, 8}, {1, 1, 3, 3}, -1, 1, 0); }),
           "conv2d 3-D x throws");
    expect(throws_invalid([] { check_pool2d("maxpool2d", {1, 1, 2, 2}, 3, 1); }),
           "pool kernel larger than input throws");
    expect(throws_invalid([] { check_linear({2, 5}, {3, 4}, -1); }), "linear mismatch throws");
    expect(throws_invalid([] { check_softmax_cross_entropy({2, 3}, {3}); }),
           "labels length mismatch throws");
    try {
        check_conv2d({1, 3, 8, 8}, {4, 2, 3, 3}, -1, 1, 0);
    } catch (const std::invalid_argument& e) {
        const std::string msg = e.what();
        expect(msg.find("(2)") != std::string::npos && msg.find("(3)") != std::string::npos,
               "conv2d message names received and expected channels: " + msg);
    }
}

}  // namespace

int main() {
    std::mt19937 rng(1234);
    test_conv2d(rng);
    test_linear(rng);
    test_pool(rng);
    test_losses();
    test_checks();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
