// The naive oracle of pool2d: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void maxpool2d_forward_naive(float* y, int32_t* argmax, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const int64_t first = oh * p.stride * p.W + ow * p.stride;
                float best = x[nc * p.H * p.W + first];
                int64_t best_i = first;
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++) {
                        const int64_t i = (oh * p.stride + r) * p.W + ow * p.stride + s;
                        const float v = x[nc * p.H * p.W + i];
                        if (v > best || std::isnan(v)) best = v, best_i = i;
                    }
                y[(nc * P + oh) * Q + ow] = best;
                if (argmax) argmax[(nc * P + oh) * Q + ow] = int32_t(best_i);
            }
}

void maxpool2d_backward_naive(float* dx, const float* dy, const int32_t* argmax, const Pool2dParams& p) {
    const int64_t PQ = p.out_h() * p.out_w(), HW = p.H * p.W;
    std::vector<double> acc(size_t(p.N * p.C * HW), 0.0);
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t o = 0; o < PQ; o++) acc[size_t(nc * HW + argmax[nc * PQ + o])] += dy[nc * PQ + o];
    for (size_t i = 0; i < acc.size(); i++) dx[i] = float(acc[i]);
}

double pool2d_window_sum_naive(const float* plane, const Pool2dParams& p, int64_t oh, int64_t ow) {
    double acc = 0.0;
    for (int64_t r = 0; r < p.kernel; r++)
        for (int64_t s = 0; s < p.kernel; s++) acc += plane[(oh * p.stride + r) * p.W + ow * p.stride + s];
    return acc;
}

void avgpool2d_forward_naive(float* y, const float* x, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++)
                y[(nc * P + oh) * Q + ow] = float(pool2d_window_sum_naive(x + nc * p.H * p.W, p, oh, ow) /
                                                  double(p.kernel * p.kernel));
}

void avgpool2d_backward_naive(float* dx, const float* dy, const Pool2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w(), HW = p.H * p.W;
    std::vector<double> acc(size_t(p.N * p.C * HW), 0.0);
    // y[o] = sum_window x / k^2  =>  dx[window] += dy[o] / k^2.
    for (int64_t nc = 0; nc < p.N * p.C; nc++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t ow = 0; ow < Q; ow++) {
                const double g = double(dy[(nc * P + oh) * Q + ow]) / double(p.kernel * p.kernel);
                for (int64_t r = 0; r < p.kernel; r++)
                    for (int64_t s = 0; s < p.kernel; s++)
                        acc[size_t(nc * HW + (oh * p.stride + r) * p.W + ow * p.stride + s)] += g;
            }
    for (size_t i = 0; i < acc.size(); i++) dx[i] = float(acc[i]);
}

}  // namespace pylenet
