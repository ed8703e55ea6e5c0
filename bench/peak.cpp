// Measures one core's peak float32 FMA rate with enough independent chains to hide latency.
#include <algorithm>

#include "bench_common.h"
#include "simd.h"

namespace bench {

namespace {
PYLENET_SIMD_CLONES
float fma_chains(int64_t iters, float a, float b) {
    constexpr int kChains = 16, kLanes = 16;  // 16 chains of one 512-bit vector each
    float acc[kChains][kLanes];
    for (int c = 0; c < kChains; c++)
        for (int l = 0; l < kLanes; l++) acc[c][l] = float(c + l) * 1e-3f;
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < kChains; c++)
#pragma omp simd
            for (int l = 0; l < kLanes; l++) acc[c][l] = acc[c][l] * a + b;
    float s = 0;
    for (int c = 0; c < kChains; c++)
        for (int l = 0; l < kLanes; l++) s += acc[c][l];
    return s;
}
}  // namespace

double peak_flops_per_core() {
    const int64_t iters = 2000000;
    volatile float sink = 0;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        const double t0 = now_s();
        sink = sink + fma_chains(iters, 0.999999f, 1e-7f);
        best = std::min(best, now_s() - t0);
    }
    return 2.0 * 16 * 16 * double(iters) / best;
}

}  // namespace bench
