// Dropout, forward and backward side by side: the same mask, recomputed from the hash.
#include "ops/dropout.h"

#include <stdexcept>
#include <string>

#include "base/checks.h"
#include "base/parallel.h"
#include "ops/noise.h"

namespace pylenet {

void check_dropout(const char* op, double p) {
    if (!(p >= 0.0 && p <= 1.0))
        throw std::invalid_argument(std::string(op) + ": p must be in [0, 1], got " + num_str(p));
}

float dropout_scale(double p) { return p >= 1.0 ? 0.0f : float(1.0 / (1.0 - p)); }

namespace {
// out = in masked and scaled, per sample (the mask is the same for x and dy).
void masked_scale(float* out, const float* in, int64_t n, int64_t F, double p, uint64_t key,
                  int64_t first) {
    const uint32_t threshold = drop_threshold(p);
    const float scale = dropout_scale(p);
    parallel_for(n, threads_for(n * F * 4), [&](int64_t i) {
        const uint32_t word = sample_key(key, uint64_t(first + i));
        const float* a = in + i * F;
        float* o = out + i * F;
        for (int64_t e = 0; e < F; e++)
            o[e] = a[e] * (keep_element(word, uint32_t(e), threshold) ? scale : 0.0f);  // NaN * 0 is NaN, as in PyTorch
    });
}
}  // namespace

void dropout_forward(float* y, const float* x, int64_t n, int64_t F, double p, uint64_t key,
                     int64_t first) {
    masked_scale(y, x, n, F, p, key, first);
}

void dropout_backward(float* dx, const float* dy, int64_t n, int64_t F, double p, uint64_t key,
                      int64_t first) {
    masked_scale(dx, dy, n, F, p, key, first);
}

}  // namespace pylenet
