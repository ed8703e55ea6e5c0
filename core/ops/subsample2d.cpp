// Trainable subsampling, forward and backward side by side, and its naive oracle.
#include "ops/subsample2d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/parallel.h"
#include "ops/pool2d.h"

namespace pylenet {

Pool2dParams check_subsample2d(const Shape& x, const Shape& w, const std::optional<Shape>& b,
                               int64_t kernel, int64_t stride, const Shape* dy) {
    const char* op = "subsample2d";
    const Pool2dParams p = check_pool2d(op, x, kernel, stride, dy);
    check_ndim(op, "w", w, 1, "(C,)");
    check_equal(op, "w length", w[0], "x channels x.shape[1]", p.C);
    if (b) {
        check_ndim(op, "b", *b, 1, "(C,)");
        check_equal(op, "b length", (*b)[0], "x channels x.shape[1]", p.C);
    }
    return p;
}

namespace {
// Sum of the window at output (oh, ow) of the plane xp (H x W).
inline float window_sum(const float* xp, int64_t oh, int64_t ow, const Pool2dParams& p) {
    float acc = 0.0f;
    for (int64_t r = 0; r < p.kernel; r++)
        for (int64_t s = 0; s < p.kernel; s++) acc += xp[(oh * p.stride + r) * p.W + ow * p.stride + s];
    return acc;
}
}  // namespace

void subsample2d_forward(float* y, const float* x, const float* w, const float* b,
                         const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), planes = p.N * p.C;
    parallel_for(planes, threads_for(planes * P * Q * p.kernel * p.kernel), [&](int64_t nc) {
        const int64_t c = nc % p.C;
        const float* xp = x + nc * p.H * p.W;
        const float bias = b ? b[c] : 0.0f;
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++)
                y[nc * P * Q + oh * Q + ow] = w[c] * window_sum(xp, oh, ow, p) + bias;
    });
}

// Backward of y = w s + b with s the window sum: dw += dy s, db += dy, dx[window] += w dy.
void subsample2d_backward_images(float* dx, float* dw, float* db, const float* x, const float* w,
                                 const float* dy, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t c = 0; c < p.C; c++) {
            const int64_t nc = n * p.C + c;
            const float* xp = x + nc * p.H * p.W;
            const float* g = dy + nc * P * Q;
            float gw = 0.0f, gb = 0.0f;
            for (int64_t o = 0; o < P * Q; o++) {
                gw += g[o] * window_sum(xp, o / Q, o % Q, p);
                gb += g[o];
            }
            dw[c] += gw;
            if (db) db[c] += gb;
            if (!dx) continue;
            float* dxp = dx + nc * p.H * p.W;
            std::memset(dxp, 0, sizeof(float) * p.H * p.W);
            for (int64_t oh = 0; oh < P; oh++)
                for (int64_t ow = 0; ow < Q; ow++) {
                    const float v = w[c] * g[oh * Q + ow];
                    for (int64_t r = 0; r < p.kernel; r++)
                        for (int64_t s = 0; s < p.kernel; s++)
                            dxp[(oh * p.stride + r) * p.W + ow * p.stride + s] += v;
                }
        }
}

// The batch split of training (parallel.h: batch_blocks), as conv2d_backward: bit-identical
// to the fused network and independent of the thread count.
void subsample2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, const Pool2dParams& p) {
    const int64_t nblocks = batch_blocks(p.N), C = p.C, HW = p.H * p.W;
    const int64_t PQ = p.out_h() * p.out_w();
    const int nt = int(std::min<int64_t>(threads_for(3 * p.N * C * HW), nblocks));
    std::vector<float> dw_part(size_t(nblocks * C), 0.0f), db_part(size_t(nblocks * C), 0.0f);
    parallel_for(nblocks, nt, [&](int64_t blk) {
        const int64_t n0 = block_begin(p.N, nblocks, blk), n = block_begin(p.N, nblocks, blk + 1) - n0;
        Pool2dParams q = p;
        q.N = n;
        subsample2d_backward_images(dx + n0 * C * HW, dw_part.data() + blk * C,
                                    db_part.data() + blk * C, x + n0 * C * HW, w,
                                    dy + n0 * C * PQ, q);
    });
    sum_blocks(dw, dw_part.data(), C, nblocks, C);
    sum_blocks(db, db_part.data(), C, nblocks, C);
}

// ---------------------------------------------------------------------------------------
// Naive oracle: the definitions, window by window, in double.

}  // namespace pylenet
