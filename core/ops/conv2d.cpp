// Conv2d forward/backward: shape checks, dispatch to implicit GEMM (stride 1) or im2col + GEMM
// (other strides), the batch-parallel drivers, and the naive oracle.
#include "ops/conv2d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/parallel.h"
#include "base/reduce.h"
#include "gemm/gemm.h"
#include "ops/activations.h"
#include "ops/conv2d_gemm.h"
#include "ops/im2col.h"
#include "ops/linear.h"

namespace pylenet {

Conv2dParams check_conv2d(const Shape& x, const Shape& w, const std::optional<Shape>& b, int64_t stride,
                          int64_t pad, const Shape* dy) {
    const char* op = "conv2d";
    check_ndim(op, "x", x, 4, "(N, C, H, W)");
    check_ndim(op, "w", w, 4, "(K, C, R, S)");
    check_at_least(op, "stride", stride, 1);
    check_at_least(op, "padding", pad, 0);
    check_at_least(op, "x channels (dim 1)", x[1], 1);
    check_at_least(op, "w output channels (dim 0)", w[0], 1);
    check_at_least(op, "kernel height w.shape[2]", w[2], 1);
    check_at_least(op, "kernel width w.shape[3]", w[3], 1);
    check_equal(op, "w input channels w.shape[1]", w[1], "x channels x.shape[1]", x[1]);
    if (b) {
        check_ndim(op, "b", *b, 1, "(K,)");
        check_equal(op, "b length", (*b)[0], "w output channels w.shape[0]", w[0]);
    }
    Conv2dParams p;
    p.N = x[0], p.C = x[1], p.H = x[2], p.W = x[3];
    p.K = w[0], p.R = w[2], p.S = w[3];
    p.stride = stride, p.pad = pad;
    if (pad > (int64_t(1) << 30))
        throw std::invalid_argument("conv2d: padding " + std::to_string(pad) + " is absurdly large");
    if (p.H + 2 * pad < p.R || p.W + 2 * pad < p.S)
        throw std::invalid_argument(
            "conv2d: kernel " + std::to_string(p.R) + "x" + std::to_string(p.S) +
            " is larger than the padded input " + std::to_string(p.H + 2 * pad) + "x" +
            std::to_string(p.W + 2 * pad) + " (x " + shape_str(x) + ", padding " +
            std::to_string(pad) + ")");
    check_output_size(op, double(p.N) * p.K * p.out_h() * p.out_w());
    check_output_size(op, double(p.crs()) * p.out_h() * p.out_w());  // im2col workspace
    if (dy) {
        const Shape want = {p.N, p.K, p.out_h(), p.out_w()};
        if (*dy != want)
            throw std::invalid_argument("conv2d_backward: dy must have shape " + shape_str(want) +
                                        " (N, K, P, Q), got " + shape_str(*dy));
    }
    return p;
}

// ---------------------------------------------------------------------------------------
// Strided path: per image, col = im2col(x_n); y_n (K, PQ) = w (K, CRS) * col (CRS, PQ) + b,
// on the same implicit-GEMM kernels with offsets stepping through col's rows.

namespace {
// Workspace of the im2col path: col and dcol (CRS, PQ), w^T (CRS, K), int64 row offsets.
struct Im2colScratch {
    float *col, *dcol, *wT;
    int64_t* off;
    static int64_t floats(const Conv2dParams& p) {
        const int64_t CRS = p.crs(), PQ = p.out_h() * p.out_w();
        return 2 * CRS * PQ + CRS * p.K + 2 * std::max(CRS, p.K) + 2;
    }
    Im2colScratch(float* ws, const Conv2dParams& p) {
        const int64_t CRS = p.crs(), PQ = p.out_h() * p.out_w();
        col = ws, dcol = ws + CRS * PQ, wT = dcol + CRS * PQ;
        // int64 offsets after the floats, on an 8-byte boundary.
        off = reinterpret_cast<int64_t*>(ws + (2 * CRS * PQ + CRS * p.K + 1) / 2 * 2);
    }
};

// off[r] = r * stride for rows [0, rows).
void row_offsets(int64_t* off, int64_t rows, int64_t stride) {
    for (int64_t r = 0; r < rows; r++) off[r] = r * stride;
}
}  // namespace

namespace {
// The Linear layer a dense convolution is, for n images.
inline LinearParams as_linear(const Conv2dParams& p, int64_t n) { return {n, p.crs(), p.K}; }
}  // namespace

int64_t conv2d_workspace(const Conv2dParams& p, int64_t n) {
    n = std::max<int64_t>(n, 1);
    if (conv2d_is_dense(p)) return linear_workspace(as_linear(p, n));
    const int64_t im2col_ws = Im2colScratch::floats(p);
    return conv2d_gemm_ok(p) ? std::max(im2col_ws, conv2d_gemm_workspace(p, n)) : im2col_ws;
}

void conv2d_forward_images(float* y, const float* x, const float* w, const float* b, int64_t n,
                           const Conv2dParams& p, float* ws, bool relu) {
    if (conv2d_is_dense(p)) return linear_forward_rows(y, x, w, b, as_linear(p, n), ws, relu);
    if (conv2d_gemm_ok(p)) return conv2d_forward_gemm(y, x, w, b, n, p, ws, relu);
    const int64_t PQ = p.out_h() * p.out_w(), CRS = p.crs();
    Im2colScratch s(ws, p);
    row_offsets(s.off, CRS, PQ);
    for (int64_t i = 0; i < n; i++) {
        float* yi = y + i * p.K * PQ;
        im2col(s.col, x + i * p.C * p.H * p.W, p);
        for (int64_t k = 0; k < p.K; k++) std::fill(yi + k * PQ, yi + (k + 1) * PQ, b ? b[k] : 0.0f);
        gemm_a_rows(yi, PQ, w, p.K, CRS, s.col, s.off, PQ, /*accumulate=*/true);
        if (relu)
            for (int64_t j = 0; j < p.K * PQ; j++) yi[j] = pylenet::relu(yi[j]);
    }
}

namespace {
// Backward of y = w * col + b on im2col: dw += dy col^T and db += sum_pq dy (when with_dw);
// dcol = w^T dy and dx = col2im(dcol) (when dx is not null).
void im2col_backward(float* dx, float* dw, float* db, const float* x, const float* w, const float* dy,
                     int64_t n, const Conv2dParams& p, float* ws, bool with_dw) {
    const int64_t PQ = p.out_h() * p.out_w(), CRS = p.crs();
    Im2colScratch s(ws, p);
    if (dx)  // w^T (CRS, K) once for all images
        for (int64_t t = 0; t < CRS; t++)
            for (int64_t k = 0; k < p.K; k++) s.wT[t * p.K + k] = w[k * CRS + t];
    row_offsets(s.off, std::max(CRS, p.K), PQ);  // rows of col (CRS, PQ) and of dy_i (K, PQ)
    for (int64_t i = 0; i < n; i++) {
        const float* dyi = dy + i * p.K * PQ;
        if (with_dw) {
            im2col(s.col, x + i * p.C * p.H * p.W, p);
            gemm_a_rows_t(dw, dyi, PQ, p.K, CRS, s.col, s.off, PQ);  // dw (K, CRS) += dy_i col^T
            if (db)
                for (int64_t k = 0; k < p.K; k++) db[k] += sum(dyi + k * PQ, PQ);
        }
        if (!dx) continue;
        gemm_a_rows(s.dcol, PQ, s.wT, CRS, p.K, dyi, s.off, PQ, /*accumulate=*/false);
        col2im(dx + i * p.C * p.H * p.W, s.dcol, p);
    }
}
}  // namespace

void conv2d_backward_images(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* dy, int64_t n, const Conv2dParams& p, float* ws) {
    if (conv2d_is_dense(p)) return linear_backward_rows(dx, dw, db, x, w, dy, as_linear(p, n), ws);
    if (conv2d_gemm_ok(p)) {
        const bool strided = p.stride > 1;  // the implicit GEMM gives dw and db; im2col dx
        if (conv2d_backward_gemm(strided ? nullptr : dx, dw, db, x, w, dy, n, p, ws)) {
            if (strided && dx) im2col_backward(dx, nullptr, nullptr, x, w, dy, n, p, ws, false);
            return;
        }
    }
    im2col_backward(dx, dw, db, x, w, dy, n, p, ws, true);
}

// Blocks of the batch as training cuts it (parallel.h: batch_blocks), so that each call
// holds several images (the exact grid and the dense path need a few to pay off); the
// forward's bits do not depend on the split.
void conv2d_forward(float* y, const float* x, const float* w, const float* b,
                    const Conv2dParams& p) {
    const int64_t PQ = p.out_h() * p.out_w(), CHW = p.C * p.H * p.W, nblocks = batch_blocks(p.N);
    for_each_batch_block(p.N, threads_for(p.N * p.K * PQ * p.crs()),
                         conv2d_workspace(p, (p.N + nblocks - 1) / nblocks),
                         [&](int64_t, int64_t n0, int64_t n, float* ws) {
        conv2d_forward_images(y + n0 * p.K * PQ, x + n0 * CHW, w, b, n, p, ws);
    });
}

// The batch split of training (parallel.h: batch_blocks): each block sums its images' dw/db
// in order and the blocks are added in order, as the fused network does, so the results are
// bit-identical to it and do not depend on the thread count.
void conv2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const Conv2dParams& p) {
    const int64_t PQ = p.out_h() * p.out_w(), KCRS = p.K * p.crs(), CHW = p.C * p.H * p.W;
    const int64_t nblocks = batch_blocks(p.N);
    std::vector<float> dw_part(size_t(nblocks) * KCRS, 0.0f), db_part(size_t(nblocks) * p.K, 0.0f);
    for_each_batch_block(p.N, threads_for(3 * p.N * p.K * PQ * p.crs()),
                         conv2d_workspace(p, (p.N + nblocks - 1) / nblocks),
                         [&](int64_t blk, int64_t n0, int64_t n, float* ws) {
        conv2d_backward_images(dx + n0 * CHW, dw_part.data() + blk * KCRS, db_part.data() + blk * p.K,
                               x + n0 * CHW, w, dy + n0 * p.K * PQ, n, p, ws);
    });
    sum_blocks(dw, dw_part.data(), KCRS, nblocks, KCRS);
    sum_blocks(db, db_part.data(), p.K, nblocks, p.K);
}

// ---------------------------------------------------------------------------------------
// Naive oracle: the definitions, loop by loop.

}  // namespace pylenet
