// Matrix transposition for the kernels' layout changes (y^T -> y, dy -> dy^T, dw^T -> dw).
#pragma once
#include <cstdint>

namespace pylenet {

// dst (cols, rows; row stride ld_dst) = src (rows, cols; row stride ld_src)^T.
void transpose(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t rows,
               int64_t cols);

}  // namespace pylenet
