// Output normalisation and losses: softmax, softmax cross-entropy, mean squared error, and
// LeCun 1998's MAP criterion for RBF penalties.
#pragma once
#include <cstdint>

#include "base/checks.h"
#include "ops/loss_rows.h"

namespace pylenet {

// Validates x (N,C) for softmax: 2-D with C >= 1.
void check_softmax(const Shape& x);
// Validates logits (N,C) with N >= 1, C >= 1 and labels (N,) with values in [0, C) (values
// only when `labels` is not null).
void check_softmax_cross_entropy(const Shape& logits, const Shape& labels_shape,
                                 const int64_t* labels = nullptr);
// Validates a label-smoothing amount: a finite number in [0, 1] (std::invalid_argument naming op).
void check_label_smoothing(const char* op, double smoothing);
// Validates pred and target: the same shape, not empty.
void check_mse_loss(const Shape& pred, const Shape& target);

// p (N,C) = softmax of each row of x (the row max is subtracted first); p may be x.
void softmax(float* p, const float* x, int64_t N, int64_t C);
// Cross-entropy against the label-smoothed target t = (1 - s) onehot(label) + s / C (s =
// `smoothing`, 0: the plain one-hot; torch's CrossEntropyLoss(label_smoothing=s)):
// returns mean_n [logsumexp(logits_n) - sum_c t_nc logits_nc] and overwrites
// dlogits (N,C) = (softmax(logits) - t) / N. Labels must be in [0, C).
double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t N, int64_t C, float smoothing = 0.0f);
// Building blocks for callers that split a batch: return the SUM of the n rows' losses and
// overwrite the gradient scaled by `scale` (1/N_total for the mean cross-entropy).
double softmax_cross_entropy_sum(float* dlogits, const float* logits, const int64_t* labels,
                                 int64_t N, int64_t C, float scale, float smoothing = 0.0f);
// Sum over the (N,C) block of (out - onehot(labels))^2; dout = scale * (out - onehot)
// (scale = 2 / (N_total * C) for the mean).
double mse_onehot_sum(float* dout, const float* out, const int64_t* labels, int64_t N, int64_t C,
                      float scale);
// Validates penalties y (N,C) with N >= 1, C >= 1 and labels (N,) in [0, C) (values unless null).
void check_rbf_map_loss(const Shape& y, const Shape& labels_shape, const int64_t* labels = nullptr);
// Per row, E = y[label] + log(exp(-j) + sum_i exp(-y_i)) (eq. 9, j = kRbfMapJ), computed with
// the largest exponent subtracted. Returns the SUM of the n rows' E and overwrites
// dy (n,C) = scale * (onehot(label) - exp(-y) / (exp(-j) + sum_i exp(-y_i))).
double rbf_map_sum(float* dy, const float* y, const int64_t* labels, int64_t n, int64_t C,
                   float scale);
// The mean of E over the N rows; dy as rbf_map_sum with scale 1/N.
double rbf_map_loss(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C);
// Returns mean((pred - target)^2) over n elements; overwrites dpred = 2 (pred - target) / n.
double mse_loss(float* dpred, const float* pred, const float* target, int64_t n);

}  // namespace pylenet
