// torch.optim's SGD and Adam rules for one element, written once for the CPU (ops/optim.cpp)
// and the GPU (cuda/element.h). Callers compile them without contracting a * b + c into a
// fused multiply-add where they promise numpy's float32 rounding (the CPU does).
#pragma once
#include <math.h>

#include "base/hd.h"

namespace pylenet {

// g' = g + wd p; buf = momentum buf + g' (g' itself when `first`); p -= lr (nesterov ?
// g' + momentum buf : buf). With momentum 0: p -= lr g' and buf is not touched.
PYLENET_HD inline void sgd_rule(float& p, float& buf, float g, float lr, float momentum,
                                float weight_decay, bool nesterov, bool first) {
    const float gi = g + weight_decay * p;
    if (momentum == 0.0f) {
        p -= lr * gi;
        return;
    }
    const float b = first ? gi : momentum * buf + gi;
    buf = b;
    p -= lr * (nesterov ? gi + momentum * b : b);
}

// Adam's step constants: step = lr / c1 and 1 / c2, from the bias corrections
// c1 = 1 - beta1^t, c2 = 1 - beta2^t of update t.
struct AdamStep {
    float step, inv_c2;
};
PYLENET_HD inline AdamStep adam_step(float lr, float c1, float c2) { return {lr / c1, 1.0f / c2}; }

// g' = g + wd p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// p -= step m / (sqrt(v / c2) + eps).
PYLENET_HD inline void adam_rule(float& p, float& m, float& v, float g, AdamStep s, float b1,
                                 float b2, float eps, float weight_decay) {
    const float gi = g + weight_decay * p;
    const float mi = b1 * m + (1.0f - b1) * gi;
    const float vi = b2 * v + (1.0f - b2) * gi * gi;
    m = mi;
    v = vi;
    p -= s.step * mi / (sqrtf(vi * s.inv_c2) + eps);
}

}  // namespace pylenet
