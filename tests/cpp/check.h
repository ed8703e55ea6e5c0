// What the C++ test programs share: pass/fail counting, random inputs, the error measure.
#pragma once
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace pylenet_test {

inline int g_passed = 0, g_failed = 0;

// Counts a check; prints the failing ones.
inline void expect(bool ok, const std::string& what) {
    if (ok) {
        g_passed++;
    } else {
        g_failed++;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

// n standard normal floats.
inline std::vector<float> randn(size_t n, std::mt19937& rng) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

// Largest |a - b| / (1 + |b|); a NaN where the other has none (or different sizes) is infinite,
// NaN in both places agrees.
inline double max_rel_err(const std::vector<float>& a, const std::vector<float>& b) {
    double worst = a.size() == b.size() ? 0.0 : INFINITY;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) {
        if (std::isnan(a[i]) || std::isnan(b[i])) {
            if (!(std::isnan(a[i]) && std::isnan(b[i]))) worst = INFINITY;
            continue;
        }
        worst = std::fmax(worst, std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(double(b[i]))));
    }
    return worst;
}

}  // namespace pylenet_test
