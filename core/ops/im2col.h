// Unfolding one image into the im2col matrix and folding gradients back (col2im).
#pragma once
#include "base/params.h"

namespace pylenet {

// col (C*R*S, P*Q): col[(c*R+r)*S+s][p*Q+q] = x[c][p*stride-pad+r][q*stride-pad+s], 0 outside.
// x is one image (C,H,W).
void im2col(float* col, const float* x, const Conv2dParams& p);
// Overwrites dx (C,H,W) with the sum of every col entry that im2col copied from each pixel.
void col2im(float* dx, const float* col, const Conv2dParams& p);

}  // namespace pylenet
