// GEMM micro-kernels for aarch64 NEON (32 q registers of 4 floats, fused multiply-add):
// 6 x 16 tiles for a_rows (24 accumulators + 4 B loads + broadcast), 4 x 4 for a_rows_t, 6 x 16 for rows_d.
#include <cstdint>

#include "gemm/gemm.h"

#if defined(PYLENET_SIMD_NEON)
#include <arm_neon.h>

#include "gemm/gemm_kernels.h"

namespace pylenet {
namespace {

struct Neon {
    static constexpr const char* kName = "neon";
    using R = float32x4_t;
    static constexpr int W = 4;
    static constexpr int AR_MR = 6, AR_NV = 4;
    static constexpr int ART_MR = 4, ART_TN = 4, ART2_MR = 2, ART2_TN = 8, ART1_TN = 8, MV_MR = 16;
    static constexpr int RD_MR = 6, RD_MR2 = 2;
    static constexpr int EXACT_CONV_FROM = 1;  // as for avx2/sse2 (untimed: runs under qemu only)

    static R zero() { return vdupq_n_f32(0.0f); }
    static R set1(float x) { return vdupq_n_f32(x); }
    static R load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, R r) { vst1q_f32(p, r); }
    static R load_part(const float* p, int64_t n) {
        R r = vdupq_n_f32(0.0f);
        r = vld1q_lane_f32(p, r, 0);
        if (n > 1) r = vld1q_lane_f32(p + 1, r, 1);
        if (n > 2) r = vld1q_lane_f32(p + 2, r, 2);
        return r;
    }
    static void store_part(float* p, R r, int64_t n) {
        vst1q_lane_f32(p, r, 0);
        if (n > 1) vst1q_lane_f32(p + 1, r, 1);
        if (n > 2) vst1q_lane_f32(p + 2, r, 2);
    }
    static R fma(R acc, R a, R b) { return vfmaq_f32(acc, a, b); }
    // Lane l + l^2 (halves of two registers), then l + l^1 (pairwise adds).
    static R reduce(const R* v) {
        const R a0 = vaddq_f32(vcombine_f32(vget_low_f32(v[0]), vget_low_f32(v[1])),
                               vcombine_f32(vget_high_f32(v[0]), vget_high_f32(v[1])));
        const R a1 = vaddq_f32(vcombine_f32(vget_low_f32(v[2]), vget_low_f32(v[3])),
                               vcombine_f32(vget_high_f32(v[2]), vget_high_f32(v[3])));
        return vpaddq_f32(a0, a1);
    }
};

}  // namespace

PYLENET_GEMM_TABLE(kGemmNeon, Neon);

}  // namespace pylenet
#endif  // PYLENET_SIMD_NEON
