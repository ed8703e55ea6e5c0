// The naive oracle of losses.h: direct loops (sums in double where they reduce) that the C++
// tests and the benchmarks check the fast kernels against. Not part of the extension.
#pragma once
#include <cstdint>

#include "ops/losses.h"

namespace pylenet {

// softmax, softmax_cross_entropy, rbf_map_loss and mse_loss in double, from the definitions.
void softmax_naive(float* p, const float* x, int64_t N, int64_t C);
// t_c = (1 - s) [c = label] + s / C (s = smoothing); loss = mean_n [-sum_c t_c log softmax(z_n)_c].
double softmax_cross_entropy_naive(float* dlogits, const float* logits, const int64_t* labels,
                                   int64_t N, int64_t C, double smoothing = 0.0);
double rbf_map_loss_naive(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C);
double mse_loss_naive(float* dpred, const float* pred, const float* target, int64_t n);

}  // namespace pylenet
