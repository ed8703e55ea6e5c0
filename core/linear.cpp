// Linear forward/backward on the GEMM kernels; threads own rows of each output.
#include "linear.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "activations.h"
#include "igemm.h"
#include "parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pylenet {

LinearParams check_linear(const Shape& x, const Shape& w, int64_t bias_len, const Shape* dy) {
    const char* op = "linear";
    check_ndim(op, "x", x, 2, "(N, I)");
    check_ndim(op, "w", w, 2, "(O, I)");
    check_equal(op, "w input features w.shape[1]", w[1], "x features x.shape[1]", x[1]);
    if (bias_len >= 0) check_equal(op, "b length", bias_len, "w output features w.shape[0]", w[0]);
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
// Row range [lo, hi) of `rows` owned by thread t of nt.
inline void row_range(int64_t rows, int t, int nt, int64_t* lo, int64_t* hi) {
    *lo = rows * t / nt;
    *hi = rows * (t + 1) / nt;
}

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
        igemm_nt(yT, w, p.I, p.O, p.N, x, row_offsets(ws, p.N, p.I), p.I);
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) y[n * p.O + o] = yT[o * p.N + n];
    } else {
        std::memset(y, 0, sizeof(float) * p.N * p.O);
        // y (N, O) += x (N, I) * w (O, I)^T: dot products of rows, 4x4 register tiles.
        igemm_nt(y, x, p.I, p.N, p.O, w, row_offsets(ws, p.O, p.I), p.I);
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
    igemm_nn(dw, p.I, dyT, p.O, p.N, x, off, p.I, /*accumulate=*/true);
    if (db)  // column sums of dy, row by row: contiguous, no horizontal adds
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = 0; o < p.O; o++) db[o] += dy[n * p.O + o];
    // dx (N, I) = dy (N, O) * w (O, I)
    if (dx) igemm_nn(dx, p.I, dy, p.N, p.O, w, off, p.I, /*accumulate=*/false);
}

void linear_forward(float* y, const float* x, const float* w, const float* b,
                    const LinearParams& p) {
    const int nt = int(std::min<int64_t>(threads_for(p.N * p.I * p.O), std::max<int64_t>(p.N, 1)));
    const int64_t ws_size = linear_workspace(p);
    std::vector<float> ws(size_t(nt) * ws_size);
#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), T = omp_get_num_threads();
#endif
        int64_t lo, hi;
        row_range(p.N, t, T, &lo, &hi);
        LinearParams mine = p;
        mine.N = hi - lo;
        linear_forward_rows(y + lo * p.O, x + lo * p.I, w, b, mine, ws.data() + t * ws_size);
    }
}

void linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const LinearParams& p) {
    const int nt = threads_for(p.N * p.I * p.O);
    const int64_t rows = std::max(p.N, p.O);
    std::vector<float> ws(size_t(2 * rows + 2 + p.O * p.N));
    int64_t* off = reinterpret_cast<int64_t*>(ws.data());
    for (int64_t r = 0; r < rows; r++) off[r] = r * p.I;
    float* dyT = ws.data() + 2 * rows + 2;
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t o = 0; o < p.O; o++) dyT[o * p.N + n] = dy[n * p.O + o];
#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), T = omp_get_num_threads();
#endif
        int64_t lo, hi;
        row_range(p.N, t, T, &lo, &hi);  // dx rows: dx (N,I) = dy (N,O) w (O,I)
        igemm_nn(dx + lo * p.I, p.I, dy + lo * p.O, hi - lo, p.O, w, off, p.I, false);
        row_range(p.O, t, T, &lo, &hi);  // dw rows: dw (O,I) = dy^T (O,N) x (N,I)
        igemm_nn(dw + lo * p.I, p.I, dyT + lo * p.N, hi - lo, p.N, x, off, p.I, false);
        for (int64_t o = lo; o < hi; o++) db[o] = 0.0f;  // column sums of dy, row by row
        for (int64_t n = 0; n < p.N; n++)
            for (int64_t o = lo; o < hi; o++) db[o] += dy[n * p.O + o];
    }
}

}  // namespace pylenet
