// Optimiser updates: one pass over each parameter instead of numpy's several.
// Without FMA contraction, so that every step rounds exactly as the plain float32
// expression (and as the numpy reference in the tests) does.
#include "ops/optim.h"

#include <stdexcept>
#include <string>

#include "base/compile_as.h"

PYLENET_NO_FP_CONTRACT

#include "ops/optim_rules.h"  // after the pragma: the rules inline without contraction

namespace pylenet {

void check_update(const char* op, int64_t p_size, int64_t g_size) {
    if (g_size != p_size)
        throw std::invalid_argument(std::string(op) + ": g has " + std::to_string(g_size) +
                                    " elements but p has " + std::to_string(p_size) +
                                    "; they must be equal");
}

void sgd_update(float* p, float* buf, const float* g, int64_t n, float lr, float momentum,
                float weight_decay, bool nesterov, bool first) {
    if (momentum == 0.0f) {  // the rule does not touch buf then: p stands in for it
#pragma omp simd
        for (int64_t i = 0; i < n; i++) sgd_rule(p[i], p[i], g[i], lr, 0.0f, weight_decay, nesterov, first);
        return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) sgd_rule(p[i], buf[i], g[i], lr, momentum, weight_decay, nesterov, first);
}

void adam_update(float* p, float* m, float* v, const float* g, int64_t n, float lr, float b1,
                 float b2, float eps, float weight_decay, float c1, float c2) {
    const AdamStep s = adam_step(lr, c1, c2);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) adam_rule(p[i], m[i], v[i], g[i], s, b1, b2, eps, weight_decay);
}

}  // namespace pylenet
