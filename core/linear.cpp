// Linear forward/backward on the GEMM kernels; threads own rows of each output.
#include "linear.h"

#include <algorithm>
#include <cstring>

#include "gemm.h"
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
}  // namespace

void linear_forward(float* y, const float* x, const float* w, const float* b,
                    const LinearParams& p) {
    const int nt = int(std::min<int64_t>(threads_for(p.N * p.I * p.O), std::max<int64_t>(p.N, 1)));
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
#ifdef _OPENMP
        row_range(p.N, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
#else
        row_range(p.N, 0, 1, &lo, &hi);
#endif
        gemm_nt(hi - lo, p.O, p.I, x + lo * p.I, p.I, w, p.I, y + lo * p.O, p.O, false);
        if (b)
            for (int64_t n = lo; n < hi; n++)
                for (int64_t o = 0; o < p.O; o++) y[n * p.O + o] += b[o];
    }
}

void linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* dy, const LinearParams& p) {
    const int nt = threads_for(p.N * p.I * p.O);
#pragma omp parallel num_threads(nt)
    {
        int t = 0, T = 1;
#ifdef _OPENMP
        t = omp_get_thread_num(), T = omp_get_num_threads();
#endif
        int64_t lo, hi;
        row_range(p.N, t, T, &lo, &hi);  // dx rows: dx (N,I) = dy (N,O) w (O,I)
        gemm_nn(hi - lo, p.I, p.O, dy + lo * p.O, p.O, w, p.I, dx + lo * p.I, p.I, false);
        row_range(p.O, t, T, &lo, &hi);  // dw rows: dw (O,I) = dy^T (O,N) x (N,I)
        gemm_tn(hi - lo, p.I, p.N, dy + lo, p.O, x, p.I, dw + lo * p.I, p.I, false);
        for (int64_t o = lo; o < hi; o++) {
            float acc = 0.0f;
            for (int64_t n = 0; n < p.N; n++) acc += dy[n * p.O + o];
            db[o] = acc;
        }
    }
}

}  // namespace pylenet
