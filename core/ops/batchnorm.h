// Batch normalisation with PyTorch's rules (BatchNorm2d over (N, C, H, W), BatchNorm1d over
// (N, C): HW = 1), forward and backward side by side.
//
// Training normalises by the statistics of the whole batch: the mean, then the biased
// variance about it (two passes), each summed per channel in blocks of samples and the blocks
// added in block order, so results do not depend on threads; the running statistics move by
// `momentum` towards the mean and the unbiased variance. Evaluation uses the running ones.
// The fused network (net.cpp) runs the per-block pieces below between its barriers; the
// whole-batch functions run the same pieces over batch_blocks(N) blocks, so both agree bit
// for bit.
#pragma once
#include <cstdint>

#include "base/checks.h"

namespace pylenet {

// C channels of HW values per sample; eps added to the variance; momentum of the running
// statistics (PyTorch's: new = (1 - momentum) old + momentum batch).
struct BatchNormParams {
    int64_t N = 0, C = 0, HW = 1;
    double eps = 1e-5, momentum = 0.1;
};

// Validates x (N, C) or (N, C, H, W) against num_features C, eps > 0 and momentum in [0, 1];
// training needs more than one value per channel (N * HW > 1). Returns the params.
BatchNormParams check_batchnorm(const char* op, const Shape& x, int64_t num_features, double eps,
                                double momentum, bool training);

// ---- per-block pieces (n samples; `s` holds C doubles, ADDED to) ----
// s[c] += sum of channel c's values (pass 0: for the mean).
void batchnorm_sum(double* s, const float* x, int64_t n, const BatchNormParams& p);
// s[c] += sum of (x - mean[c])^2 (pass 1: for the biased variance).
void batchnorm_sum_sq(double* s, const float* x, const float* mean, int64_t n,
                      const BatchNormParams& p);
// mean[c] = s[c] / M, M = N * HW values per channel.
void batchnorm_mean(float* mean, const double* s, const BatchNormParams& p);
// invstd[c] = 1 / sqrt(var + eps) with var = s[c] / M; with running_mean/var (not null) also
// moves them by momentum (unbiased variance var * M / (M - 1)).
void batchnorm_invstd(float* invstd, float* running_mean, float* running_var, const float* mean,
                      const double* s, const BatchNormParams& p);
// scale[c] = gamma[c] invstd[c], shift[c] = beta[c] - mean[c] scale[c] (gamma 1, beta 0 when null).
void batchnorm_affine(float* scale, float* shift, const float* mean, const float* invstd,
                      const float* gamma, const float* beta, int64_t C);
// Evaluation's scale and shift: from the running statistics, invstd = 1 / sqrt(var + eps).
void batchnorm_eval_affine(float* scale, float* shift, const float* running_mean,
                           const float* running_var, const float* gamma, const float* beta,
                           const BatchNormParams& p);
// y = x scale[c] + shift[c] (then max(., 0) with relu) for n samples; y may be x.
void batchnorm_apply(float* y, const float* x, const float* scale, const float* shift, int64_t n,
                     const BatchNormParams& p, bool relu);
// s[c] += sum dy, s[C + c] += sum (x - mean[c]) dy (the backward's two sums; 2C doubles).
void batchnorm_backward_sums(double* s, const float* x, const float* dy, const float* mean,
                             int64_t n, const BatchNormParams& p);
// dx = (dy - sum_dy / M - (x - mean) invstd^2 dot / M) invstd gamma, from the batch's sums
// (2C doubles); dgamma = dot invstd and dbeta = sum_dy are batchnorm_param_grads's.
void batchnorm_backward_apply(float* dx, const float* x, const float* dy, const float* mean,
                              const float* invstd, const float* gamma, const double* s,
                              int64_t n, const BatchNormParams& p);
// dgamma[c] = dot[c] invstd[c], dbeta[c] = sum_dy[c] from the batch's sums (either may be null).
void batchnorm_param_grads(float* dgamma, float* dbeta, const float* invstd, const double* s,
                           int64_t C);

// ---- whole batches (the layer-by-layer path; blocks as in the fused network) ----
// Training: y (N, C, HW), the batch's mean and invstd (C each, kept for backward) and the
// running statistics moved (not null); gamma/beta may be null (affine=False).
void batchnorm_forward_train(float* y, float* mean, float* invstd, float* running_mean,
                             float* running_var, const float* x, const float* gamma,
                             const float* beta, const BatchNormParams& p);
// Evaluation: y = (x - running_mean) / sqrt(running_var + eps) gamma + beta.
void batchnorm_forward_eval(float* y, const float* x, const float* running_mean,
                            const float* running_var, const float* gamma, const float* beta,
                            const BatchNormParams& p);
// Overwrites dx (N, C, HW) and dgamma, dbeta (C; null when affine=False) of a training forward
// that kept mean and invstd.
void batchnorm_backward_train(float* dx, float* dgamma, float* dbeta, const float* x,
                              const float* dy, const float* mean, const float* invstd,
                              const float* gamma, const BatchNormParams& p);

}  // namespace pylenet
