// Input preparation for the data pipeline: gather uint8 images, zero-pad, normalise.
#pragma once
#include <cstdint>

#include "base/checks.h"

namespace pylenet {

// out (n, 1, H+2*pad, W+2*pad) = lut[images[idx[i]]] with the padding set to lut[0]
// (the background). images (count, H, W) uint8; idx null means 0..n-1; lut has 256 floats.
// Indices must lie in [0, count) (check_gather_pad_normalize).
void gather_pad_normalize(float* out, const uint8_t* images, const int64_t* idx, int64_t n,
                          int64_t H, int64_t W, int64_t pad, const float* lut);

// Validates images (count, H, W), pad >= 0, a lut of 256 floats and, when idx is not null,
// idx (n,) with values in [0, count); messages start with `op` (the ops that share the checks).
void check_gather_pad_normalize(const Shape& images, int64_t pad, int64_t lut_size,
                                const Shape* idx_shape = nullptr, const int64_t* idx = nullptr,
                                const char* op = "gather_pad_normalize");

}  // namespace pylenet
