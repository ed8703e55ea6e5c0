// GEMM micro-kernels for AVX2 + FMA (16 ymm registers of 8 floats): 6 x 16 tiles for a_rows
// (12 accumulators + 2 B loads + 1 broadcast), 2 x 4 for a_rows_t (8 accumulators, one
// transpose-reduce), 6 x 16 for rows_d (12 accumulators + 2 D loads + 1 broadcast).
#include <cstdint>

#include "gemm/gemm.h"

#if defined(PYLENET_SIMD_X86)
#include <immintrin.h>

#include "base/compile_as.h"

PYLENET_TARGET_BEGIN("avx2,fma")

#include "gemm/gemm_kernels.h"

namespace pylenet {
namespace {

struct Avx2 {
    static constexpr const char* kName = "avx2";
    using R = __m256;
    static constexpr int W = 8;
    static constexpr int AR_MR = 6, AR_NV = 2;
    static constexpr int ART_MR = 6, ART_TN = 2, ART2_MR = 2, ART2_TN = 4, ART1_TN = 8, MV_MR = 8;
    static constexpr int RD_MR = 6, RD_MR2 = 2;
    static constexpr int EXACT_CONV_FROM = 1;  // measured: bench_step inference N=1

    static R zero() { return _mm256_setzero_ps(); }
    static R set1(float x) { return _mm256_set1_ps(x); }
    static R load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, R r) { _mm256_storeu_ps(p, r); }
    // The first n lanes set: a sliding window over eight -1s followed by eight 0s.
    static __m256i mask(int64_t n) {
        alignas(32) static const int32_t window[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                       0,  0,  0,  0,  0,  0,  0,  0};
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(window + 8 - n));
    }
    static R load_part(const float* p, int64_t n) { return _mm256_maskload_ps(p, mask(n)); }
    static void store_part(float* p, R r, int64_t n) { _mm256_maskstore_ps(p, mask(n), r); }
    static R fma(R acc, R a, R b) { return _mm256_fmadd_ps(a, b, acc); }
    // Lane l + l^4 (128-bit halves of two registers), then l + l^2 and l + l^1 (shuffles
    // within halves); the result's lanes come out as 0 2 4 6 1 3 5 7 and are put in order.
    static R reduce(const R* v) {
        R a[4], b[2];
        for (int i = 0; i < 4; i++)
            a[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                                 _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
        for (int i = 0; i < 2; i++)
            b[i] = _mm256_add_ps(_mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm256_shuffle_ps(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
        const R s = _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                  _mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 1, 3, 1)));
        return _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    }
};

}  // namespace

PYLENET_GEMM_TABLE(kGemmAvx2, Avx2);

}  // namespace pylenet

PYLENET_TARGET_END
#endif  // PYLENET_SIMD_X86
