// GEMM micro-kernels for baseline x86-64 (SSE2: 16 xmm registers of 4 floats, no FMA, so
// each multiply-add needs a temporary): 4 x 8 tiles for a_rows (8 accumulators), 2 x 4 for a_rows_t,
// 2 x 16 for rows_d (8 accumulators + 4 D loads + broadcast + temporary).
#include <cstdint>

#include "base/compile_as.h"
#include "gemm/gemm.h"

// fma() is a separate multiply and add; contracting some of them into fused ones (where the
// compiler targets a CPU that has FMA) would make a result depend on its tile.
PYLENET_NO_FP_CONTRACT

#if defined(PYLENET_SIMD_X86)
#include <emmintrin.h>

#include "gemm/gemm_kernels.h"

namespace pylenet {
namespace {

struct Sse2 {
    static constexpr const char* kName = "sse2";
    using R = __m128;
    static constexpr int W = 4;
    static constexpr int AR_MR = 4, AR_NV = 2;
    static constexpr int ART_MR = 2, ART_TN = 4, ART2_MR = 1, ART2_TN = 4, ART1_TN = 4, MV_MR = 8;
    static constexpr int RD_MR = 2, RD_MR2 = 1;
    static constexpr int EXACT_CONV_FROM = 1;  // measured: bench_step inference N=1

    static R zero() { return _mm_setzero_ps(); }
    static R set1(float x) { return _mm_set1_ps(x); }
    static R load(const float* p) { return _mm_loadu_ps(p); }
    static void store(float* p, R r) { _mm_storeu_ps(p, r); }
    static R load_part(const float* p, int64_t n) {
        return _mm_setr_ps(p[0], n > 1 ? p[1] : 0.0f, n > 2 ? p[2] : 0.0f, 0.0f);
    }
    static void store_part(float* p, R r, int64_t n) {
        alignas(16) float lanes[4];
        _mm_store_ps(lanes, r);
        for (int64_t l = 0; l < n; l++) p[l] = lanes[l];
    }
    static R fma(R acc, R a, R b) { return _mm_add_ps(acc, _mm_mul_ps(a, b)); }
    // Lane l + l^2 (halves of two registers), then l + l^1.
    static R reduce(const R* v) {
        const R a0 = _mm_add_ps(_mm_movelh_ps(v[0], v[1]), _mm_movehl_ps(v[1], v[0]));
        const R a1 = _mm_add_ps(_mm_movelh_ps(v[2], v[3]), _mm_movehl_ps(v[3], v[2]));
        return _mm_add_ps(_mm_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)));
    }
};

}  // namespace

PYLENET_GEMM_TABLE(kGemmSse2, Sse2);

}  // namespace pylenet
#endif  // PYLENET_SIMD_X86
