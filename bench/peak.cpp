// Measures one core's peak float32 multiply-add rate per SIMD level: one kernel per level,
// compiled for that level's instructions, with enough independent accumulator chains to
// hide the FMA latency while every chain stays in a register (no spills: the old kernel's
// 16 chains of 16 floats spilled on AVX2 and reported a third of the real peak).
//
// Level  instruction         chains  registers used
// avx512 vfmadd (zmm)            24  24 of 32 zmm + 2 constants
// avx2   vfmadd (ymm)            12  12 of 16 ymm + 2 constants
// sse2   mulps + addps (xmm)     12  12 of 16 xmm + 2 constants; 2 flops per mul+add pair
// neon   fmla (q)                24  24 of 32 q + 2 constants
// scalar a * b + c (one float)   12  no vectors; mul + add where the baseline has no FMA
// bench/check_peak_asm.sh (run by `make peak`) checks that no kernel loop touches the stack.
#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "bench_common.h"
#include "gemm/simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace bench {

namespace {

// Each kernel runs `iters` rounds of acc = acc * a + b on every chain and returns a sum of
// the accumulators (so nothing is dead code). With a = 0.999999 and b = 1e-7 the values
// settle near 0.1: no overflow, no denormals. Every loop over the chains is unrolled in full;
// one that is not (the final sum, say) leaves the array in memory and the chains with it.

#if defined(__x86_64__)
constexpr int kChains512 = 24, kChains256 = 12, kChainsSse = 12;

__attribute__((target("avx512f,fma"))) float chains_avx512(int64_t iters, float a, float b) {
    __m512 acc[kChains512];
    const __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
#pragma GCC unroll 32
    for (int c = 0; c < kChains512; c++) acc[c] = _mm512_set1_ps(float(c) * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 32
        for (int c = 0; c < kChains512; c++) acc[c] = _mm512_fmadd_ps(acc[c], va, vb);
    }
#pragma GCC unroll 32
    for (int c = 1; c < kChains512; c++) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[0]);
    float s = 0;
    for (float v : lanes) s += v;
    return s;
}

__attribute__((target("avx2,fma"))) float chains_avx2(int64_t iters, float a, float b) {
    __m256 acc[kChains256];
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
#pragma GCC unroll 32
    for (int c = 0; c < kChains256; c++) acc[c] = _mm256_set1_ps(float(c) * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 32
        for (int c = 0; c < kChains256; c++) acc[c] = _mm256_fmadd_ps(acc[c], va, vb);
    }
#pragma GCC unroll 32
    for (int c = 1; c < kChains256; c++) acc[0] = _mm256_add_ps(acc[0], acc[c]);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc[0]);
    float s = 0;
    for (float v : lanes) s += v;
    return s;
}

// Baseline x86-64 has no FMA: the kernels multiply, then add (two rounded operations).
float chains_sse2(int64_t iters, float a, float b) {
    __m128 acc[kChainsSse];
    const __m128 va = _mm_set1_ps(a), vb = _mm_set1_ps(b);
#pragma GCC unroll 32
    for (int c = 0; c < kChainsSse; c++) acc[c] = _mm_set1_ps(float(c) * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 32
        for (int c = 0; c < kChainsSse; c++) acc[c] = _mm_add_ps(_mm_mul_ps(acc[c], va), vb);
    }
#pragma GCC unroll 32
    for (int c = 1; c < kChainsSse; c++) acc[0] = _mm_add_ps(acc[0], acc[c]);
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, acc[0]);
    return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}
#endif

#if defined(__aarch64__)
constexpr int kChainsNeon = 24;

// fmla adds into its destination, so the chain is the addend here: acc += a * b (growing by
// 1e-7 a round; no overflow either). acc * a + b would cost a register move per FMA.

float chains_neon(int64_t iters, float a, float b) {
    float32x4_t acc[kChainsNeon];
    const float32x4_t va = vdupq_n_f32(a), vb = vdupq_n_f32(b);
#pragma GCC unroll 32
    for (int c = 0; c < kChainsNeon; c++) acc[c] = vdupq_n_f32(float(c) * 1e-3f);
    for (int64_t i = 0; i < iters; i++) {
#pragma GCC unroll 32
        for (int c = 0; c < kChainsNeon; c++) acc[c] = vfmaq_f32(acc[c], va, vb);
    }
#pragma GCC unroll 32
    for (int c = 1; c < kChainsNeon; c++) acc[0] = vaddq_f32(acc[0], acc[c]);
    return vaddvq_f32(acc[0]);
}
#endif

// One float per chain. On x86-64 and aarch64 an empty asm pins each chain to its own register
// so that the compiler cannot merge chains into vectors; elsewhere it is what the compiler
// makes of a * b + c.
constexpr int kChainsScalar = 12;

#if defined(__x86_64__)
#define PYLENET_PIN(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define PYLENET_PIN(v) __asm__("" : "+w"(v))
#else
#define PYLENET_PIN(v) (void)(v)
#endif

// Named variables rather than an array: an indexed array with the asm stays in memory.
float chains_scalar(int64_t iters, float a, float b) {
    float c0 = 0.000f, c1 = 0.001f, c2 = 0.002f, c3 = 0.003f, c4 = 0.004f, c5 = 0.005f;
    float c6 = 0.006f, c7 = 0.007f, c8 = 0.008f, c9 = 0.009f, c10 = 0.010f, c11 = 0.011f;
    for (int64_t i = 0; i < iters; i++) {
        c0 = c0 * a + b, c1 = c1 * a + b, c2 = c2 * a + b, c3 = c3 * a + b;
        c4 = c4 * a + b, c5 = c5 * a + b, c6 = c6 * a + b, c7 = c7 * a + b;
        c8 = c8 * a + b, c9 = c9 * a + b, c10 = c10 * a + b, c11 = c11 * a + b;
        PYLENET_PIN(c0); PYLENET_PIN(c1); PYLENET_PIN(c2); PYLENET_PIN(c3);
        PYLENET_PIN(c4); PYLENET_PIN(c5); PYLENET_PIN(c6); PYLENET_PIN(c7);
        PYLENET_PIN(c8); PYLENET_PIN(c9); PYLENET_PIN(c10); PYLENET_PIN(c11);
    }
    return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11;
}
#undef PYLENET_PIN

struct Kernel {
    float (*run)(int64_t, float, float);
    double flops_per_iter;  // per round over all chains
    const char* how;
};

// The kernel of `level`, or run == nullptr when this build has none for it.
Kernel kernel_for(const std::string& level) {
#if defined(__x86_64__)
    if (level == "avx512") return {chains_avx512, 2.0 * 16 * kChains512, "24 zmm FMA chains"};
    if (level == "avx2") return {chains_avx2, 2.0 * 8 * kChains256, "12 ymm FMA chains"};
    if (level == "sse2") return {chains_sse2, 2.0 * 4 * kChainsSse, "12 xmm mul+add chains"};
#endif
#if defined(__aarch64__)
    if (level == "neon") return {chains_neon, 2.0 * 4 * kChainsNeon, "24 q-register FMA chains"};
#endif
    if (level == "scalar") return {chains_scalar, 2.0 * kChainsScalar, "12 scalar a*b+c chains"};
    return {nullptr, 0, ""};
}

// The core decides which levels this CPU runs (and refuses the others when forced).
bool cpu_runs(const std::string& level) { return pylenet::simd_supported(level); }

}  // namespace

std::vector<std::string> peak_levels() {
    std::vector<std::string> levels;
    for (const char* l : {"avx512", "avx2", "sse2", "neon", "scalar"})
        if (kernel_for(l).run && cpu_runs(l)) levels.push_back(l);
    return levels;
}

Peak peak_flops_per_core(const std::string& level) {
    const Kernel k = kernel_for(level);
    if (!k.run || !cpu_runs(level))
        throw std::invalid_argument("peak_flops_per_core: no kernel for level '" + level +
                                    "' on this build and CPU");
    volatile float a = 0.999999f, b = 1e-7f, sink = 0;  // volatile: opaque to the compiler
    // Grow the round count until one run takes >= 10 ms, then keep the fastest of 15 runs:
    // short runs, many of them, so that on a shared core some run is never descheduled.
    int64_t iters = 1 << 14;
    for (;;) {
        const double t0 = now_s();
        sink = sink + k.run(iters, a, b);
        if (now_s() - t0 >= 0.01 || iters >= (int64_t(1) << 40)) break;
        iters *= 2;
    }
    double best = 1e30;
    for (int r = 0; r < 15; r++) {
        const double t0 = now_s();
        sink = sink + k.run(iters, a, b);
        best = std::min(best, now_s() - t0);
    }
    return {level, k.flops_per_iter * double(iters) / best, k.how};
}

std::string simd_level_in_use() { return pylenet::simd_level(); }

Peak peak_flops_per_core() { return peak_flops_per_core(simd_level_in_use()); }

std::string Peak::header() const {
    char line[160];
    std::snprintf(line, sizeof line, "level %s, peak %.1f GFLOP/s/core (measured: %s)",
                  level.c_str(), flops * 1e-9, how.c_str());
    return line;
}

}  // namespace bench
