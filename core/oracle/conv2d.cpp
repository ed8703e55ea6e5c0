// The naive oracle of conv2d: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/conv2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void conv2d_forward_naive(float* y, const float* x, const float* w, const float* b,
                          const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t oh = 0; oh < P; oh++)
                for (int64_t ow = 0; ow < Q; ow++) {
                    double acc = b ? b[k] : 0.0;
                    for (int64_t c = 0; c < p.C; c++)
                        for (int64_t r = 0; r < p.R; r++)
                            for (int64_t s = 0; s < p.S; s++) {
                                const int64_t ih = oh * p.stride - p.pad + r;
                                const int64_t iw = ow * p.stride - p.pad + s;
                                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                                acc += double(x[((n * p.C + c) * p.H + ih) * p.W + iw]) *
                                       w[((k * p.C + c) * p.R + r) * p.S + s];
                            }
                    y[((n * p.K + k) * P + oh) * Q + ow] = float(acc);
                }
}

void conv2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                           const float* dy, const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    std::vector<double> dxa(size_t(p.N * p.C * p.H * p.W)), dwa(size_t(p.K * p.crs())),
        dba(size_t(p.K));
    // y[n,k,oh,ow] += x[n,c,ih,iw] * w[k,c,r,s]  =>  dx += w * dy, dw += x * dy.
    for (int64_t n = 0; n < p.N; n++)
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t oh = 0; oh < P; oh++)
                for (int64_t ow = 0; ow < Q; ow++) {
                    const double g = dy[((n * p.K + k) * P + oh) * Q + ow];
                    dba[k] += g;
                    for (int64_t c = 0; c < p.C; c++)
                        for (int64_t r = 0; r < p.R; r++)
                            for (int64_t s = 0; s < p.S; s++) {
                                const int64_t ih = oh * p.stride - p.pad + r;
                                const int64_t iw = ow * p.stride - p.pad + s;
                                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                                const int64_t xi = ((n * p.C + c) * p.H + ih) * p.W + iw;
                                const int64_t wi = ((k * p.C + c) * p.R + r) * p.S + s;
                                dxa[xi] += double(w[wi]) * g;
                                dwa[wi] += double(x[xi]) * g;
                            }
                }
    for (size_t i = 0; i < dxa.size(); i++) dx[i] = float(dxa[i]);
    for (size_t i = 0; i < dwa.size(); i++) dw[i] = float(dwa[i]);
    for (size_t i = 0; i < dba.size(); i++) db[i] = float(dba[i]);
}

}  // namespace pylenet
