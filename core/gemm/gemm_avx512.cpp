// GEMM micro-kernels for AVX-512 (32 zmm registers of 16 floats): 6 x 32 tiles for a_rows,
// 4 x 4 dot-product tiles for a_rows_t (16 accumulators, one transpose-reduce), 12 x 16 for rows_d.
#include <cstdint>

#include "gemm/gemm.h"

#if defined(PYLENET_SIMD_X86)
#include <immintrin.h>

#include "base/compile_as.h"

PYLENET_TARGET_BEGIN("avx512f,avx2,fma")

#include "gemm/gemm_kernels.h"

namespace pylenet {
namespace {

struct Avx512 {
    static constexpr const char* kName = "avx512";
    using R = __m512;
    static constexpr int W = 16;
    static constexpr int AR_MR = 6, AR_NV = 2;
    static constexpr int ART_MR = 6, ART_TN = 4, ART2_MR = 2, ART2_TN = 8, ART1_TN = 8, MV_MR = 16;
    static constexpr int RD_MR = 12, RD_MR2 = 4;
    static constexpr int EXACT_CONV_FROM = 4;  // measured: bench_step inference N=1

    static R zero() { return _mm512_setzero_ps(); }
    static R set1(float x) { return _mm512_set1_ps(x); }
    static R load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, R r) { _mm512_storeu_ps(p, r); }
    static __mmask16 mask(int64_t n) { return __mmask16((1u << n) - 1u); }
    static R load_part(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
    static void store_part(float* p, R r, int64_t n) { _mm512_mask_storeu_ps(p, mask(n), r); }
    static R fma(R acc, R a, R b) { return _mm512_fmadd_ps(a, b, acc); }
    // Four rounds of pairwise folds: lane l + lane l^8, then ^4, ^2, ^1, two registers at a time.
    static R fold(R a, R b, const int* lo, const int* hi) {
        const __m512i il = _mm512_loadu_si512(lo), ih = _mm512_loadu_si512(hi);
        return _mm512_add_ps(_mm512_permutex2var_ps(a, il, b), _mm512_permutex2var_ps(a, ih, b));
    }
    static R reduce(const R* v) {
        alignas(64) static const int idx[8][16] = {
            {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
            {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
            {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
            {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
            {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
            {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
            {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30},
            {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};
        R a[8], b[4], c[2];
        for (int i = 0; i < 8; i++) a[i] = fold(v[2 * i], v[2 * i + 1], idx[0], idx[1]);
        for (int i = 0; i < 4; i++) b[i] = fold(a[2 * i], a[2 * i + 1], idx[2], idx[3]);
        for (int i = 0; i < 2; i++) c[i] = fold(b[2 * i], b[2 * i + 1], idx[4], idx[5]);
        return fold(c[0], c[1], idx[6], idx[7]);
    }
};

}  // namespace

PYLENET_GEMM_TABLE(kGemmAvx512, Avx512);

}  // namespace pylenet

PYLENET_TARGET_END
#endif  // PYLENET_SIMD_X86
