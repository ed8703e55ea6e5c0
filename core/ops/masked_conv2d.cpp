// The masked convolution: conv2d's kernels run on the masked weight; the weight gradient is
// masked before it is added.
#include "ops/masked_conv2d.h"

#include <algorithm>
#include <vector>

#include "ops/conv2d.h"

namespace pylenet {

Conv2dParams check_masked_conv2d(const Shape& x, const Shape& w, const Shape& mask,
                                 const float* mask_values, const std::optional<Shape>& b,
                                 int64_t stride, int64_t pad, const Shape* dy) {
    const char* op = "masked_conv2d";
    const Conv2dParams p = check_conv2d(x, w, b, stride, pad, dy);
    const Shape want = {p.K, p.C};
    if (mask != want)
        throw std::invalid_argument(std::string(op) + ": mask must have shape " + shape_str(want) +
                                    " (K, C), got " + shape_str(mask));
    if (mask_values)
        for (int64_t i = 0; i < p.K * p.C; i++)
            if (mask_values[i] != 0.0f && mask_values[i] != 1.0f)
                throw std::invalid_argument(std::string(op) + ": mask[" + std::to_string(i / p.C) +
                                            ", " + std::to_string(i % p.C) + "] = " +
                                            std::to_string(mask_values[i]) + " is neither 0 nor 1");
    return p;
}

void mask_weight(float* wm, const float* w, const float* mask, const Conv2dParams& p) {
    const int64_t RS = p.R * p.S;
    for (int64_t kc = 0; kc < p.K * p.C; kc++)
        for (int64_t i = 0; i < RS; i++) wm[kc * RS + i] = w[kc * RS + i] * mask[kc];
}

namespace {
int64_t padded(int64_t n) { return (n + 15) / 16 * 16; }  // keeps each part 64-byte aligned
// dw += mask * part, plane by plane (the products by 0 and 1 are exact).
void add_masked(float* dw, const float* part, const float* mask, const Conv2dParams& p) {
    const int64_t RS = p.R * p.S;
    for (int64_t kc = 0; kc < p.K * p.C; kc++)
        for (int64_t i = 0; i < RS; i++) dw[kc * RS + i] += mask[kc] * part[kc * RS + i];
}
}  // namespace

void masked_conv2d_forward(float* y, const float* x, const float* w, const float* mask,
                           const float* b, const Conv2dParams& p) {
    std::vector<float> wm(size_t(p.K * p.crs()));
    mask_weight(wm.data(), w, mask, p);
    conv2d_forward(y, x, wm.data(), b, p);
}

// conv2d_backward sums its blocks in order; masking that sum equals summing the masked
// blocks (the fused path), bit for bit, since each product is by exactly 0 or 1.
void masked_conv2d_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* mask, const float* dy, const Conv2dParams& p) {
    const int64_t KCRS = p.K * p.crs();
    std::vector<float> wm(static_cast<size_t>(KCRS)), part(static_cast<size_t>(KCRS));
    mask_weight(wm.data(), w, mask, p);
    conv2d_backward(dx, part.data(), db, x, wm.data(), dy, p);
    std::fill(dw, dw + KCRS, 0.0f);
    add_masked(dw, part.data(), mask, p);
}

int64_t masked_conv2d_workspace(const Conv2dParams& p, int64_t n) {
    return 2 * padded(p.K * p.crs()) + conv2d_workspace(p, n);
}

void masked_conv2d_forward_images(float* y, const float* x, const float* w, const float* mask,
                                  const float* b, int64_t n, const Conv2dParams& p, float* ws,
                                  bool relu) {
    float* wm = ws;
    mask_weight(wm, w, mask, p);
    conv2d_forward_images(y, x, wm, b, n, p, ws + 2 * padded(p.K * p.crs()), relu);
}

void masked_conv2d_backward_images(float* dx, float* dw, float* db, const float* x,
                                   const float* w, const float* mask, const float* dy, int64_t n,
                                   const Conv2dParams& p, float* ws) {
    const int64_t KCRS = p.K * p.crs();
    float* wm = ws;
    float* part = ws + padded(KCRS);
    mask_weight(wm, w, mask, p);
    std::fill(part, part + KCRS, 0.0f);
    conv2d_backward_images(dx, part, db, x, wm, dy, n, p, ws + 2 * padded(KCRS));
    add_masked(dw, part, mask, p);
}

}  // namespace pylenet
