// Shared helpers of the C++ benchmarks: a steady clock, best-of-repeats timing, the machine's
// measured peak FLOP rate per core, and random buffers.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

namespace bench {

inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds per call of f over `repeats` timed runs of `inner` calls, after a warm-up.
template <class F>
double time_per_call(F&& f, int inner, int repeats = 7) {
    for (int i = 0; i < inner; i++) f();
    std::vector<double> t;
    for (int r = 0; r < repeats; r++) {
        const double t0 = now_s();
        for (int i = 0; i < inner; i++) f();
        t.push_back((now_s() - t0) / inner);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

inline std::vector<float> randn(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Peak single-core float32 FLOP/s: independent FMA chains, in the best SIMD level available.
double peak_flops_per_core();

}  // namespace bench
