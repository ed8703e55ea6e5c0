// Training-time distortions of the digits (random affine maps and elastic fields), applied in
// the batch preparation pass: gather, distort, pad and normalise in one pass over the output.
#pragma once
#include <cstdint>

#include "base/checks.h"

namespace pylenet {

// The ranges the distortions of each image are drawn from (uniformly); all zero (sigma aside)
// is the identity. The affine map turns the digit about the centre of the output grid.
struct AugmentParams {
    double shift = 0;   // translation per axis, in [-shift, shift] pixels
    double rotate = 0;  // rotation, in [-rotate, rotate] degrees
    double scale = 0;   // isotropic scale factor, in [1 - scale, 1 + scale]
    double shear = 0;   // horizontal shear factor (x += shear * y), in [-shear, shear]
    double alpha = 0;   // elastic (Simard et al. 2003): displacement scale in pixels; 0 = none
    double sigma = 4;   // elastic: std of the Gaussian smoothing the displacement field, pixels
};

// Throws std::invalid_argument naming the first bad field: every field finite and >= 0,
// rotate <= 180, scale < 1, shear <= 1, alpha <= 1000, sigma in (0, 16].
void check_augment(const AugmentParams& p);

// out (n, 1, H+2*pad, W+2*pad): image idx[i] of images (count, H, W) uint8 (idx null: image i),
// distorted by a random affine map and/or elastic displacement field drawn from p with the
// random stream of (seed, epoch, idx[i]), resampled bilinearly through lut (256 floats), with
// lut[0] (the background) wherever the sample falls outside the image. Threads over images; the
// result depends on neither the thread count nor the other images of the batch.
// Elastic: each displacement component is uniform in [-1, 1] per output pixel, smoothed by a
// Gaussian of std sigma (truncated at 3 sigma, zero outside the grid), times alpha; for
// sigma >= 3 the smoothed field is computed on every other row and interpolated linearly.
void gather_augment(float* out, const uint8_t* images, const int64_t* idx, int64_t n, int64_t H,
                    int64_t W, int64_t pad, const float* lut, const AugmentParams& p,
                    uint64_t seed, uint64_t epoch);

// check_gather_pad_normalize's checks, seed >= 0, epoch >= 0 and check_augment(p).
void check_gather_augment(const Shape& images, int64_t pad, int64_t lut_size, const Shape* idx_shape,
                          const int64_t* idx, int64_t seed, int64_t epoch, const AugmentParams& p);

// out (n, 1, Hp, Wp), Hp = H+2*pad, Wp = W+2*pad: images (n, H, W) uint8 warped by the affine
// maps theta (n, 2, 3): output pixel (h, w) samples the padded image at
// (x, y) = theta[i] (w - cx, h - cy, 1) + (cx, cy), cx = (Wp-1)/2, cy = (Hp-1)/2, bilinearly,
// through lut, with lut[0] outside the image. The kernel gather_augment draws maps for.
void warp_affine(float* out, const uint8_t* images, int64_t n, int64_t H, int64_t W, int64_t pad,
                 const float* lut, const float* theta);

// Validates images (n, H, W), theta (n, 2, 3) with finite values, pad >= 0 and a lut of 256.
void check_warp_affine(const Shape& images, const Shape& theta, const float* theta_values,
                       int64_t pad, int64_t lut_size);

}  // namespace pylenet
