// Linear forward/backward on the GEMM kernels; threads own blocks of the batch (parallel.h).
#include "ops/linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/parallel.h"
#include "gemm/gemm.h"
#include "ops/activations.h"

namespace pylenet {

LinearParams check_linear(const Shape& x, const Shape& w, const std::optional<Shape>& b,
                          const Shape* dy) {
    const char* op = "linear";
    check_ndim(op, "x", x, 2, "(N, I)");
    check_ndim(op, "w", w, 2, "(O, I)");
    check_equal(op, "w input features w.shape[1]", w[1], "x features x.shape[1]", x[1]);
    if (b) {
        check_ndim(op, "b", *b, 1, "(O,)");
        check_equal(op, "b length", (*b)[0], "w output features w.shape[0]", w[0]);
    }
    LinearParams p;
    p.N = x[0], p.I = x[1], p.O = w[0];
    check_output_size(op, double(p.N) * p.O);
    if (dy) {
        const Shape want = {p.N, p.O};
        if (*dy != want)
            throw std::invalid_argument("linear_backward: dy must have shape " + shape_str(want) +
                                        " (N, O), got " + shape_str(*dy));
    }
    return p;
}

namespace {
// Row offsets r * stride for the implicit-GEMM kernels (rows of a row-major matrix).
inline int64_t* row_offsets(float* ws, int64_t rows, int64_t stride) {
    int64_t* off = reinterpret_cast<int64_t*>(ws);
    for (int64_t r = 0; r < rows; r++) off[r] = r * stride;
    return off;
}
}  // namespace

int64_t linear_workspace(const LinearParams& p) {
    // int64 row offsets (2 floats each, even count keeps them aligned), then dy^T.
    return 2 * std::max(p.N, p.O) + p.O * p.N + 2;
}

void linear_forward_rows(float* y, const float* x, const float* w, const float* b,
                         const LinearParams& p, float* ws, bool relu) {
    if (p.N < 4) {
        // Few samples: y^T (O, N) = w (O, I) * x (N, I)^T streams w once, 16 rows at a time.
        float* yT = ws + 2 * std::max(p.N, p.O) + 2;
        std::memset(yT, 0, sizeof(float) * p.O * p.N);
        gemm_a_rows_t(yT, w, p.I, p.O, p.N, x, row_offsets(ws, p.N, p.I), p.I);
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) y[n * p.O + o] = yT[o * p.N + n];
    } else {
        std::memset(y, 0, sizeof(float) * p.N * p.O);
        // y (N, O) += x (N, I) * w (O, I)^T: dot products of rows, 4x4 register tiles.
        gemm_a_rows_t(y, x, p.I, p.N, p.O, w, row_offsets(ws, p.O, p.I), p.I);
    }
    if (b)
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) y[n * p.O + o] += b[o];
    if (relu)
        for (int64_t i = 0; i < p.N * p.O; i++) y[i] = pylenet::relu(y[i]);
}

void linear_backward_rows(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, const LinearParams& p, float* ws) {
    const int64_t* off = row_offsets(ws, std::max(p.N, p.O), p.I);
    float* dyT = ws + 2 * std::max(p.N, p.O) + 2;
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t o = 0; o < p.O; o++) dyT[o * p.N + n] = dy[n * p.O + o];
    // dw (O, I) += dy^T (O, N) * x (N, I)
    gemm_a_rows(dw, p.I, dyT, p.O, p.N, x, off, p.I, /*accumulate=*/true);
    if (db)  // column sums of dy, row by row: contiguous, no horizontal adds
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) db[o] += dy[n * p.O + o];
    // dx (N, I) = dy (N, O) * w (O, I)
    if (dx) gemm_a_rows(dx, p.I, dy, p.N, p.O, w, off, p.I, /*accumulate=*/false);
}

// Forward and backward cut the batch as the fused network does (parallel.h: batch_blocks) and
// run the same per-block functions on each block, so the two paths are bit-identical; the
// blocks' dw/db are added in block order, so no result depends on the thread count.
void linear_forward(float* y, const float* x, const float* w, const float* b,
                    const LinearParams& p) {
    for_each_batch_block(p.N, threads_for(p.N * p.I * p.O), linear_workspace(p),
                         [&](int64_t, int64_t n0, int64_t n, float* ws) {
        LinearParams bp = p;
        bp.N = n;
        linear_forward_rows(y + n0 * p.O, x + n0 * p.I, w, b, bp, ws);
    });
}

void linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const LinearParams& p) {
    const int64_t nblocks = batch_blocks(p.N), OI = p.O * p.I;
    std::vector<float> dw_part(size_t(nblocks) * OI, 0.0f), db_part(size_t(nblocks) * p.O, 0.0f);
    for_each_batch_block(p.N, threads_for(2 * p.N * p.I * p.O), linear_workspace(p),
                         [&](int64_t blk, int64_t n0, int64_t n, float* ws) {
        LinearParams bp = p;
        bp.N = n;
        linear_backward_rows(dx + n0 * p.I, dw_part.data() + blk * OI, db_part.data() + blk * p.O,
                             x + n0 * p.I, w, dy + n0 * p.O, bp, ws);
    });
    sum_blocks(dw, dw_part.data(), OI, nblocks, OI);
    sum_blocks(db, db_part.data(), p.O, nblocks, p.O);
}

// ---------------------------------------------------------------------------------------
// Naive oracle: the definitions, loop by loop.

}  // namespace pylenet
