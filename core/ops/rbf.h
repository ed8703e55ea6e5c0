// The Euclidean RBF output layer of LeCun 1998: y[n,i] = sum_j (x[n,j] - c[i,j])^2, one unit
// per class, its centres c (O,I) fixed (the paper's +1/-1 code bitmaps, never trained). Each
// output is a penalty: the smaller, the likelier the class (class scores are -y).
#pragma once
#include "base/checks.h"
#include "base/params.h"

namespace pylenet {

// Validates x (N,I), centres (O,I) and dy (N,O) when given. Returns {N, I, O}.
LinearParams check_rbf(const Shape& x, const Shape& centres, const Shape* dy = nullptr);

// y (N,O) = squared distances of the rows of x (N,I) to the rows of c (O,I).
void rbf_forward(float* y, const float* x, const float* c, const LinearParams& p);
// Overwrites dx (N,I) = sum_i 2 dy[n,i] (x[n,j] - c[i,j]). The centres get no gradient.
void rbf_backward(float* dx, const float* x, const float* c, const float* dy, const LinearParams& p);

}  // namespace pylenet
