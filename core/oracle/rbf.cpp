// The naive oracle of rbf: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/rbf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void rbf_forward_naive(float* y, const float* x, const float* c, const LinearParams& p) {
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t i = 0; i < p.O; i++) {
            double acc = 0.0;
            for (int64_t j = 0; j < p.I; j++) {
                const double d = double(x[n * p.I + j]) - c[i * p.I + j];
                acc += d * d;
            }
            y[n * p.O + i] = float(acc);
        }
}

void rbf_backward_naive(float* dx, const float* x, const float* c, const float* dy,
                        const LinearParams& p) {
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t j = 0; j < p.I; j++) {
            double acc = 0.0;
            for (int64_t i = 0; i < p.O; i++)
                acc += 2.0 * double(dy[n * p.O + i]) * (double(x[n * p.I + j]) - c[i * p.I + j]);
            dx[n * p.I + j] = float(acc);
        }
}

}  // namespace pylenet
