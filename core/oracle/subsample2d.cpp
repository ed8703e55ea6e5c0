// The naive oracle of subsample2d: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/subsample2d.h"

#include "oracle/pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void subsample2d_forward_naive(float* y, const float* x, const float* w, const float* b,
                               const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const double acc = pool2d_window_sum_naive(x + nc * p.H * p.W, p, oh, ow);
                const int64_t c = nc % p.C;
                y[(nc * P + oh) * Q + ow] = float(double(w[c]) * acc + (b ? b[c] : 0.0));
            }
}

// y[o] = w[c] sum_window x + b[c]  =>  dx[window] += w[c] dy[o], dw[c] += dy[o] sum_window x,
// db[c] += dy[o].
void subsample2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                                const float* dy, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), HW = p.H * p.W;
    std::vector<double> dxa(size_t(p.N * p.C * HW), 0.0), dwa(size_t(p.C), 0.0), dba(size_t(p.C), 0.0);
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const int64_t c = nc % p.C;
                const double g = dy[(nc * P + oh) * Q + ow];
                double sum = 0.0;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++) {
                        const int64_t i = nc * HW + (oh * p.stride + r) * p.W + ow * p.stride + s;
                        sum += x[i];
                        dxa[size_t(i)] += double(w[c]) * g;
                    }
                dwa[size_t(c)] += g * sum;
                dba[size_t(c)] += g;
            }
    for (size_t i = 0; i < dxa.size(); i++) dx[i] = float(dxa[i]);
    for (size_t c = 0; c < dwa.size(); c++) dw[c] = float(dwa[c]), db[c] = float(dba[c]);
}

}  // namespace pylenet
