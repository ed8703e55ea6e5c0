// Softmax and the two losses. Sums run in double over a fixed order (deterministic).
#include "losses.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace pylenet {

void check_softmax(const Shape& x) {
    check_ndim("softmax", "x", x, 2, "(N, C)");
    check_at_least("softmax", "classes x.shape[1]", x[1], 1);
}

void check_softmax_cross_entropy(const Shape& logits, const Shape& labels_shape,
                                 const int64_t* labels) {
    const char* op = "softmax_cross_entropy";
    check_ndim(op, "logits", logits, 2, "(N, C)");
    check_ndim(op, "labels", labels_shape, 1, "(N,)");
    check_at_least(op, "batch size logits.shape[0]", logits[0], 1);
    check_at_least(op, "classes logits.shape[1]", logits[1], 1);
    check_equal(op, "labels length", labels_shape[0], "logits rows logits.shape[0]", logits[0]);
    if (labels) check_indices(op, "labels", labels, logits[0], logits[1],
                              " for logits of shape " + shape_str(logits));
}

void check_label_smoothing(const char* op, double smoothing) {
    if (!(smoothing >= 0.0 && smoothing <= 1.0))  // also refuses NaN
        throw std::invalid_argument(std::string(op) + ": label smoothing must be in [0, 1], got " +
                                    std::to_string(smoothing));
}

void check_mse_loss(const Shape& pred, const Shape& target) {
    check_same_shape("mse_loss", "pred", pred, "target", target);
    if (numel(pred) == 0)
        throw std::invalid_argument("mse_loss: pred is empty (shape " + shape_str(pred) + ")");
}

void check_rbf_map_loss(const Shape& y, const Shape& labels_shape, const int64_t* labels) {
    const char* op = "rbf_map_loss";
    check_ndim(op, "y", y, 2, "(N, C)");
    check_ndim(op, "labels", labels_shape, 1, "(N,)");
    check_at_least(op, "batch size y.shape[0]", y[0], 1);
    check_at_least(op, "classes y.shape[1]", y[1], 1);
    check_equal(op, "labels length", labels_shape[0], "y rows y.shape[0]", y[0]);
    if (labels) check_indices(op, "labels", labels, y[0], y[1], " for y of shape " + shape_str(y));
}

void softmax(float* p, const float* x, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * C;
        float* pr = p + n * C;
        float mx = xr[0];
        for (int64_t c = 1; c < C; c++) mx = (xr[c] > mx || xr[c] != xr[c]) ? xr[c] : mx;
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            pr[c] = std::exp(xr[c] - mx);
            sum += pr[c];
        }
        const float inv = float(1.0 / sum);
        for (int64_t c = 0; c < C; c++) pr[c] *= inv;
    }
}

double softmax_cross_entropy_sum(float* dlogits, const float* logits, const int64_t* labels,
                                 int64_t N, int64_t C, float scale, float smoothing) {
    softmax(dlogits, logits, N, C);
    // t = (1 - s) onehot + s/C: the label's target and every other class's.
    const float t_other = smoothing / float(C), t_label = 1.0f - smoothing + t_other;
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float* xr = logits + n * C;
        float mx = xr[0];
        for (int64_t c = 1; c < C; c++) mx = (xr[c] > mx || xr[c] != xr[c]) ? xr[c] : mx;
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += std::exp(double(xr[c]) - mx);
        // -sum_c t_c log p_c = logsumexp(x) - sum_c t_c x_c (the t_c sum to 1), computed
        // without forming p (no log of 0); s = 0 leaves logsumexp(x) - x_y exactly.
        double target_dot = xr[labels[n]];
        if (smoothing != 0.0f) {
            double row = 0.0;
            for (int64_t c = 0; c < C; c++) row += xr[c];
            target_dot = (1.0 - double(smoothing)) * xr[labels[n]] + double(smoothing) / double(C) * row;
        }
        loss += std::log(sum) + mx - target_dot;
        float* dr = dlogits + n * C;
        if (smoothing != 0.0f) {
            for (int64_t c = 0; c < C; c++) dr[c] -= t_other;
            dr[labels[n]] -= t_label - t_other;
        } else {
            dr[labels[n]] -= 1.0f;
        }
        for (int64_t c = 0; c < C; c++) dr[c] *= scale;
    }
    return loss;
}

double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t N, int64_t C, float smoothing) {
    return softmax_cross_entropy_sum(dlogits, logits, labels, N, C, 1.0f / float(N), smoothing) /
           double(N);
}

double rbf_map_sum(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C,
                   float scale) {
    const float neg_j = -float(kRbfMapJ);
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float* yr = y + n * C;
        float* dr = dy + n * C;
        float m = neg_j;  // the largest exponent among -j and -y_i (NaN wins)
        for (int64_t c = 0; c < C; c++) m = (-yr[c] > m || yr[c] != yr[c]) ? -yr[c] : m;
        double z = std::exp(double(neg_j) - m);
        for (int64_t c = 0; c < C; c++) z += std::exp(double(-yr[c]) - m);
        const double log_z = std::log(z) + m;
        loss += double(yr[labels[n]]) + log_z;
        for (int64_t c = 0; c < C; c++)
            dr[c] = scale * ((c == labels[n] ? 1.0f : 0.0f) - float(std::exp(double(-yr[c]) - log_z)));
    }
    return loss;
}

double rbf_map_loss(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C) {
    return rbf_map_sum(dy, y, labels, N, C, 1.0f / float(N)) / double(N);
}

double mse_onehot_sum(float* dout, const float* out, const int64_t* labels, int64_t N, int64_t C,
                      float scale) {
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            const float d = out[n * C + c] - (c == labels[n] ? 1.0f : 0.0f);
            loss += double(d) * d;
            dout[n * C + c] = scale * d;
        }
    return loss;
}

double mse_loss(float* dpred, const float* pred, const float* target, int64_t n) {
    double loss = 0.0;
    const float scale = 2.0f / float(n);
    for (int64_t i = 0; i < n; i++) {
        const float d = pred[i] - target[i];
        loss += double(d) * d;
        dpred[i] = scale * d;
    }
    return loss / double(n);
}

// ---------------------------------------------------------------------------------------
// Naive oracle: the definitions in double.

void softmax_naive(float* p, const float* x, int64_t N, int64_t C) {
    for (int64_t n = 0; n < N; n++) {
        double mx = x[n * C];
        for (int64_t c = 1; c < C; c++) mx = std::max(mx, double(x[n * C + c]));
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++) sum += std::exp(double(x[n * C + c]) - mx);
        for (int64_t c = 0; c < C; c++) p[n * C + c] = float(std::exp(double(x[n * C + c]) - mx) / sum);
    }
}

// t_c = (1 - s) [c = label] + s / C; loss = mean_n [-sum_c t_c log softmax(z_n)_c]
//   =>  dz = (softmax(z) - t) / N.
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
