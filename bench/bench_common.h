// Shared helpers of the C++ benchmarks: a steady clock, median-of-repeats timing, the measured
// peak FLOP rate of one core at a SIMD level (bench/peak.cpp), and random buffers.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>
#include <string>
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

// A measured single-core float32 peak: the level, FLOP/s, and how it was measured.
struct Peak {
    std::string level;
    double flops = 0;
    std::string how;
    // "level avx2, peak 90.1 GFLOP/s/core (measured: 12 ymm FMA chains)"
    std::string header() const;
};

// Levels with a peak kernel in this build that this CPU runs, best first.
std::vector<std::string> peak_levels();
// Peak of one core at `level` (avx512, avx2, sse2, neon, scalar): independent multiply-add
// chains in registers, compiled for that level. Throws std::invalid_argument for a level
// without a kernel here or one the CPU cannot run.
Peak peak_flops_per_core(const std::string& level);
// Peak of the level the core's kernels run at (simd_level_in_use()).
Peak peak_flops_per_core();
// The SIMD level the core runs at (pylenet::simd_level(); PYLENET_SIMD forces it).
std::string simd_level_in_use();

}  // namespace bench
