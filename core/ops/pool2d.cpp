// Pooling forward/backward. Threads split over the N*C planes, which own their outputs.
#include "ops/pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "base/parallel.h"
#include "base/reduce.h"

namespace pylenet {

Pool2dParams check_pool2d(const char* op, const Shape& x, int64_t kernel, int64_t stride,
                          const Shape* dy, bool argmax) {
    if (dy) check_shape_arg(op, "x_shape", x, 4, "(N, C, H, W)");
    check_ndim(op, "x", x, 4, "(N, C, H, W)");
    check_at_least(op, "kernel", kernel, 1);
    check_at_least(op, "stride", stride, 1);
    if (kernel > x[2] || kernel > x[3])
        throw std::invalid_argument(std::string(op) + ": kernel " + std::to_string(kernel) +
                                    " is larger than the input plane " + std::to_string(x[2]) +
                                    "x" + std::to_string(x[3]) + " (x " + shape_str(x) + ")");
    Pool2dParams p;
    p.N = x[0], p.C = x[1], p.H = x[2], p.W = x[3];
    p.kernel = kernel, p.stride = stride;
    if (argmax && p.H * p.W > INT32_MAX)
        throw std::invalid_argument(std::string(op) + ": planes of " + std::to_string(p.H * p.W) +
                                    " pixels do not fit int32 argmax indices");
    if (dy) {
        const Shape want = {p.N, p.C, p.out_h(), p.out_w()};
        if (*dy != want)
            throw std::invalid_argument(std::string(op) + ": dy must have shape " + shape_str(want) +
                                        " for x_shape " + shape_str(x) + ", got " + shape_str(*dy));
    }
    return p;
}

void check_maxpool2d_backward(const Shape& xs, const Shape& dys, const Shape& argmax_shape,
                              const int64_t* argmax) {
    const char* op = "maxpool2d_backward";
    check_shape_arg(op, "x_shape", xs, 4, "(N, C, H, W)");
    check_ndim(op, "dy", dys, 4, "(N, C, P, Q)");
    check_same_shape(op, "argmax", argmax_shape, "dy", dys);
    check_equal(op, "dy batch dy.shape[0]", dys[0], "x_shape[0]", xs[0]);
    check_equal(op, "dy channels dy.shape[1]", dys[1], "x_shape[1]", xs[1]);
    const int64_t plane = xs[2] * xs[3];
    check_indices(op, "argmax.flat", argmax, numel(dys), plane, " (H*W of x_shape)");
}

namespace {
// v replaces (best, best_i) when larger, or when NaN (PyTorch's rule); strict > keeps the
// first of equal maxima. Written as selects so that random data costs no mispredictions.
inline void take_max(float v, int32_t i, float* best, int32_t* best_i) {
    const bool take = (v > *best) | (v != v);
    *best = take ? v : *best;
    *best_i = take ? i : *best_i;
}

// Q outputs of 2x2 windows over the row pair (r0, r1), whose first index in the plane is base:
// each row's first maximum, then the second row's if larger or NaN, which is the winner of
// take_max scanning the window in order (the first maximum, or the last NaN).
void maxpool2x2_row(float* y, int32_t* argmax, const float* r0, const float* r1, int32_t base,
                    int32_t W, int64_t Q) {
#if defined(__SSE2__)
    // Four outputs at a time with selects; the last group is padded with -inf, which never
    // wins, and stores only the outputs that exist.
    const __m128i one = _mm_set1_epi32(1), row = _mm_set1_epi32(W), step = _mm_setr_epi32(0, 2, 4, 6);
    const auto pick = [](__m128 t, __m128 a, __m128 b) { return _mm_or_ps(_mm_and_ps(t, a), _mm_andnot_ps(t, b)); };
    const auto wins = [](__m128 v, __m128 best) { return _mm_or_ps(_mm_cmpgt_ps(v, best), _mm_cmpunord_ps(v, v)); };
    const float ninf = -std::numeric_limits<float>::infinity();
    // The first m floats at p, then -inf (built in registers: no store-to-load round trip).
    const auto part = [ninf](const float* p, int64_t m) {
        return _mm_setr_ps(m > 0 ? p[0] : ninf, m > 1 ? p[1] : ninf, m > 2 ? p[2] : ninf, m > 3 ? p[3] : ninf);
    };
    for (int64_t ow = 0; ow < Q; ow += 4) {
        const float *p0 = r0 + 2 * ow, *p1 = r1 + 2 * ow;
        alignas(16) float ys[4];
        alignas(16) int32_t is[4];
        const int64_t n = std::min<int64_t>(4, Q - ow);
        __m128 x0, x1, z0, z1;
        if (n == 4) {
            x0 = _mm_loadu_ps(p0), x1 = _mm_loadu_ps(p0 + 4), z0 = _mm_loadu_ps(p1), z1 = _mm_loadu_ps(p1 + 4);
        } else {
            x0 = part(p0, 2 * n), x1 = part(p0 + 4, 2 * n - 4), z0 = part(p1, 2 * n), z1 = part(p1 + 4, 2 * n - 4);
        }
        const __m128 a0 = _mm_shuffle_ps(x0, x1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m128 b0 = _mm_shuffle_ps(x0, x1, _MM_SHUFFLE(3, 1, 3, 1));
        const __m128 a1 = _mm_shuffle_ps(z0, z1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m128 b1 = _mm_shuffle_ps(z0, z1, _MM_SHUFFLE(3, 1, 3, 1));
        const __m128 t0 = wins(b0, a0), t1 = wins(b1, a1);
        const __m128 m0 = pick(t0, b0, a0), m1 = pick(t1, b1, a1);
        const __m128 t = wins(m1, m0);
        const __m128i i0 = _mm_and_si128(_mm_castps_si128(t0), one);
        const __m128i i1 = _mm_add_epi32(row, _mm_and_si128(_mm_castps_si128(t1), one));
        const __m128i ti = _mm_castps_si128(t);
        const __m128i off = _mm_or_si128(_mm_and_si128(ti, i1), _mm_andnot_si128(ti, i0));
        const __m128i idx = _mm_add_epi32(_mm_set1_epi32(base + int32_t(2 * ow)), _mm_add_epi32(step, off));
        if (n == 4) {
            _mm_storeu_ps(y + ow, pick(t, m1, m0));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(argmax + ow), idx);
        } else {
            _mm_store_ps(ys, pick(t, m1, m0));
            _mm_store_si128(reinterpret_cast<__m128i*>(is), idx);
            for (int64_t l = 0; l < n; l++) y[ow + l] = ys[l], argmax[ow + l] = is[l];
        }
    }
#else
    for (int64_t ow = 0; ow < Q; ow++) {
        const int32_t i0 = base + int32_t(2 * ow);
        float best = r0[2 * ow];
        int32_t best_i = i0;
        // Starting from the first element equals PyTorch's start from -inf.
        take_max(r0[2 * ow + 1], i0 + 1, &best, &best_i);
        take_max(r1[2 * ow], i0 + W, &best, &best_i);
        take_max(r1[2 * ow + 1], i0 + W + 1, &best, &best_i);
        y[ow] = best;
        argmax[ow] = best_i;
    }
#endif
}

// The larger of a and b, NaN if either is NaN: the value take_max keeps.
inline float max_nan(float a, float b) { return ((b > a) | (b != b)) ? b : a; }
}  // namespace

void maxpool2d_forward(float* y, int32_t* argmax, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C, W = p.W;
    parallel_for(planes, threads_for(planes * P * Q * p.kernel * p.kernel), [&](int64_t nc) {
        const float* xp = x + nc * p.H * W;
        float* yp = y + nc * P * Q;
        if (!argmax && p.kernel == 2 && p.stride == 2) {  // values only (inference)
            // The max of each row pair first, then of neighbouring columns: two loops the
            // compiler turns into vector selects (no branch per element).
            float rows[64];
            for (int64_t oh = 0; oh < P; oh++) {
                const float* r0 = xp + 2 * oh * W;
                const float* r1 = r0 + W;
                for (int64_t w0 = 0; w0 < 2 * Q; w0 += 64) {
                    const int64_t cols = std::min<int64_t>(64, 2 * Q - w0);
                    for (int64_t c = 0; c < cols; c++) rows[c] = max_nan(r0[w0 + c], r1[w0 + c]);
                    for (int64_t c = 0; c < cols / 2; c++)
                        yp[oh * Q + w0 / 2 + c] = max_nan(rows[2 * c], rows[2 * c + 1]);
                }
            }
            return;
        }
        if (!argmax) {
            for (int64_t oh = 0; oh < P; oh++)
                for (int64_t ow = 0; ow < Q; ow++) {
                    float best = -std::numeric_limits<float>::infinity();
                    for (int64_t r = 0; r < p.kernel; r++)
                        for (int64_t s = 0; s < p.kernel; s++)
                            best = max_nan(best, xp[(oh * p.stride + r) * W + ow * p.stride + s]);
                    yp[oh * Q + ow] = best;
                }
            return;
        }
        int32_t* ap = argmax + nc * P * Q;
        if (p.kernel == 2 && p.stride == 2) {  // LeNet's pools
            for (int64_t oh = 0; oh < P; oh++)
                maxpool2x2_row(yp + oh * Q, ap + oh * Q, xp + 2 * oh * W, xp + (2 * oh + 1) * W,
                               int32_t(2 * oh * W), int32_t(W), Q);
            return;
        }
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const int64_t h0 = oh * p.stride, w0 = ow * p.stride;
                float best = -std::numeric_limits<float>::infinity();
                int32_t best_i = int32_t(h0 * W + w0);
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++) {
                        const int64_t i = (h0 + r) * W + w0 + s;
                        take_max(xp[i], int32_t(i), &best, &best_i);
                    }
                yp[oh * Q + ow] = best;
                ap[oh * Q + ow] = best_i;
            }
    });
}

void maxpool2d_backward(float* dx, const float* dy, const int32_t* argmax, int64_t N, int64_t C,
                        int64_t H, int64_t W, int64_t P, int64_t Q) {
    const int64_t planes = N * C;
    parallel_for(planes, threads_for(planes * H * W), [&](int64_t nc) {
        float* dxp = dx + nc * H * W;
        std::memset(dxp, 0, sizeof(float) * H * W);
        for (int64_t i = 0; i < P * Q; i++) dxp[argmax[nc * P * Q + i]] += dy[nc * P * Q + i];
    });
}

void avgpool2d_forward(float* y, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C;
    const float scale = 1.0f / float(p.kernel * p.kernel);
    parallel_for(planes, threads_for(planes * P * Q * p.kernel * p.kernel), [&](int64_t nc) {
        const float* xp = x + nc * p.H * p.W;
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                float acc = 0.0f;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++)
                        acc += xp[(oh * p.stride + r) * p.W + ow * p.stride + s];
                y[nc * P * Q + oh * Q + ow] = acc * scale;
            }
    });
}

void avgpool2d_backward(float* dx, const float* dy, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C;
    const float scale = 1.0f / float(p.kernel * p.kernel);
    parallel_for(planes, threads_for(planes * P * Q * p.kernel * p.kernel), [&](int64_t nc) {
        float* dxp = dx + nc * p.H * p.W;
        std::memset(dxp, 0, sizeof(float) * p.H * p.W);
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const float g = dy[nc * P * Q + oh * Q + ow] * scale;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++)
                        dxp[(oh * p.stride + r) * p.W + ow * p.stride + s] += g;
            }
    });
}

// ---------------------------------------------------------------------------------------
// Naive oracle: the definitions, window by window.

void global_avgpool2d_forward(float* y, const float* x, int64_t N, int64_t C, int64_t HW) {
    const float inv = 1.0f / float(HW);
    parallel_for(N * C, threads_for(N * C * HW), [&](int64_t nc) { y[nc] = sum(x + nc * HW, HW) * inv; });
}

void global_avgpool2d_backward(float* dx, const float* dy, int64_t N, int64_t C, int64_t HW) {
    const float inv = 1.0f / float(HW);
    parallel_for(N * C, threads_for(N * C * HW), [&](int64_t nc) {
        const float g = dy[nc] * inv;
        for (int64_t j = 0; j < HW; j++) dx[nc * HW + j] = g;
    });
}

}  // namespace pylenet
