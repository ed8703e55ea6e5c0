// C++ tests of the core without Python: the fast paths against the naive oracles, the
// thread-count invariance, and the shape checks. Exits non-zero when any check fails.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/parallel.h"
#include "check.h"
#include "gemm/gemm.h"
#include "gemm/simd.h"
#include "net/net.h"
#include "net/registry.h"
#include "ops/activations.h"
#include "ops/augment.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#include "ops/losses.h"
#include "ops/masked_conv2d.h"
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

namespace {

// The message of the std::invalid_argument that f throws, or "" when it throws none.
std::string invalid_message(void (*f)()) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

bool throws_invalid(void (*f)()) { return !invalid_message(f).empty(); }

void test_conv2d(std::mt19937& rng) {
    struct Case { int64_t N, C, H, W, K, R, S, stride, pad; };
    const Case cases[] = {{1, 1, 32, 32, 6, 5, 5, 1, 0}, {4, 6, 14, 14, 16, 5, 5, 1, 0},
                          {2, 3, 17, 13, 4, 3, 5, 2, 1}, {3, 2, 7, 9, 5, 3, 3, 3, 2},
                          {1, 1, 1, 1, 1, 1, 1, 1, 0},   {5, 4, 6, 5, 3, 2, 4, 1, 2},
                          {17, 2, 9, 11, 3, 5, 5, 2, 2}};
    for (const Case& c : cases) {
        const Shape xs = {c.N, c.C, c.H, c.W}, ws = {c.K, c.C, c.R, c.S};
        const Conv2dParams p = check_conv2d(xs, ws, Shape{c.K}, c.stride, c.pad);
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
        const LinearParams p = check_linear({s[0], s[1]}, {s[2], s[1]}, Shape{s[2]});
        auto x = randn(size_t(p.N * p.I), rng), w = randn(size_t(p.O * p.I), rng);
        auto b = randn(size_t(p.O), rng), dy = randn(size_t(p.N * p.O), rng);
        std::vector<float> y(size_t(p.N * p.O)), y_ref(y.size());
        linear_forward(y.data(), x.data(), w.data(), b.data(), p);
        std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
        linear_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
        std::vector<float> dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
        linear_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        linear_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
        const std::string tag = "linear N=" + std::to_string(p.N) + " I=" + std::to_string(p.I) +
                                " O=" + std::to_string(p.O);
        expect(max_rel_err(y, y_ref) < 1e-4, tag + " forward");
        expect(max_rel_err(dx, dx_ref) < 1e-4, tag + " dx");
        expect(max_rel_err(dw, dw_ref) < 1e-4, tag + " dw");
        expect(max_rel_err(db, db_ref) < 1e-4, tag + " db");
    }
}

// Every pooling path (the 2x2 fast path, other windows and strides, NaN inputs) against the
// naive oracle: forward values and argmax exactly, backward through the same argmax.
void test_pool(std::mt19937& rng) {
    struct Case { int64_t N, C, H, W, kernel, stride; };
    const Case cases[] = {{2, 3, 7, 9, 3, 2}, {2, 6, 28, 28, 2, 2}, {3, 16, 10, 10, 2, 2},
                          {1, 2, 9, 11, 2, 2}, {1, 1, 5, 5, 2, 1}, {2, 1, 6, 7, 3, 3}};
    for (const Case& c : cases) {
        const Pool2dParams p = check_pool2d("maxpool2d", {c.N, c.C, c.H, c.W}, c.kernel, c.stride);
        auto x = randn(size_t(c.N * c.C * c.H * c.W), rng);
        x[3] = NAN;  // NaN wins its window
        const int64_t ny = p.N * p.C * p.out_h() * p.out_w();
        std::vector<float> y(size_t(ny), -1.0f), y_ref(static_cast<size_t>(ny)), ya(static_cast<size_t>(ny)),
            ya_ref(static_cast<size_t>(ny));
        std::vector<int32_t> arg(size_t(ny), -1), arg_ref(static_cast<size_t>(ny));
        maxpool2d_forward(y.data(), arg.data(), x.data(), p);
        maxpool2d_forward_naive(y_ref.data(), arg_ref.data(), x.data(), p);
        avgpool2d_forward(ya.data(), x.data(), p);
        avgpool2d_forward_naive(ya_ref.data(), x.data(), p);
        auto dy = randn(size_t(ny), rng);
        std::vector<float> dx(x.size(), NAN), dx_ref(x.size()), dxa(x.size(), NAN), dxa_ref(x.size());
        maxpool2d_backward(dx.data(), dy.data(), arg.data(), p.N, p.C, p.H, p.W, p.out_h(), p.out_w());
        maxpool2d_backward_naive(dx_ref.data(), dy.data(), arg_ref.data(), p);
        avgpool2d_backward(dxa.data(), dy.data(), p);
        avgpool2d_backward_naive(dxa_ref.data(), dy.data(), p);
        bool same_max = arg == arg_ref;
        for (int64_t i = 0; i < ny; i++)
            same_max = same_max && (y[i] == y_ref[i] || (std::isnan(y[i]) && std::isnan(y_ref[i])));
        const std::string tag = "pool " + std::to_string(c.N) + "x" + std::to_string(c.C) + "x" +
                                std::to_string(c.H) + "x" + std::to_string(c.W) + " k" +
                                std::to_string(c.kernel) + " s" + std::to_string(c.stride);
        expect(same_max, tag + " maxpool forward and argmax match the oracle exactly");
        expect(max_rel_err(dx, dx_ref) < 1e-6, tag + " maxpool backward");
        // the NaN spreads over its windows alike on both sides; compare the finite outputs
        for (size_t i = 0; i < ya.size(); i++) if (std::isnan(ya_ref[i])) ya[i] = ya_ref[i] = 0;
        expect(max_rel_err(ya, ya_ref) < 1e-5, tag + " avgpool forward");
        expect(max_rel_err(dxa, dxa_ref) < 1e-5, tag + " avgpool backward");
    }
    std::vector<float> tie(16, 1.0f), yt(4);
    std::vector<int32_t> at(4);
    maxpool2d_forward(yt.data(), at.data(), tie.data(), check_pool2d("maxpool2d", {1, 1, 4, 4}, 2, 2));
    expect(at[0] == 0 && at[1] == 2 && at[2] == 8 && at[3] == 10, "maxpool2d ties pick the first");
}

// Losses and activations against their naive oracles, plus the cases that need the stable
// forms (huge logits) and PyTorch's NaN rule.
void test_losses(std::mt19937& rng) {
    const float logits[] = {1.0f, 2.0f, 3.0f, 1000.0f, 0.0f, -1000.0f};
    const int64_t labels[] = {2, 0};
    float d[6], d_ref[6];
    const double loss = softmax_cross_entropy(d, logits, labels, 2, 3);
    const double loss_ref = softmax_cross_entropy_naive(d_ref, logits, labels, 2, 3);
    const double want0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
    expect(std::fabs(loss_ref - want0 / 2) < 1e-9, "softmax_cross_entropy_naive stable value");
    expect(std::fabs(loss - loss_ref) < 1e-6, "softmax_cross_entropy matches the oracle");
    expect(max_rel_err(std::vector<float>(d, d + 6), std::vector<float>(d_ref, d_ref + 6)) < 1e-6,
           "dlogits match the oracle");
    const int64_t N = 5, C = 7;
    auto z = randn(size_t(N * C), rng), t = randn(size_t(N * C), rng);
    {  // label smoothing: the target (1 - s) onehot + s / C, against the oracle
        const int64_t y[] = {0, 6, 3, 3, 1};
        std::vector<float> ds(z.size()), ds_ref(z.size()), d0(z.size());
        const double ls = softmax_cross_entropy(ds.data(), z.data(), y, N, C, 0.1f);
        const double ls_ref = softmax_cross_entropy_naive(ds_ref.data(), z.data(), y, N, C, double(0.1f));
        const double l0 = softmax_cross_entropy(d0.data(), z.data(), y, N, C);
        expect(std::fabs(ls - ls_ref) < 1e-6 && max_rel_err(ds, ds_ref) < 1e-5,
               "label-smoothed softmax_cross_entropy matches the oracle");
        expect(std::fabs(ls - l0) > 1e-3 && std::fabs(ds[1] - d0[1]) > 1e-3,
               "label smoothing changes the loss and the gradient");
        expect(throws_invalid([] { check_label_smoothing("op", -0.1); }) &&
                   throws_invalid([] { check_label_smoothing("op", 1.5); }) &&
                   throws_invalid([] { check_label_smoothing("op", std::nan("")); }),
               "check_label_smoothing refuses values outside [0, 1]");
    }
    std::vector<float> p(z.size()), p_ref(z.size()), g(z.size()), g_ref(z.size());
    softmax(p.data(), z.data(), N, C);
    softmax_naive(p_ref.data(), z.data(), N, C);
    expect(max_rel_err(p, p_ref) < 1e-6, "softmax matches the oracle");
    const double m = mse_loss(g.data(), z.data(), t.data(), N * C);
    const double m_ref = mse_loss_naive(g_ref.data(), z.data(), t.data(), N * C);
    expect(std::fabs(m - m_ref) < 1e-6 * m_ref && max_rel_err(g, g_ref) < 1e-6, "mse_loss matches the oracle");

    auto x = randn(1000, rng), dy = randn(1000, rng);
    x[7] = NAN, x[8] = 0.0f;
    using Fwd = void (*)(float*, const float*, int64_t);
    using Bwd = void (*)(float*, const float*, const float*, int64_t);
    struct Act { const char* name; Fwd f, f_ref; Bwd b, b_ref; bool from_input; };
    const Act acts[] = {
        {"relu", relu_forward, relu_forward_naive, relu_backward, relu_backward_naive, true},
        {"sigmoid", sigmoid_forward, sigmoid_forward_naive, sigmoid_backward, sigmoid_backward_naive, false},
        {"tanh", tanh_forward, tanh_forward_naive, tanh_backward, tanh_backward_naive, false},
    };
    for (const Act& a : acts) {
        std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
        a.f(y.data(), x.data(), 1000);
        a.f_ref(y_ref.data(), x.data(), 1000);
        const std::vector<float>& from = a.from_input ? x : y_ref;
        a.b(dx.data(), from.data(), dy.data(), 1000);
        a.b_ref(dx_ref.data(), from.data(), dy.data(), 1000);
        expect(std::isnan(y[7]) && std::isnan(y_ref[7]) && std::isnan(dx[7]) == std::isnan(dx_ref[7]),
               std::string(a.name) + " NaN rule matches the oracle");
        y[7] = y_ref[7] = dx[7] = dx_ref[7] = 0.0f;
        expect(max_rel_err(y, y_ref) < 1e-6, std::string(a.name) + " forward matches the oracle");
        expect(max_rel_err(dx, dx_ref) < 1e-6, std::string(a.name) + " backward matches the oracle");
    }
}

// Every compiled level this CPU runs: gemm_a_rows/nt/tn against double-precision loops over
// sizes that hit every tile remainder, and rows split in two calls (as threads split them)
// give bit-identical results. Restores the level it started with.
void test_gemm_levels(std::mt19937& rng) {
    const std::string start = simd_level();
    const int64_t Ms[] = {1, 2, 3, 5, 7, 13, 17}, Ts[] = {1, 2, 3, 4, 9, 17}, Js[] = {1, 3, 8, 15, 16, 17, 33, 70};
    for (const std::string& level : simd_compiled()) {
        if (!simd_supported(level)) continue;
        simd_set_level(level);
        double worst = 0;
        bool split_same = true, tail_untouched = true;
        for (int64_t M : Ms)
            for (int64_t T : Ts)
                for (int64_t J : Js) {
                    // B rows at offsets 0, J+1, 2(J+1), ... of src (a gap between rows).
                    std::vector<float> A = randn(size_t(M * std::max(T, J)), rng),
                                       src = randn(size_t(T * (J + 1) + 1), rng);
                    std::vector<int64_t> off(static_cast<size_t>(T));
                    for (int64_t t = 0; t < T; t++) off[t] = t * (J + 1);
                    // nn: C (M, J) = A (M, T) B, row stride J + 2 with a sentinel after each row.
                    const int64_t ldc = J + 2;
                    std::vector<float> C(size_t(M * ldc), 7.0f), C2(C);
                    gemm_a_rows(C.data(), ldc, A.data(), M, T, src.data(), off.data(), J, false);
                    const int64_t half = M / 2;
                    gemm_a_rows(C2.data(), ldc, A.data(), half, T, src.data(), off.data(), J, false);
                    gemm_a_rows(C2.data() + half * ldc, ldc, A.data() + half * T, M - half, T,
                                src.data(), off.data(), J, false);
                    for (int64_t i = 0; i < M; i++) {
                        tail_untouched = tail_untouched && C[i * ldc + J] == 7.0f && C[i * ldc + J + 1] == 7.0f;
                        for (int64_t j = 0; j < J; j++) {
                            double want = 0;
                            for (int64_t t = 0; t < T; t++) want += double(A[i * T + t]) * src[off[t] + j];
                            worst = std::fmax(worst, std::fabs(C[i * ldc + j] - want) / (1 + std::fabs(want)));
                            split_same = split_same && C[i * ldc + j] == C2[i * ldc + j];
                        }
                    }
                    // nt: D (M, T) += A (M, J; lda) B^T, starting from ones.
                    const int64_t lda = J + 1;
                    std::vector<float> An = randn(size_t(M * lda), rng), D(size_t(M * T), 1.0f), D2(D);
                    gemm_a_rows_t(D.data(), An.data(), lda, M, T, src.data(), off.data(), J);
                    gemm_a_rows_t(D2.data(), An.data(), lda, half, T, src.data(), off.data(), J);
                    gemm_a_rows_t(D2.data() + half * T, An.data() + half * lda, lda, M - half, T,
                                  src.data(), off.data(), J);
                    for (int64_t i = 0; i < M; i++)
                        for (int64_t t = 0; t < T; t++) {
                            double want = 1;
                            for (int64_t j = 0; j < J; j++) want += double(An[i * lda + j]) * src[off[t] + j];
                            worst = std::fmax(worst, std::fabs(D[i * T + t] - want) / (1 + std::fabs(want)));
                            split_same = split_same && D[i * T + t] == D2[i * T + t];
                        }
                    // tn: E (T, 16 or 32) += B (T, J) * F (J, Kc), B's columns in place and
                    // gathered through offj (a permutation of each row).
                    const int64_t Kc = M % 2 ? 16 : 32;
                    std::vector<int64_t> offj(static_cast<size_t>(J));
                    for (int64_t j = 0; j < J; j++) offj[j] = (j * 7 + 3) % J;
                    const int64_t* gathers[] = {nullptr, offj.data()};
                    for (const int64_t* oj : gathers) {
                        std::vector<float> F = randn(size_t(J * Kc), rng), E(size_t(T * Kc), 0.5f);
                        gemm_rows_d(E.data(), Kc, F.data(), Kc, T, Kc, src.data(), off.data(), oj, J);
                        for (int64_t t = 0; t < T; t++)
                            for (int64_t k = 0; k < Kc; k++) {
                                double want = 0.5;
                                for (int64_t j = 0; j < J; j++)
                                    want += double(src[off[t] + (oj ? oj[j] : j)]) * F[j * Kc + k];
                                worst = std::fmax(worst, std::fabs(E[t * Kc + k] - want) / (1 + std::fabs(want)));
                            }
                    }
                }
        expect(worst < 1e-5, "gemm kernels at " + level + " matches float64 loops (worst " + std::to_string(worst) + ")");
        expect(split_same, "gemm kernels at " + level + ": rows split in two calls give the same bits");
        expect(tail_untouched, "gemm_a_rows at " + level + " writes nothing past J columns");
    }
    simd_set_level(start);
    expect(simd_level() == start, "simd_set_level restores " + start);
    expect(throws_invalid([] { simd_set_level("avx1024"); }), "unknown SIMD level throws");
}

// The ops of LeNet5(variant="lecun98") against their naive oracles; the masked conv's masked
// weight gradient exactly 0; the backward passes independent of the thread count; the
// network refusing a missing or mis-shaped fixed array.
void test_lecun98_ops(std::mt19937& rng) {
    {
        auto x = randn(1000, rng);
        std::vector<float> y(x.size()), y_ref(x.size()), dx(x.size()), dx_ref(x.size());
        auto dy = randn(x.size(), rng);
        scaled_tanh_forward(y.data(), x.data(), int64_t(x.size()));
        scaled_tanh_forward_naive(y_ref.data(), x.data(), int64_t(x.size()));
        scaled_tanh_backward(dx.data(), y.data(), dy.data(), int64_t(x.size()));
        scaled_tanh_backward_naive(dx_ref.data(), y.data(), dy.data(), int64_t(x.size()));
        expect(max_rel_err(y, y_ref) < 1e-6, "scaled_tanh forward");
        expect(max_rel_err(dx, dx_ref) < 1e-6, "scaled_tanh backward");
        const float one = 1.0f;
        float f1 = 0.0f;
        scaled_tanh_forward(&f1, &one, 1);
        expect(std::fabs(f1 - 1.0f) < 1e-4f, "scaled_tanh f(1) = 1");
    }
    struct Pool { int64_t N, C, H, W, k, s; };
    for (const Pool& c : {Pool{2, 6, 28, 28, 2, 2}, Pool{17, 3, 7, 9, 3, 2}, Pool{1, 1, 5, 5, 2, 1}}) {
        const Shape xs = {c.N, c.C, c.H, c.W};
        const Pool2dParams p = check_subsample2d(xs, {c.C}, Shape{c.C}, c.k, c.s);
        const std::string tag = "subsample2d " + shape_str(xs) + " k" + std::to_string(c.k);
        auto x = randn(size_t(numel(xs)), rng), w = randn(size_t(c.C), rng), b = randn(size_t(c.C), rng);
        const size_t ny = size_t(c.N * c.C * p.out_h() * p.out_w());
        auto dy = randn(ny, rng);
        std::vector<float> y(ny), y_ref(ny), dx(x.size(), NAN), dx_ref(x.size()), dw(w.size(), NAN),
            dw_ref(w.size()), db(b.size(), NAN), db_ref(b.size());
        subsample2d_forward(y.data(), x.data(), w.data(), b.data(), p);
        subsample2d_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
        subsample2d_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
        subsample2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-5, tag + " forward");
        expect(max_rel_err(dx, dx_ref) < 1e-5 && max_rel_err(dw, dw_ref) < 1e-4 &&
                   max_rel_err(db, db_ref) < 1e-4, tag + " backward");
        const int saved = get_num_threads();
        set_num_threads(2);
        std::vector<float> dx2(x.size()), dw2(w.size()), db2(b.size());
        subsample2d_backward(dx2.data(), dw2.data(), db2.data(), x.data(), w.data(), dy.data(), p);
        set_num_threads(saved);
        expect(dx == dx2 && dw == dw2 && db == db2, tag + " backward 2 threads bit-identical");
    }
    {
        const Shape xs = {9, 6, 14, 14}, ws = {16, 6, 5, 5};
        std::vector<float> mask(16 * 6);
        for (size_t i = 0; i < mask.size(); i++) mask[i] = float((i * 7 + i / 6) % 3 != 0);
        const Conv2dParams p = check_masked_conv2d(xs, ws, {16, 6}, mask.data(), Shape{16}, 1, 0);
        auto x = randn(size_t(numel(xs)), rng), w = randn(size_t(numel(ws)), rng), b = randn(16, rng);
        const size_t ny = size_t(9 * 16 * 10 * 10);
        auto dy = randn(ny, rng);
        std::vector<float> y(ny), y_ref(ny), dx(x.size()), dx_ref(x.size()), dw(w.size(), NAN),
            dw_ref(w.size()), db(16), db_ref(16);
        masked_conv2d_forward(y.data(), x.data(), w.data(), mask.data(), b.data(), p);
        masked_conv2d_forward_naive(y_ref.data(), x.data(), w.data(), mask.data(), b.data(), p);
        masked_conv2d_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), mask.data(), dy.data(), p);
        masked_conv2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(),
                                     mask.data(), dy.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-4, "masked_conv2d forward");
        expect(max_rel_err(dx, dx_ref) < 1e-4 && max_rel_err(dw, dw_ref) < 1e-4 &&
                   max_rel_err(db, db_ref) < 1e-4, "masked_conv2d backward");
        bool zero = true;
        for (int64_t i = 0; i < numel(ws); i++)
            if (mask[size_t(i / 25)] == 0.0f && dw[size_t(i)] != 0.0f) zero = false;
        expect(zero, "masked_conv2d dw is exactly 0 where the mask is 0");
        expect(invalid_message([] {
                   const float m[2] = {1.0f, 0.5f};
                   check_masked_conv2d({1, 2, 5, 5}, {1, 2, 3, 3}, {1, 2}, m, std::nullopt, 1, 0);
               }).find("mask[0, 1] = 0.5") != std::string::npos,
               "masked_conv2d refuses a mask entry other than 0 and 1");
        expect(invalid_message([] {
                   check_masked_conv2d({1, 2, 5, 5}, {1, 2, 3, 3}, {2, 1}, nullptr, std::nullopt, 1, 0);
               }).find("mask must have shape (1, 2) (K, C), got (2, 1)") != std::string::npos,
               "masked_conv2d names the mask shape it expects");
    }
    {
        const LinearParams p = check_rbf({7, 84}, {10, 84});
        auto x = randn(size_t(7 * 84), rng), c = randn(size_t(10 * 84), rng), dy = randn(70, rng);
        std::vector<float> y(70), y_ref(70), dx(x.size(), NAN), dx_ref(x.size());
        rbf_forward(y.data(), x.data(), c.data(), p);
        rbf_forward_naive(y_ref.data(), x.data(), c.data(), p);
        rbf_backward(dx.data(), x.data(), c.data(), dy.data(), p);
        rbf_backward_naive(dx_ref.data(), x.data(), c.data(), dy.data(), p);
        expect(max_rel_err(y, y_ref) < 1e-5 && max_rel_err(dx, dx_ref) < 1e-4, "rbf forward and backward");
        const int64_t labels[7] = {0, 9, 3, 3, 1, 5, 7};
        std::vector<float> d(70), d_ref(70);
        for (auto& v : y) v *= 0.05f;  // penalties of a few units, where every term counts
        const double loss = rbf_map_loss(d.data(), y.data(), labels, 7, 10);
        const double loss_ref = rbf_map_loss_naive(d_ref.data(), y.data(), labels, 7, 10);
        expect(std::fabs(loss - loss_ref) < 1e-6 * (1 + std::fabs(loss_ref)) && max_rel_err(d, d_ref) < 1e-6,
               "rbf_map loss and gradient");
        expect(invalid_message([] { check_rbf({2, 84}, {10, 83}); })
                   .find("centres features centres.shape[1] (83) does not match x features x.shape[1] (84)") !=
                   std::string::npos, "rbf names the mismatched features");
    }
    // The network needs each fixed array, with its shape.
    expect(invalid_message([] {
               Net({make_layer("rbf", {{"in_features", 4}, {"out_features", 3}})}, 4, 1, 1);
           }).find("needs flat input") != std::string::npos, "Net: rbf needs flat input");
    expect(invalid_message([] {
               Net({make_layer("flatten"), make_layer("rbf", {{"in_features", 4}, {"out_features", 3}})}, 4, 1, 1);
           }).find("(RBF) centres must have shape (3, 4), got none") != std::string::npos,
           "Net: rbf without centres names the shape it needs");
}

// Distortions: the identity reproduces gather_pad_normalize bit for bit, an integer shift moves
// the padded image, and the random batch depends on (seed, epoch, index) only: not on the thread
// count, nor on the other images of the batch.
void test_augment(std::mt19937& rng) {
    const int64_t n = 24, H = 28, W = 28, pad = 2, Hp = H + 4, Wp = W + 4;
    std::vector<uint8_t> images(size_t(n * H * W));
    std::uniform_int_distribution<int> pixel(0, 255);
    for (auto& v : images) v = uint8_t(pixel(rng));
    std::vector<float> lut(256);
    for (int i = 0; i < 256; i++) lut[size_t(i)] = (float(i) / 255.0f - 0.1307f) / 0.3081f;
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) idx[size_t(i)] = (i * 7) % n;
    const size_t out_size = size_t(n * Hp * Wp);
    std::vector<float> plain(out_size), got(out_size);
    gather_pad_normalize(plain.data(), images.data(), idx.data(), n, H, W, pad, lut.data());
    gather_augment(got.data(), images.data(), idx.data(), n, H, W, pad, lut.data(), AugmentParams{}, 3, 1);
    expect(got == plain, "augment: all-zero ranges reproduce gather_pad_normalize exactly");

    std::vector<float> theta(size_t(n * 6), 0.0f);
    for (int64_t i = 0; i < n; i++) {
        theta[size_t(6 * i)] = theta[size_t(6 * i + 4)] = 1.0f;
        theta[size_t(6 * i + 2)] = 1.0f;   // sample one pixel to the right: content moves left
        theta[size_t(6 * i + 5)] = -2.0f;  // two pixels up: content moves down
    }
    std::vector<float> shifted(out_size), base(out_size);
    warp_affine(shifted.data(), images.data(), n, H, W, pad, lut.data(), theta.data());
    gather_pad_normalize(base.data(), images.data(), nullptr, n, H, W, pad, lut.data());
    bool same = true;
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < Hp; h++)
            for (int64_t w = 0; w < Wp; w++) {
                const int64_t sh = h - 2, sw = w + 1;
                const float want = sh >= 0 && sw < Wp ? base[size_t((i * Hp + sh) * Wp + sw)] : lut[0];
                same = same && shifted[size_t((i * Hp + h) * Wp + w)] == want;
            }
    expect(same, "warp_affine: an integer translation shifts the padded image exactly");

    AugmentParams p;
    p.shift = 2;
    p.rotate = 15;
    p.scale = 0.1;
    p.shear = 0.2;
    p.alpha = 34;
    p.sigma = 4;
    const int saved = get_num_threads();
    std::vector<float> one(out_size), two(out_size), other_epoch(out_size), single(size_t(Hp * Wp));
    set_num_threads(1);
    gather_augment(one.data(), images.data(), idx.data(), n, H, W, pad, lut.data(), p, 5, 2);
    set_num_threads(2);
    gather_augment(two.data(), images.data(), idx.data(), n, H, W, pad, lut.data(), p, 5, 2);
    gather_augment(other_epoch.data(), images.data(), idx.data(), n, H, W, pad, lut.data(), p, 5, 3);
    set_num_threads(saved);
    expect(one == two, "augment: 1 and 2 threads give bit-identical batches");
    expect(one != other_epoch, "augment: another epoch draws other distortions");
    expect(one != plain, "augment: the distortions change the images");
    // Image idx[5] alone, as a batch of one: the same pixels as in the batch of 24.
    gather_augment(single.data(), images.data(), &idx[5], 1, H, W, pad, lut.data(), p, 5, 2);
    expect(std::equal(single.begin(), single.end(), one.begin() + 5 * Hp * Wp),
           "augment: an image's distortion does not depend on its batch");
    bool finite = true;
    for (float v : one) finite = finite && std::isfinite(v) && v >= lut[0] - 1e-4f && v <= lut[255] + 1e-4f;
    expect(finite, "augment: every output lies within the lut's range (bilinear weights in [0, 1])");
}

void test_checks() {
    expect(throws_invalid([] { check_conv2d({1, 3, 8, 8}, {4, 2, 3, 3}, std::nullopt, 1, 0); }),
           "conv2d channel mismatch throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 4, 4}, {1, 1, 7, 7}, std::nullopt, 1, 1); }),
           "conv2d kernel larger than padded input throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 8, 8}, {1, 1, 3, 3}, std::nullopt, 0, 0); }),
           "conv2d stride 0 throws");
    expect(throws_invalid([] { check_conv2d({1, 1, 8, 8}, {1, 1, 3, 3}, std::nullopt, 1, -1); }),
           "conv2d negative padding throws");
    expect(throws_invalid([] { check_conv2d({1, 8, 8}, {1, 1, 3, 3}, std::nullopt, 1, 0); }),
           "conv2d 3-D x throws");
    expect(throws_invalid([] { check_pool2d("maxpool2d", {1, 1, 2, 2}, 3, 1); }),
           "pool kernel larger than input throws");
    expect(throws_invalid([] { check_linear({2, 5}, {3, 4}, std::nullopt); }), "linear mismatch throws");
    expect(throws_invalid([] { check_softmax_cross_entropy({2, 3}, {3}); }),
           "labels length mismatch throws");
    // The checks moved from the bindings into the core: each names what it received.
    struct MessageCase { const char* what; void (*f)(); const char* needle; };
    const MessageCase messages[] = {
        {"maxpool argmax out of range", [] {
             const int64_t arg[4] = {0, 3, 16, 1};
             check_maxpool2d_backward({1, 1, 4, 4}, {1, 1, 2, 2}, {1, 1, 2, 2}, arg);
         }, "argmax.flat[2] = 16 is outside [0, 16)"},
        {"maxpool x_shape batch", [] {
             const int64_t arg[4] = {0, 0, 0, 0};
             check_maxpool2d_backward({3, 1, 4, 4}, {1, 1, 2, 2}, {1, 1, 2, 2}, arg);
         }, "(1) does not match x_shape[0] (3)"},
        {"maxpool x_shape negative", [] { check_maxpool2d_backward({1, 1, -4, 4}, {1, 1, 2, 2}, {1, 1, 2, 2}, nullptr); },
         "x_shape entries must be >= 0, got (1, 1, -4, 4)"},
        {"avgpool dy", [] { Shape dy = {1, 2, 2, 2}; check_pool2d("avgpool2d_backward", {1, 2, 6, 6}, 2, 2, &dy); },
         "dy must have shape (1, 2, 3, 3) for x_shape (1, 2, 6, 6), got (1, 2, 2, 2)"},
        {"softmax 1-D", [] { check_softmax({5}); }, "x must be 2-D (N, C), got shape (5,)"},
        {"cross-entropy label", [] {
             const int64_t labels[2] = {1, 3};
             check_softmax_cross_entropy({2, 3}, {2}, labels);
         }, "labels[1] = 3 is outside [0, 3)"},
        {"mse empty", [] { check_mse_loss({0, 3}, {0, 3}); }, "pred is empty (shape (0, 3))"},
        {"mse shapes", [] { check_mse_loss({2, 3}, {3, 2}); }, "target has shape (3, 2)"},
        {"gather lut", [] { check_gather_pad_normalize({2, 4, 4}, 1, 255); }, "lut must hold 256 floats, got 255"},
        {"gather idx", [] {
             const int64_t idx[2] = {1, -1};
             Shape is = {2};
             check_gather_pad_normalize({2, 4, 4}, 1, 256, &is, idx);
         }, "idx[1] = -1 is outside [0, 2)"},
        {"augment rotate", [] { AugmentParams p; p.rotate = 200; check_augment(p); },
         "augment: rotate must be in [0, 180], got 200"},
        {"augment scale", [] { AugmentParams p; p.scale = 1; check_augment(p); },
         "augment: scale must be in [0, 1), got 1"},
        {"augment sigma", [] { AugmentParams p; p.sigma = 0; check_augment(p); },
         "augment: sigma must be in (0, 16], got 0"},
        {"augment shift NaN", [] { AugmentParams p; p.shift = NAN; check_augment(p); },
         "augment: shift must be in [0, 1000], got nan"},
        {"augment idx", [] {
             const int64_t idx[1] = {9};
             Shape is = {1};
             check_gather_augment({2, 4, 4}, 1, 256, &is, idx, 0, 0, AugmentParams{});
         }, "augment_batch: idx[0] = 9 is outside [0, 2)"},
        {"augment seed", [] { check_gather_augment({2, 4, 4}, 1, 256, nullptr, nullptr, -1, 0, AugmentParams{}); },
         "augment_batch: seed must be >= 0, got -1"},
        {"warp theta shape", [] {
             const float th[4] = {1, 0, 0, 1};
             check_warp_affine({1, 4, 4}, {1, 2, 2}, th, 0, 256);
         }, "warp_affine: theta must have shape (N, 2, 3), got (1, 2, 2)"},
        {"warp theta inf", [] {
             const float th[6] = {1, 0, INFINITY, 0, 1, 0};
             check_warp_affine({1, 4, 4}, {1, 2, 3}, th, 0, 256);
         }, "warp_affine: theta.flat[2] = inf must be finite"},
        {"net input", [] {
             LayerDesc flat;
             flat.kind = &layer_kind("flatten");
             Net({flat}, 1, 2, 2).check_input({3, 1, 2, 3});
         }, "x must have shape (N, 1, 2, 2), got (3, 1, 2, 3)"},
        {"net labels", [] {
             LayerDesc flat;
             flat.kind = &layer_kind("flatten");
             const int64_t labels[2] = {0, 4};
             Net({flat}, 1, 2, 2).check_train_step({2, 1, 2, 2}, {2}, labels);
         }, "labels[1] = 4 is outside [0, 4)"},
        {"net kind", [] { layer_kind("gelu"); }, "unknown layer kind 'gelu'"},
        {"conv bias 2-D", [] { check_conv2d({1, 1, 8, 8}, {4, 1, 3, 3}, Shape{4, 1}, 1, 0); },
         "b must be 1-D (K,), got shape (4, 1)"},
        {"linear bias length", [] { check_linear({2, 5}, {3, 5}, Shape{4}); },
         "b length (4) does not match w output features w.shape[0] (3)"},
    };
    for (const MessageCase& c : messages) {
        const std::string got = invalid_message(c.f);
        expect(got.find(c.needle) != std::string::npos,
               std::string(c.what) + ": message '" + got + "' should contain '" + c.needle + "'");
    }
    const std::string msg = invalid_message([] { check_conv2d({1, 3, 8, 8}, {4, 2, 3, 3}, std::nullopt, 1, 0); });
    expect(msg.find("(2)") != std::string::npos && msg.find("(3)") != std::string::npos,
           "conv2d message names received and expected channels: '" + msg + "'");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::string(argv[1]) == "--levels") {  // the levels this CPU runs
        for (const std::string& level : simd_compiled())
            if (simd_supported(level)) std::printf("%s ", level.c_str());
        std::printf("\n");
        return 0;
    }
    try {
        std::printf("SIMD level %s\n", simd_level().c_str());
    } catch (const std::invalid_argument& e) {
        std::printf("error: %s\n", e.what());
        return 2;
    }
    std::mt19937 rng(1234);
    test_gemm_levels(rng);
    test_conv2d(rng);
    test_linear(rng);
    test_pool(rng);
    test_losses(rng);
    test_lecun98_ops(rng);
    test_augment(rng);
    test_checks();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
