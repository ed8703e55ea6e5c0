// Optimiser updates: one pass over each parameter instead of numpy's several.
// Without FMA contraction, so that every step rounds exactly as the plain float32
// expression (and as the numpy reference in the tests) does.
#include "ops/optim.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "base/compile_as.h"

PYLENET_NO_FP_CONTRACT

namespace pylenet {

void check_update(const char* op, int64_t p_size, int64_t g_size) {
    if (g_size != p_size)
        throw std::invalid_argument(std::string(op) + ": g has " + std::to_string(g_size) +
                                    " elements but p has " + std::to_string(p_size) +
                                    "; they must be equal");
}

void sgd_update(float* p, float* buf, const float* g, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, bool first) {
    if (momentum == 0.0f) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) p[i] -= lr * (g[i] + weight_decay * p[i]);
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i] + weight_decay * p[i];
        const float b = first ? gi : momentum * buf[i] + gi;
        buf[i] = b;
        p[i] -= lr * (nesterov ? gi + momentum * b : b);
    }
}

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, float lr, float b1,
                 float b2, float eps, float weight_decay, float c1, float c2) {
    const float step = lr / c1, inv_c2 = 1.0f / c2;
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i] + weight_decay * p[i];
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * mi / (std::sqrt(vi * inv_c2) + eps);
    }
}

}  // namespace pylenet
