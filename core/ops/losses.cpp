// Softmax and the two losses. Sums run in double over a fixed order (deterministic).
#include "ops/losses.h"

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
                                    num_str(smoothing));
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
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++)
        loss += cross_entropy_row(dlogits + n * C, logits + n * C, labels[n], C, scale, smoothing);
    return loss;
}

double softmax_cross_entropy(float* dlogits, const float* logits, const int64_t* labels,
                             int64_t N, int64_t C, float smoothing) {
    return softmax_cross_entropy_sum(dlogits, logits, labels, N, C, 1.0f / float(N), smoothing) / double(N);
}

double rbf_map_sum(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C,
                   float scale) {
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) loss += rbf_map_row(dy + n * C, y + n * C, labels[n], C, scale);
    return loss;
}

double rbf_map_loss(float* dy, const float* y, const int64_t* labels, int64_t N, int64_t C) {
    return rbf_map_sum(dy, y, labels, N, C, 1.0f / float(N)) / double(N);
}

double mse_onehot_sum(float* dout, const float* out, const int64_t* labels, int64_t N, int64_t C,
                      float scale) {
    double loss = 0.0;
    for (int64_t n = 0; n < N; n++) loss += mse_row(dout + n * C, out + n * C, labels[n], C, scale);
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

}  // namespace pylenet
