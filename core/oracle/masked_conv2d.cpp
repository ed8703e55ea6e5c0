// The naive oracle of masked_conv2d: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/masked_conv2d.h"

#include "oracle/conv2d.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void masked_conv2d_forward_naive(float* y, const float* x, const float* w, const float* mask,
                                 const float* b, const Conv2dParams& p) {
    std::vector<float> wm(size_t(p.K * p.crs()));
    mask_weight(wm.data(), w, mask, p);
    conv2d_forward_naive(y, x, wm.data(), b, p);
}

// y = conv(x, w * mask)  =>  dx = conv's dx for w * mask; dw = mask * conv's dw.
void masked_conv2d_backward_naive(float* dx, float* dw, float* db, const float* x, const float* w,
                                  const float* mask, const float* dy, const Conv2dParams& p) {
    std::vector<float> wm(size_t(p.K * p.crs()));
    mask_weight(wm.data(), w, mask, p);
    conv2d_backward_naive(dx, dw, db, x, wm.data(), dy, p);
    const int64_t RS = p.R * p.S;
    for (int64_t kc = 0; kc < p.K * p.C; kc++)
        for (int64_t i = 0; i < RS; i++) dw[kc * RS + i] *= mask[kc];
}

}  // namespace pylenet
