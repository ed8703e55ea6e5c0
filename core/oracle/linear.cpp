// The naive oracle of linear: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void linear_forward_naive(float* y, const float* x, const float* w, const float* b,
                          const LinearParams& p) {
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t o = 0; o < p.O; o++) {
            double acc = b ? b[o] : 0.0;
            for (int64_t i = 0; i < p.I; i++) acc += double(x[n * p.I + i]) * w[o * p.I + i];
            y[n * p.O + o] = float(acc);
        }
}

// y[n,o] = sum_i x[n,i] w[o,i] + b[o]  =>  dx = dy w, dw = dy^T x, db = sum_n dy.
void linear_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                           const float* dy, const LinearParams& p) {
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t i = 0; i < p.I; i++) {
            double acc = 0.0;
            for (int64_t o = 0; o < p.O; o++) acc += double(dy[n * p.O + o]) * w[o * p.I + i];
            dx[n * p.I + i] = float(acc);
        }
    for (int64_t o = 0; o < p.O; o++) {
        double accb = 0.0;
        for (int64_t n = 0; n < p.N; n++) accb += dy[n * p.O + o];
        if (db) db[o] = float(accb);
        for (int64_t i = 0; i < p.I; i++) {
            double acc = 0.0;
            for (int64_t n = 0; n < p.N; n++) acc += double(dy[n * p.O + o]) * x[n * p.I + i];
            dw[o * p.I + i] = float(acc);
        }
    }
}

}  // namespace pylenet
