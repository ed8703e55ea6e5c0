// Dropout (PyTorch's inverted dropout): in training each element is kept with probability
// 1 - p and scaled by 1 / (1 - p), else zeroed; evaluation passes x through. Which elements
// drop is a hash of (key, sample index, element index) (ops/noise.h), so the backward pass
// recomputes the mask instead of storing it, and any thread count gives the same bits.
#pragma once
#include <cstdint>

namespace pylenet {

// Validates the drop probability: p in [0, 1].
void check_dropout(const char* op, double p);
// The scale of kept elements: 1 / (1 - p), 0 for p = 1 (everything dropped).
float dropout_scale(double p);
// y (n, F) = x kept or zeroed, for samples first .. first + n - 1 under `key` (noise_key):
// element e of sample s is kept when keep_element(sample_key(key, s), e, threshold).
void dropout_forward(float* y, const float* x, int64_t n, int64_t F, double p, uint64_t key,
                     int64_t first);
// dx = dy masked and scaled as the forward with the same key and samples was.
void dropout_backward(float* dx, const float* dy, int64_t n, int64_t F, double p, uint64_t key,
                      int64_t first);

}  // namespace pylenet
