// Random affine and elastic distortions: the per-image random streams, the Gaussian-smoothed
// displacement field, and the one bilinear resampler that gather_augment and warp_affine share.
#include "augment.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "parallel.h"
#include "preprocess.h"

namespace pylenet {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr double kPi = 3.14159265358979323846;
constexpr float kMaxTheta = 1e6f;  // keeps every sample coordinate finite (no inf - inf)

// SplitMix64's output function: a bijective mix of 64 bits.
inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The random stream of one image: SplitMix64 started from a hash of (seed, epoch, sample), so
// an image's draws depend on nothing else: not the thread that runs it, not its batch.
struct ImageRng {
    uint64_t state;
    ImageRng(uint64_t seed, uint64_t epoch, uint64_t sample)
        : state(mix64((mix64(mix64(seed + kGolden) ^ epoch) + kGolden) ^ sample)) {}
    uint64_t next() { return mix64(state += kGolden); }
    // Uniform in [-1, 1), 53 random bits.
    double symmetric() { return double(next() >> 11) * 0x1.0p-52 - 1.0; }
};

// theta (2x3, row-major) of one random affine map. The digit is sheared (x += k y), scaled by
// s, rotated by `angle` and shifted by t: F = R S K. theta is the inverse map (output pixel
// to source), as warp_affine takes it: theta = [F^-1 | -F^-1 t]. Always five draws, in order.
void draw_affine(float* theta, const AugmentParams& p, ImageRng& rng) {
    const double angle = p.rotate * rng.symmetric() * (kPi / 180.0);
    const double s = 1.0 + p.scale * rng.symmetric();
    const double k = p.shear * rng.symmetric();
    const double tx = p.shift * rng.symmetric(), ty = p.shift * rng.symmetric();
    const double c = std::cos(angle), sn = std::sin(angle);
    // K^-1 R^-1 / s = [[c + k sn, sn - k c], [-sn, c]] / s
    const double a = (c + k * sn) / s, b = (sn - k * c) / s, d = -sn / s, e = c / s;
    theta[0] = float(a);
    theta[1] = float(b);
    theta[2] = float(-(a * tx + b * ty));
    theta[3] = float(d);
    theta[4] = float(e);
    theta[5] = float(-(d * tx + e * ty));
}

// The 2r+1 taps of a Gaussian of std sigma truncated at r, summing to `total`.
std::vector<float> gaussian_taps(double sigma, int64_t r, double total) {
    std::vector<double> g(size_t(2 * r + 1));
    double sum = 0;
    for (int64_t j = -r; j <= r; j++) sum += g[size_t(j + r)] = std::exp(-0.5 * double(j * j) / (sigma * sigma));
    std::vector<float> out(g.size());
    for (size_t j = 0; j < g.size(); j++) out[j] = float(g[j] * total / sum);
    return out;
}

// One thread's buffers, reused from image to image.
struct Workspace {
    std::vector<float> src, row, tmp, dx, dy;
};

Workspace& thread_workspace() {
    static thread_local Workspace ws;
    return ws;
}

// src ((H+4) x (W+4)) = lut[img] framed by 2 pixels of the background lut[0]: the resampler
// then needs no bounds checks (warp_one clamps coordinates into the frame).
void fill_source(float* src, const uint8_t* img, int64_t H, int64_t W, const float* lut) {
    const int64_t S = W + 4;
    std::fill(src, src + (H + 4) * S, lut[0]);
    for (int64_t h = 0; h < H; h++) {
        float* row = src + (h + 2) * S + 2;
        const uint8_t* in = img + h * W;
        for (int64_t w = 0; w < W; w++) row[w] = lut[in[w]];
    }
}

// field (Hp x Wp) = (gv (x) gh) * noise: noise uniform in [-1, 1) per pixel from the counter
// stream of `key`, zero outside the grid; the horizontal pass with taps gh, then the vertical
// with gv (alpha folded in). Both passes use the symmetry g[r-j] = g[r+j].
void elastic_component(float* field, Workspace& ws, int64_t Hp, int64_t Wp, const float* gh,
                       const float* gv, int64_t r, uint64_t key) {
    float* row = ws.row.data();  // one noise row, r zeros each side
    float* tmp = ws.tmp.data();  // (Hp + 2r) x Wp: the horizontal pass, r zero rows each side
    std::fill(row, row + Wp + 2 * r, 0.0f);
    std::fill(tmp, tmp + r * Wp, 0.0f);
    std::fill(tmp + (Hp + r) * Wp, tmp + (Hp + 2 * r) * Wp, 0.0f);
    uint64_t counter = key;
    for (int64_t h = 0; h < Hp; h++) {
        for (int64_t w = 0; w < Wp; w++) {
            const uint32_t bits = uint32_t(mix64(counter += kGolden) >> 40);  // 24 bits
            row[r + w] = float(int32_t(bits) - 0x800000) * 0x1.0p-23f;
        }
        float* t = tmp + (h + r) * Wp;
        const float* c = row + r;
#pragma omp simd
        for (int64_t w = 0; w < Wp; w++) t[w] = gh[r] * c[w];
        for (int64_t j = 1; j <= r; j++) {
            const float gj = gh[r + j];
#pragma omp simd
            for (int64_t w = 0; w < Wp; w++) t[w] += gj * (c[w - j] + c[w + j]);
        }
    }
    for (int64_t h = 0; h < Hp; h++) {
        float* f = field + h * Wp;
        const float* c = tmp + (h + r) * Wp;
#pragma omp simd
        for (int64_t w = 0; w < Wp; w++) f[w] = gv[r] * c[w];
        for (int64_t j = 1; j <= r; j++) {
            const float gj = gv[r + j];
            const float* up = c - j * Wp;
            const float* down = c + j * Wp;
#pragma omp simd
            for (int64_t w = 0; w < Wp; w++) f[w] += gj * (up[w] + down[w]);
        }
    }
}

// out (Hp x Wp): src (fill_source's framed image) sampled bilinearly at theta (w - cx, h - cy, 1)
// + (cx, cy) - pad, plus (dx, dy) at the pixel when they are not null. A coordinate is clamped
// into the frame first, where every value is the background. An identity theta with no
// displacement reproduces the image exactly (weights 1 and 0).
void warp_one(float* out, const float* src, int64_t H, int64_t W, int64_t Hp, int64_t Wp,
              int64_t pad, const float* th, const float* dx, const float* dy) {
    const int64_t S = W + 4;
    const float cx = 0.5f * float(Wp - 1), cy = 0.5f * float(Hp - 1);
    const float ox = th[2] + cx - float(pad), oy = th[5] + cy - float(pad);
    const float xmax = float(W), ymax = float(H);
    for (int64_t h = 0; h < Hp; h++) {
        const float v = float(h) - cy;
        for (int64_t w = 0; w < Wp; w++) {
            const float u = float(w) - cx;
            float x = th[0] * u + th[1] * v + ox;
            float y = th[3] * u + th[4] * v + oy;
            if (dx) {
                x += dx[h * Wp + w];
                y += dy[h * Wp + w];
            }
            x = std::min(std::max(x, -2.0f), xmax);
            y = std::min(std::max(y, -2.0f), ymax);
            const float x0 = std::floor(x), y0 = std::floor(y);
            const float fx = x - x0, fy = y - y0;
            const float* r0 = src + (int64_t(y0) + 2) * S + (int64_t(x0) + 2);
            const float* r1 = r0 + S;
            const float top = r0[0] + fx * (r0[1] - r0[0]);
            const float bottom = r1[0] + fx * (r1[1] - r1[0]);
            out[h * Wp + w] = top + fy * (bottom - top);
        }
    }
}

std::string num(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
}

// "augment: <name> must be in [lo, hi], got v" unless v is finite and within the range.
void check_in(const char* name, double v, double lo, double hi, bool lo_open, bool hi_open) {
    const bool ok = std::isfinite(v) && (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
    if (!ok)
        throw std::invalid_argument(std::string("augment: ") + name + " must be in " +
                                    (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) +
                                    (hi_open ? ")" : "]") + ", got " + num(v));
}

}  // namespace

void check_augment(const AugmentParams& p) {
    check_in("shift", p.shift, 0, 1000, false, false);
    check_in("rotate", p.rotate, 0, 180, false, false);
    check_in("scale", p.scale, 0, 1, false, true);
    check_in("shear", p.shear, 0, 1, false, false);
    check_in("alpha", p.alpha, 0, 1000, false, false);
    check_in("sigma", p.sigma, 0, 16, true, false);
}

void check_gather_augment(const Shape& images, int64_t pad, int64_t lut_size, const Shape* idx_shape,
                          const int64_t* idx, int64_t seed, int64_t epoch, const AugmentParams& p) {
    check_gather_pad_normalize(images, pad, lut_size, idx_shape, idx, "augment_batch");
    check_at_least("augment_batch", "seed", seed, 0);
    check_at_least("augment_batch", "epoch", epoch, 0);
    check_augment(p);
}

void gather_augment(float* out, const uint8_t* images, const int64_t* idx, int64_t n, int64_t H,
                    int64_t W, int64_t pad, const float* lut, const AugmentParams& p,
                    uint64_t seed, uint64_t epoch) {
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    const bool elastic = p.alpha > 0;
    const int64_t r = elastic ? int64_t(std::ceil(3.0 * p.sigma)) : 0;
    const std::vector<float> gh = elastic ? gaussian_taps(p.sigma, r, 1.0) : std::vector<float>();
    const std::vector<float> gv = elastic ? gaussian_taps(p.sigma, r, p.alpha) : std::vector<float>();
    const int64_t per_pixel = elastic ? 8 * (2 * r + 1) : 16;
    parallel_for(n, threads_for(n * Hp * Wp * per_pixel), [&](int64_t i) {
        Workspace& ws = thread_workspace();
        ws.src.resize(size_t((H + 4) * (W + 4)));
        ImageRng rng(seed, epoch, uint64_t(idx ? idx[i] : i));
        float theta[6];
        draw_affine(theta, p, rng);
        const uint64_t key_x = rng.next(), key_y = rng.next();
        fill_source(ws.src.data(), images + (idx ? idx[i] : i) * H * W, H, W, lut);
        const float *dx = nullptr, *dy = nullptr;
        if (elastic) {
            ws.row.resize(size_t(Wp + 2 * r));
            ws.tmp.resize(size_t((Hp + 2 * r) * Wp));
            ws.dx.resize(size_t(Hp * Wp));
            ws.dy.resize(size_t(Hp * Wp));
            elastic_component(ws.dx.data(), ws, Hp, Wp, gh.data(), gv.data(), r, key_x);
            elastic_component(ws.dy.data(), ws, Hp, Wp, gh.data(), gv.data(), r, key_y);
            dx = ws.dx.data();
            dy = ws.dy.data();
        }
        warp_one(out + i * Hp * Wp, ws.src.data(), H, W, Hp, Wp, pad, theta, dx, dy);
    });
}

void check_warp_affine(const Shape& images, const Shape& theta, const float* theta_values,
                       int64_t pad, int64_t lut_size) {
    const char* op = "warp_affine";
    check_gather_pad_normalize(images, pad, lut_size, nullptr, nullptr, op);
    check_ndim(op, "theta", theta, 3, "(N, 2, 3)");
    if (theta[1] != 2 || theta[2] != 3)
        throw std::invalid_argument(std::string(op) + ": theta must have shape (N, 2, 3), got " +
                                    shape_str(theta));
    check_equal(op, "theta.shape[0]", theta[0], "images.shape[0]", images[0]);
    for (int64_t i = 0; i < theta[0] * 6; i++)
        if (!(std::fabs(theta_values[i]) <= kMaxTheta))
            throw std::invalid_argument(std::string(op) + ": theta.flat[" + std::to_string(i) + "] = " +
                                        num(theta_values[i]) + " must be finite with |value| <= 1e6");
}

void warp_affine(float* out, const uint8_t* images, int64_t n, int64_t H, int64_t W, int64_t pad,
                 const float* lut, const float* theta) {
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    parallel_for(n, threads_for(n * Hp * Wp * 16), [&](int64_t i) {
        Workspace& ws = thread_workspace();
        ws.src.resize(size_t((H + 4) * (W + 4)));
        fill_source(ws.src.data(), images + i * H * W, H, W, lut);
        warp_one(out + i * Hp * Wp, ws.src.data(), H, W, Hp, Wp, pad, theta + 6 * i, nullptr, nullptr);
    });
}

}  // namespace pylenet
