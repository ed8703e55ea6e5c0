// The naive oracle of losses: direct loops, kept as the reference for tests and benchmarks.
#include "oracle/losses.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace pylenet {

void softmax_naive(float* p, const float* x, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        double mx = x[n * C];
        for (int64_t c = 1; c < C; c++) mx = std::max(mx, double(x[n * C + c]));
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += std::exp(double(x[n * C + c]) - mx);
        for (int64_t c = 0; c < C; c++) p[n * C + c] = float(std::exp(double(x[n * C + c]) - mx) / sum);
    }
}

// loss = mean_n [logsumexp(z_n) - z_n[label_n]]  =>  dz = (softmax(z) - onehot) / N.
double softmax_cross_entropy_naive(float* dlogits, const float* logits, const int64_t* labels,
                                   int64_t N, int64_t C, double smoothing) {
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float* z = logits + n * C;
        double mx = z[0];
        for (int64_t c = 1; c < C; c++) mx = std::max(mx, double(z[c]));
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += std::exp(double(z[c]) - mx);
        const double lse = mx + std::log(sum);
        for (int64_t c = 0; c < C; c++) {
            const double t = (1.0 - smoothing) * (c == labels[n] ? 1.0 : 0.0) + smoothing / double(C);
            loss -= t * (double(z[c]) - lse);
            dlogits[n * C + c] = float((std::exp(double(z[c]) - mx) / sum - t) / double(N));
        }
    }
    return loss / double(N);
}

// E = y_D + log(exp(-j) + sum_i exp(-y_i))  =>  dE/dy_i = [i = D] - exp(-y_i) / Z, Z the sum
// in the log; the mean over N rows divides both by N.
double rbf_map_loss_naive(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C) {
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float* yr = y + n * C;
        double m = -kRbfMapJ;
        for (int64_t c = 0; c < C; c++) m = std::max(m, -double(yr[c]));
        double z = std::exp(-kRbfMapJ - m);
        for (int64_t c = 0; c < C; c++) z += std::exp(-double(yr[c]) - m);
        loss += yr[labels[n]] + std::log(z) + m;
        for (int64_t c = 0; c < C; c++)
            dy[n * C + c] = float(((c == labels[n] ? 1.0 : 0.0) - std::exp(-double(yr[c]) - m) / z) / double(N));
    }
    return loss / double(N);
}

// loss = mean (pred - target)^2  =>  dpred = 2 (pred - target) / n.
double mse_loss_naive(float* dpred, const float* pred, const float* target, int64_t n) {
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = double(pred[i]) - target[i];
        loss += d * d;
        dpred[i] = float(2.0 * d / double(n));
    }
    return loss / double(n);
}

}  // namespace pylenet
