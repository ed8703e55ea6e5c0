// Transposition in 4x4 blocks of SSE2 registers where the CPU has them (every x86-64), plain
// loops for the edges and elsewhere.
#include "base/transpose.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pylenet {

void transpose(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
               int64_t cols) {
    int64_t r0 = 0;
#if defined(__SSE2__)
    for (; r0 + 4 <= rows; r0 += 4) {
        int64_t c0 = 0;
        for (; c0 + 4 <= cols; c0 += 4) {
            __m128 a = _mm_loadu_ps(src + r0 * ld_src + c0);
            __m128 b = _mm_loadu_ps(src + (r0 + 1) * ld_src + c0);
            __m128 c = _mm_loadu_ps(src + (r0 + 2) * ld_src + c0);
            __m128 d = _mm_loadu_ps(src + (r0 + 3) * ld_src + c0);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            _mm_storeu_ps(dst + c0 * ld_dst + r0, a);
            _mm_storeu_ps(dst + (c0 + 1) * ld_dst + r0, b);
            _mm_storeu_ps(dst + (c0 + 2) * ld_dst + r0, c);
            _mm_storeu_ps(dst + (c0 + 3) * ld_dst + r0, d);
        }
        for (; c0 < cols; c0++)
            for (int64_t r = r0; r < r0 + 4; r++) dst[c0 * ld_dst + r] = src[r * ld_src + c0];
    }
#endif
    for (; r0 < rows; r0++)
        for (int64_t c = 0; c < cols; c++) dst[c * ld_dst + r0] = src[r0 * ld_src + c];
}

}  // namespace pylenet
