// im2col / col2im for one image. Each kernel tap (c,r,s) fills one row of col; the range of
// output columns q whose input pixel lies inside the image is computed once per row, so the
// inner loops carry no bounds checks.
#include "ops/im2col.h"

#include <algorithm>
#include <cstring>

namespace pylenet {

namespace {
// Output columns [q0, q1) whose input column q*stride - pad + s lies in [0, W).
inline void valid_q(const Conv2dParams& p, int64_t s, int64_t Q, int64_t* q0, int64_t* q1) {
    // ceil(a / stride) for a > 0 as (a - 1) / stride + 1: no overflow for any stride.
    const int64_t off = s - p.pad;  // iw = q*stride + off
    *q0 = off >= 0 ? 0 : (-off - 1) / p.stride + 1;
    *q1 = p.W - off <= 0 ? 0 : std::min(Q, (p.W - off - 1) / p.stride + 1);
    if (*q1 < *q0) *q1 = *q0;
}
}  // namespace

void im2col(float* col, const float* x, const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    for (int64_t c = 0; c < p.C; c++)
        for (int64_t r = 0; r < p.R; r++)
            for (int64_t s = 0; s < p.S; s++) {
                float* row = col + ((c * p.R + r) * p.S + s) * P * Q;
                int64_t q0, q1;
                valid_q(p, s, Q, &q0, &q1);
                const int64_t off = s - p.pad;
                for (int64_t oh = 0; oh < P; oh++) {
                    float* out = row + oh * Q;
                    const int64_t ih = oh * p.stride - p.pad + r;
                    if (ih < 0 || ih >= p.H) {
                        std::memset(out, 0, sizeof(float) * Q);
                        continue;
                    }
                    const float* in = x + (c * p.H + ih) * p.W;
                    for (int64_t q = 0; q < q0; q++) out[q] = 0.0f;
                    if (p.stride == 1) {
                        if (q1 > q0) std::memcpy(out + q0, in + q0 + off, sizeof(float) * (q1 - q0));
                    } else {
                        for (int64_t q = q0; q < q1; q++) out[q] = in[q * p.stride + off];
                    }
                    for (int64_t q = q1; q < Q; q++) out[q] = 0.0f;
                }
            }
}

void col2im(float* dx, const float* col, const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    std::memset(dx, 0, sizeof(float) * p.C * p.H * p.W);
    for (int64_t c = 0; c < p.C; c++)
        for (int64_t r = 0; r < p.R; r++)
            for (int64_t s = 0; s < p.S; s++) {
                const float* row = col + ((c * p.R + r) * p.S + s) * P * Q;
                int64_t q0, q1;
                valid_q(p, s, Q, &q0, &q1);
                const int64_t off = s - p.pad;
                for (int64_t oh = 0; oh < P; oh++) {
                    const int64_t ih = oh * p.stride - p.pad + r;
                    if (ih < 0 || ih >= p.H) continue;
                    const float* in = row + oh * Q;
                    float* out = dx + (c * p.H + ih) * p.W;
                    for (int64_t q = q0; q < q1; q++) out[q * p.stride + off] += in[q];
                }
            }
}

}  // namespace pylenet
