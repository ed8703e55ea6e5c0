// Per-layer benchmark of LeNet-5's ops (forward and backward at batch 1, 64 and 256), linked
// straight against the core. Validates every fast path against the naive one, then times.
// Output: one line per variant: op, shape, threads, ms/iter, GFLOP/s, % of the threads' peak.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "base/parallel.h"
#include "bench_common.h"
#include "ops/activations.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#include "ops/pool2d.h"
#include "oracle/conv2d.h"
#include "oracle/linear.h"
#include "oracle/pool2d.h"

using namespace pylenet;

namespace {

bench::Peak g_peak;  // of one core at the level the core runs
int g_failures = 0;

void report(const char* op, const std::string& shape, int threads, double sec, double flops) {
    const double gflops = flops / sec * 1e-9;
    std::printf("%-18s %-28s threads=%d  %9.4f ms  %8.2f GFLOP/s  %5.1f%% of %s peak\n", op,
                shape.c_str(), threads, sec * 1e3, gflops, 100.0 * flops / sec / (g_peak.flops * threads),
                g_peak.level.c_str());
}

bool close(const std::vector<float>& a, const std::vector<float>& b, double tol) {
    for (size_t i = 0; i < a.size(); i++)
        if (!(std::fabs(a[i] - b[i]) <= tol * (1.0 + std::fabs(b[i])))) return false;
    return true;
}

void bench_conv(const char* name, int64_t N, int64_t C, int64_t H, int64_t K, int64_t R, int threads) {
    const Conv2dParams p = check_conv2d({N, C, H, H}, {K, C, R, R}, Shape{K}, 1, 0);
    const int64_t P = p.out_h(), Q = p.out_w();
    auto x = bench::randn(size_t(N * C * H * H), 1), w = bench::randn(size_t(K * C * R * R), 2);
    auto b = bench::randn(size_t(K), 3), dy = bench::randn(size_t(N * K * P * Q), 4);
    std::vector<float> y(dy.size()), y_ref(dy.size()), dx(x.size()), dw(w.size()), db(b.size());
    std::vector<float> dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
    conv2d_forward(y.data(), x.data(), w.data(), b.data(), p);
    conv2d_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
    conv2d_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
    conv2d_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
    if (!close(y, y_ref, 1e-4) || !close(dx, dx_ref, 1e-3) || !close(dw, dw_ref, 1e-3)) {
        std::printf("FAIL: %s fast path disagrees with the naive one\n", name);
        g_failures++;
        return;
    }
    const double macs = double(N) * K * P * Q * C * R * R;
    char shape[64];
    std::snprintf(shape, sizeof shape, "N=%lld %lldx%lldx%lld->%lld k%lld", (long long)N,
                  (long long)C, (long long)H, (long long)H, (long long)K, (long long)R);
    const int inner = std::max<int>(1, int(2e8 / (macs * 2 + 1)));
    report((std::string(name) + " fwd").c_str(), shape, threads,
           bench::time_per_call([&] { conv2d_forward(y.data(), x.data(), w.data(), b.data(), p); }, inner),
           2 * macs);
    report((std::string(name) + " bwd").c_str(), shape, threads,
           bench::time_per_call([&] {
               conv2d_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
           }, inner),
           4 * macs);
}

void bench_linear(const char* name, int64_t N, int64_t I, int64_t O, int threads) {
    const LinearParams p = check_linear({N, I}, {O, I}, Shape{O});
    auto x = bench::randn(size_t(N * I), 5), w = bench::randn(size_t(O * I), 6);
    auto b = bench::randn(size_t(O), 7), dy = bench::randn(size_t(N * O), 8);
    std::vector<float> y(size_t(N * O)), dx(x.size()), dw(w.size()), db(b.size());
    std::vector<float> y_ref(y.size()), dx_ref(x.size()), dw_ref(w.size()), db_ref(b.size());
    linear_forward(y.data(), x.data(), w.data(), b.data(), p);
    linear_forward_naive(y_ref.data(), x.data(), w.data(), b.data(), p);
    linear_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
    linear_backward_naive(dx_ref.data(), dw_ref.data(), db_ref.data(), x.data(), w.data(), dy.data(), p);
    if (!close(y, y_ref, 1e-4) || !close(dx, dx_ref, 1e-3) || !close(dw, dw_ref, 1e-3) ||
        !close(db, db_ref, 1e-3)) {
        std::printf("FAIL: %s fast path disagrees with the naive one\n", name);
        g_failures++;
        return;
    }
    const double macs = double(N) * I * O;
    char shape[64];
    std::snprintf(shape, sizeof shape, "N=%lld %lld->%lld", (long long)N, (long long)I, (long long)O);
    const int inner = std::max<int>(1, int(1e8 / (macs * 2 + 1)));
    report((std::string(name) + " fwd").c_str(), shape, threads,
           bench::time_per_call([&] { linear_forward(y.data(), x.data(), w.data(), b.data(), p); }, inner),
           2 * macs);
    report((std::string(name) + " bwd").c_str(), shape, threads,
           bench::time_per_call([&] {
               linear_backward(dx.data(), dw.data(), db.data(), x.data(), w.data(), dy.data(), p);
           }, inner),
           4 * macs);
}

void bench_pool(const char* name, int64_t N, int64_t C, int64_t H, int threads) {
    const Pool2dParams p = check_pool2d("maxpool2d", {N, C, H, H}, 2, 2);
    auto x = bench::randn(size_t(N * C * H * H), 9);
    const int64_t ny = N * C * p.out_h() * p.out_w();
    std::vector<float> y(static_cast<size_t>(ny)), dx(x.size()), dy(static_cast<size_t>(ny), 1.0f);
    std::vector<int32_t> arg(static_cast<size_t>(ny)), arg_ref(static_cast<size_t>(ny));
    std::vector<float> y_ref(y.size()), dx_ref(x.size());
    auto dyv = bench::randn(size_t(ny), 10);
    maxpool2d_forward(y.data(), arg.data(), x.data(), p);
    maxpool2d_forward_naive(y_ref.data(), arg_ref.data(), x.data(), p);
    maxpool2d_backward(dx.data(), dyv.data(), arg.data(), N, C, H, H, p.out_h(), p.out_w());
    maxpool2d_backward_naive(dx_ref.data(), dyv.data(), arg_ref.data(), p);
    if (y != y_ref || arg != arg_ref || !close(dx, dx_ref, 1e-6)) {
        std::printf("FAIL: %s fast path disagrees with the naive one\n", name);
        g_failures++;
        return;
    }
    char shape[64];
    std::snprintf(shape, sizeof shape, "N=%lld %lldx%lldx%lld", (long long)N, (long long)C,
                  (long long)H, (long long)H);
    const int inner = std::max<int>(1, int(3e7 / double(x.size())));
    report((std::string(name) + " fwd").c_str(), shape, threads,
           bench::time_per_call([&] { maxpool2d_forward(y.data(), arg.data(), x.data(), p); }, inner),
           double(x.size()));
    report((std::string(name) + " bwd").c_str(), shape, threads,
           bench::time_per_call([&] {
               maxpool2d_backward(dx.data(), dy.data(), arg.data(), N, C, H, H, p.out_h(), p.out_w());
           }, inner),
           double(x.size()));
}

}  // namespace

int main(int argc, char** argv) {
    g_peak = bench::peak_flops_per_core();
    std::printf("%s\n", g_peak.header().c_str());
    const int max_threads = argc > 1 ? std::atoi(argv[1]) : get_num_threads();
    for (int threads = 1; threads <= max_threads; threads++) {
        set_num_threads(threads);
        for (int64_t N : {1, 64, 256}) {
            bench_conv("C1 conv", N, 1, 32, 6, 5, threads);
            bench_pool("S2 maxpool", N, 6, 28, threads);
            bench_conv("C3 conv", N, 6, 14, 16, 5, threads);
            bench_pool("S4 maxpool", N, 16, 10, threads);
            bench_linear("F5 linear", N, 400, 120, threads);
            bench_linear("F6 linear", N, 120, 84, threads);
            bench_linear("out linear", N, 84, 10, threads);
        }
    }
    if (g_failures) std::printf("%d validation failures\n", g_failures);
    return g_failures ? 1 : 0;
}
