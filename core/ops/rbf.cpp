// The RBF output layer, forward and backward side by side, and its naive oracle.
#include "ops/rbf.h"

#include <vector>

#include "base/parallel.h"

namespace pylenet {

LinearParams check_rbf(const Shape& x, const Shape& centres, const Shape* dy) {
    const char* op = "rbf";
    check_ndim(op, "x", x, 2, "(N, I)");
    check_ndim(op, "centres", centres, 2, "(O, I)");
    check_at_least(op, "centres rows centres.shape[0]", centres[0], 1);
    check_equal(op, "centres features centres.shape[1]", centres[1], "x features x.shape[1]", x[1]);
    check_output_size(op, double(x[0]) * centres[0]);
    if (dy && *dy != Shape{x[0], centres[0]})
        throw std::invalid_argument("rbf_backward: dy must have shape " +
                                    shape_str({x[0], centres[0]}) + " (N, O), got " + shape_str(*dy));
    return {x[0], x[1], centres[0]};
}

void rbf_forward(float* y, const float* x, const float* c, const LinearParams& p) {
    parallel_for(p.N, threads_for(p.N * p.O * p.I * 3), [&](int64_t n) {
        const float* xn = x + n * p.I;
        for (int64_t i = 0; i < p.O; i++) {
            const float* ci = c + i * p.I;
            float acc = 0.0f;
            for (int64_t j = 0; j < p.I; j++) {
                const float d = xn[j] - ci[j];
                acc += d * d;
            }
            y[n * p.O + i] = acc;
        }
    });
}

// Backward of y_i = sum_j (x_j - c_ij)^2: dx_j = sum_i 2 dy_i (x_j - c_ij).
void rbf_backward(float* dx, const float* x, const float* c, const float* dy, const LinearParams& p) {
    parallel_for(p.N, threads_for(p.N * p.O * p.I * 3), [&](int64_t n) {
        const float* xn = x + n * p.I;
        float* dxn = dx + n * p.I;
        for (int64_t j = 0; j < p.I; j++) dxn[j] = 0.0f;
        for (int64_t i = 0; i < p.O; i++) {
            const float g = 2.0f * dy[n * p.O + i];
            const float* ci = c + i * p.I;
            for (int64_t j = 0; j < p.I; j++) dxn[j] += g * (xn[j] - ci[j]);
        }
    });
}

}  // namespace pylenet
