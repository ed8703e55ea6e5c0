// Batch normalisation, forward and backward side by side (formulas in batchnorm.h).
#include "ops/batchnorm.h"

#include <cmath>
#include <string>
#include <vector>

#include "base/checks.h"
#include "base/parallel.h"
#include "base/reduce.h"
#include "ops/elementwise.h"

namespace pylenet {

BatchNormParams check_batchnorm(const char* op, const Shape& x, int64_t num_features, double eps,
                                double momentum, bool training) {
    if (x.size() != 2 && x.size() != 4)
        throw std::invalid_argument(std::string(op) + ": x must be (N, C) or (N, C, H, W), got " +
                                    shape_str(x));
    for (int64_t d : x) check_at_least(op, "every dimension of x", d, 0);
    check_equal(op, "x channels x.shape[1]", x[1], "num_features", num_features);
    if (!(eps > 0.0))
        throw std::invalid_argument(std::string(op) + ": eps must be > 0, got " + num_str(eps));
    if (!(momentum >= 0.0 && momentum <= 1.0))
        throw std::invalid_argument(std::string(op) + ": momentum must be in [0, 1], got " +
                                    num_str(momentum));
    BatchNormParams p;
    p.N = x[0];
    p.C = x[1];
    p.HW = x.size() == 4 ? x[2] * x[3] : 1;
    p.eps = eps;
    p.momentum = momentum;
    if (training && p.N * p.HW <= 1)
        throw std::invalid_argument(std::string(op) + ": training needs more than one value per "
                                    "channel, got input " + shape_str(x) +
                                    " (PyTorch's rule; use a batch of 2 or more, or eval mode)");
    return p;
}

// With HW = 1 (BatchNorm1d) each plane is one value: the loops below run across the
// channels, adding what sum / sum_sq_dev / sum_dev_dot of that one value return (the value,
// (x - m)^2 and (x - m) dy, each rounded to float once), so both forms give the same bits.
void batchnorm_sum(double* s, const float* x, int64_t n, const BatchNormParams& p) {
    if (p.HW == 1) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < p.C; c++) s[c] += double(x[i * p.C + c]);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < p.C; c++) s[c] += sum(x + (i * p.C + c) * p.HW, p.HW);
}

void batchnorm_sum_sq(double* s, const float* x, const float* mean, int64_t n,
                      const BatchNormParams& p) {
    if (p.HW == 1) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < p.C; c++) {
                const float d = x[i * p.C + c] - mean[c];
                const float sq = d * d;
                s[c] += double(sq);
            }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < p.C; c++) s[c] += sum_sq_dev(x + (i * p.C + c) * p.HW, p.HW, mean[c]);
}

void batchnorm_mean(float* mean, const double* s, const BatchNormParams& p) {
    const double M = double(p.N * p.HW);
    for (int64_t c = 0; c < p.C; c++) mean[c] = float(s[c] / M);
}

void batchnorm_invstd(float* invstd, float* running_mean, float* running_var, const float* mean,
                      const double* s, const BatchNormParams& p) {
    const int64_t M = p.N * p.HW;
    for (int64_t c = 0; c < p.C; c++) {
        const double var = s[c] / double(M);
        invstd[c] = float(1.0 / std::sqrt(var + p.eps));
        if (running_mean) {
            const float m = float(p.momentum);
            const float unbiased = float(M > 1 ? var * double(M) / double(M - 1) : var);
            running_mean[c] = (1.0f - m) * running_mean[c] + m * mean[c];
            running_var[c] = (1.0f - m) * running_var[c] + m * unbiased;
        }
    }
}

void batchnorm_affine(float* scale, float* shift, const float* mean, const float* invstd,
                      const float* gamma, const float* beta, int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        scale[c] = (gamma ? gamma[c] : 1.0f) * invstd[c];
        shift[c] = (beta ? beta[c] : 0.0f) - mean[c] * scale[c];
    }
}

void batchnorm_apply(float* y, const float* x, const float* scale, const float* shift, int64_t n,
                     const BatchNormParams& p, bool relu_after) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < p.C; c++) {
            const float a = scale[c], b = shift[c];
            const float* xc = x + (i * p.C + c) * p.HW;
            float* yc = y + (i * p.C + c) * p.HW;
            if (relu_after)
                for (int64_t j = 0; j < p.HW; j++) yc[j] = relu(xc[j] * a + b);
            else
                for (int64_t j = 0; j < p.HW; j++) yc[j] = xc[j] * a + b;
        }
}

void batchnorm_backward_sums(double* s, const float* x, const float* dy, const float* mean,
                             int64_t n, const BatchNormParams& p) {
    if (p.HW == 1) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < p.C; c++) {
                const int64_t at = i * p.C + c;
                const float dot = (x[at] - mean[c]) * dy[at];
                s[c] += double(dy[at]);
                s[p.C + c] += double(dot);
            }
        return;
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < p.C; c++) {
            const int64_t at = (i * p.C + c) * p.HW;
            s[c] += sum(dy + at, p.HW);
            s[p.C + c] += sum_dev_dot(x + at, dy + at, p.HW, mean[c]);
        }
}

void batchnorm_backward_apply(float* dx, const float* x, const float* dy, const float* mean,
                              const float* invstd, const float* gamma, const double* s,
                              int64_t n, const BatchNormParams& p) {
    const double M = double(p.N * p.HW);
    for (int64_t c = 0; c < p.C; c++) {
        const float is = invstd[c], m = mean[c];
        const float mean_dy = float(s[c] / M);
        const float k = float(s[p.C + c] / M) * is * is;  // dot / M * invstd^2
        const float g = (gamma ? gamma[c] : 1.0f) * is;
        for (int64_t i = 0; i < n; i++) {
            const int64_t at = (i * p.C + c) * p.HW;
            for (int64_t j = 0; j < p.HW; j++)
                dx[at + j] = (dy[at + j] - mean_dy - (x[at + j] - m) * k) * g;
        }
    }
}

void batchnorm_param_grads(float* dgamma, float* dbeta, const float* invstd, const double* s,
                           int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        if (dgamma) dgamma[c] = float(s[C + c]) * invstd[c];
        if (dbeta) dbeta[c] = float(s[c]);
    }
}

namespace {
// Per-block partial sums of `width` doubles for the N samples of p, added in block order
// (the fused network's split and order): body(s, first sample, count) fills one block's.
template <class Body>
std::vector<double> block_sums(const BatchNormParams& p, int64_t width, Body&& body) {
    const int64_t nb = batch_blocks(p.N);
    std::vector<double> parts(size_t(nb * width), 0.0), total(size_t(width), 0.0);
    parallel_for(nb, int(std::min<int64_t>(threads_for(p.N * p.C * p.HW), nb)), [&](int64_t b) {
        const int64_t n0 = block_begin(p.N, nb, b), n1 = block_begin(p.N, nb, b + 1);
        body(parts.data() + b * width, n0, n1 - n0);
    });
    for (int64_t b = 0; b < nb; b++)
        for (int64_t k = 0; k < width; k++) total[size_t(k)] += parts[size_t(b * width + k)];
    return total;
}
}  // namespace

void batchnorm_forward_train(float* y, float* mean, float* invstd, float* running_mean,
                             float* running_var, const float* x, const float* gamma,
                             const float* beta, const BatchNormParams& p) {
    const int64_t sample = p.C * p.HW;
    std::vector<double> s = block_sums(p, p.C, [&](double* part, int64_t n0, int64_t n) {
        batchnorm_sum(part, x + n0 * sample, n, p);
    });
    batchnorm_mean(mean, s.data(), p);
    s = block_sums(p, p.C, [&](double* part, int64_t n0, int64_t n) {
        batchnorm_sum_sq(part, x + n0 * sample, mean, n, p);
    });
    batchnorm_invstd(invstd, running_mean, running_var, mean, s.data(), p);
    std::vector<float> scale(size_t(p.C)), shift(size_t(p.C));
    batchnorm_affine(scale.data(), shift.data(), mean, invstd, gamma, beta, p.C);
    batchnorm_apply(y, x, scale.data(), shift.data(), p.N, p, false);
}

void batchnorm_eval_affine(float* scale, float* shift, const float* running_mean,
                           const float* running_var, const float* gamma, const float* beta,
                           const BatchNormParams& p) {
    std::vector<float> invstd(size_t(p.C));
    for (int64_t c = 0; c < p.C; c++)
        invstd[size_t(c)] = float(1.0 / std::sqrt(double(running_var[c]) + p.eps));
    batchnorm_affine(scale, shift, running_mean, invstd.data(), gamma, beta, p.C);
}

void batchnorm_forward_eval(float* y, const float* x, const float* running_mean,
                            const float* running_var, const float* gamma, const float* beta,
                            const BatchNormParams& p) {
    std::vector<float> scale(size_t(p.C)), shift(size_t(p.C));
    batchnorm_eval_affine(scale.data(), shift.data(), running_mean, running_var, gamma, beta, p);
    batchnorm_apply(y, x, scale.data(), shift.data(), p.N, p, false);
}

void batchnorm_backward_train(float* dx, float* dgamma, float* dbeta, const float* x,
                              const float* dy, const float* mean, const float* invstd,
                              const float* gamma, const BatchNormParams& p) {
    const int64_t sample = p.C * p.HW;
    std::vector<double> s = block_sums(p, 2 * p.C, [&](double* part, int64_t n0, int64_t n) {
        batchnorm_backward_sums(part, x + n0 * sample, dy + n0 * sample, mean, n, p);
    });
    batchnorm_backward_apply(dx, x, dy, mean, invstd, gamma, s.data(), p.N, p);
    batchnorm_param_grads(dgamma, dbeta, invstd, s.data(), p.C);
}

}  // namespace pylenet
