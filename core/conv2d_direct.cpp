// Stride-1 conv forward/backward on the wide grid. With the input zero-padded into a plane
// of Hp x Wp, output (p, q) reads input p*Wp + q + (r*Wp + s): one shifted row per tap t.
#include "conv2d_direct.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "igemm.h"

namespace pylenet {

namespace {

constexpr int64_t kSlack = 64;  // readable zeros after each padded buffer (tile overrun)

inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

struct Wide {
    int64_t Hp, Wp, J, Jp;  // padded input plane; wide output columns (used, allocated)
};

inline Wide wide_of(int64_t H, int64_t W, int64_t pad, int64_t P, int64_t Q) {
    Wide g;
    g.Hp = H + 2 * pad, g.Wp = W + 2 * pad;
    g.J = (P - 1) * g.Wp + Q;
    g.Jp = round16(g.J);
    return g;
}

// Copies x (C,H,W) into a zeroed (C,Hp,Wp) buffer with `pad` zeros around, plus slack.
void pad_into(float* xp, const float* x, int64_t C, int64_t H, int64_t W, int64_t pad) {
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    std::memset(xp, 0, sizeof(float) * (C * Hp * Wp + kSlack));
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            std::memcpy(xp + (c * Hp + h + pad) * Wp + pad, x + (c * H + h) * W, sizeof(float) * W);
}

// Tap offsets off[(c*R + r)*S + s] = c*Hp*Wp + r*Wp + s into a padded (C,Hp,Wp) buffer.
void tap_offsets(int64_t* off, int64_t C, int64_t R, int64_t S, int64_t Hp, int64_t Wp) {
    for (int64_t c = 0; c < C; c++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t s = 0; s < S; s++) off[(c * R + r) * S + s] = c * Hp * Wp + r * Wp + s;
}

inline int64_t align16(int64_t n) { return (n + 15) / 16 * 16; }

// Scratch layout for one image, shared by forward and backward: each region starts on a
// 64-byte boundary (and the int64 offsets stay aligned).
struct Scratch {
    float *xp, *wide, *dcol, *wflip, *dwT, *dyT;  // padded x, wide y/dy, dcol, w^T, dw^T, dy^T
    int64_t* off;
    int64_t total;  // floats
};

Scratch carve(float* ws, const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    const Wide f = wide_of(p.H, p.W, p.pad, P, Q);
    const int64_t taps = std::max(p.crs(), p.K);
    int64_t at = 0;
    auto take = [&](int64_t floats) {
        float* ptr = ws ? ws + at : nullptr;
        at += align16(floats);
        return ptr;
    };
    Scratch s;
    s.xp = take(p.C * f.Hp * f.Wp + kSlack);
    s.wide = take(p.K * f.Jp);
    s.dcol = take(p.crs() * f.Jp);
    s.wflip = take(p.K * p.crs());
    s.dwT = take(p.K * p.crs());
    s.dyT = take(p.K * f.Jp);
    s.off = reinterpret_cast<int64_t*>(take(2 * taps));
    s.total = at;
    return s;
}

}  // namespace

int64_t conv2d_direct_workspace(const Conv2dParams& p) { return carve(nullptr, p).total; }

void conv2d_forward_direct(float* y, const float* x, const float* w, const float* b,
                           int64_t n, const Conv2dParams& p, float* ws) {
    const int64_t P = p.out_h(), Q = p.out_w();
    const Wide g = wide_of(p.H, p.W, p.pad, P, Q);
    Scratch s = carve(ws, p);
    tap_offsets(s.off, p.C, p.R, p.S, g.Hp, g.Wp);
    for (int64_t i = 0; i < n; i++) {
        pad_into(s.xp, x + i * p.C * p.H * p.W, p.C, p.H, p.W, p.pad);
        igemm_nn(s.wide, g.Jp, w, p.K, p.crs(), s.xp, s.off, g.Jp, false);
        float* yi = y + i * p.K * P * Q;
        for (int64_t k = 0; k < p.K; k++) {
            const float bk = b ? b[k] : 0.0f;
            for (int64_t oh = 0; oh < P; oh++) {
                const float* src = s.wide + k * g.Jp + oh * g.Wp;
                float* dst = yi + (k * P + oh) * Q;
                for (int64_t q = 0; q < Q; q++) dst[q] = src[q] + bk;
            }
        }
    }
}

namespace {
// True when every value is finite: x - x is 0 for numbers and NaN for Inf/NaN.
bool all_finite(const float* x, int64_t n) {
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; i++) acc += x[i] - x[i];
    return acc == 0.0f;
}
}  // namespace

bool conv2d_backward_direct(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* dy, int64_t n, const Conv2dParams& p, float* ws) {
    const int64_t in_size = p.C * p.H * p.W;
    if (!all_finite(x, n * in_size)) return false;
    const int64_t P = p.out_h(), Q = p.out_w(), CRS = p.crs();
    const Wide g = wide_of(p.H, p.W, p.pad, P, Q);
    Scratch s = carve(ws, p);
    if (dx)  // w^T (CRS, K) once for all images
        for (int64_t t = 0; t < CRS; t++)
            for (int64_t k = 0; k < p.K; k++) s.wflip[t * p.K + k] = w[k * CRS + t];
    std::memset(s.wide, 0, sizeof(float) * p.K * g.Jp);  // the discarded columns stay 0
    if (p.K % 16 == 0) {
        std::memset(s.dwT, 0, sizeof(float) * CRS * p.K);
        std::memset(s.dyT, 0, sizeof(float) * g.J * p.K);  // dy^T on the wide grid
    }
    for (int64_t i = 0; i < n; i++) {
        const float* dyi = dy + i * p.K * P * Q;
        // dw[k][t] += sum_j dy_wide[k][j] * xp[off[t] + j]   (y = w * B  =>  dw = dy B^T)
        pad_into(s.xp, x + i * in_size, p.C, p.H, p.W, p.pad);
        tap_offsets(s.off, p.C, p.R, p.S, g.Hp, g.Wp);
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t oh = 0; oh < P; oh++)
                std::memcpy(s.wide + k * g.Jp + oh * g.Wp, dyi + (k * P + oh) * Q, sizeof(float) * Q);
        if (p.K % 16 == 0) {
            // dw^T (CRS, K) += xp rows (CRS, J) * dy_wide^T (J, K): no horizontal sums.
            for (int64_t k = 0; k < p.K; k++)  // valid columns only; the rest stay 0
                for (int64_t oh = 0; oh < P; oh++)
                    for (int64_t q = 0; q < Q; q++)
                        s.dyT[(oh * g.Wp + q) * p.K + k] = dyi[(k * P + oh) * Q + q];
            igemm_tn(s.dwT, p.K, s.dyT, p.K, CRS, p.K, s.xp, s.off, g.J);
        } else {
            igemm_nt(dw, s.wide, g.Jp, p.K, CRS, s.xp, s.off, g.Jp);
        }
        if (db)
            for (int64_t k = 0; k < p.K; k++) {
                const float* row = dyi + k * P * Q;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < P * Q; j++) acc += row[j];
                db[k] += acc;
            }
        if (!dx) continue;
        // dx = W^T dy, computed as dcol (CRS, Jp) = w^T (CRS, K) * dy_wide (K, Jp) and folded
        // back: xp[off[t] + j] += dcol[t][j] over the valid columns only (q < Q), exactly the
        // pairs the forward used, so NaN/Inf weights spread exactly as in PyTorch.
        for (int64_t k = 0; k < p.K; k++) s.off[k] = k * g.Jp;
        igemm_nn(s.dcol, g.Jp, s.wflip, CRS, p.K, s.wide, s.off, g.Jp, false);
        tap_offsets(s.off, p.C, p.R, p.S, g.Hp, g.Wp);
        std::memset(s.xp, 0, sizeof(float) * p.C * g.Hp * g.Wp);
        for (int64_t t = 0; t < CRS; t++) {
            const float* src = s.dcol + t * g.Jp;
            float* dst = s.xp + s.off[t];
            for (int64_t oh = 0; oh < P; oh++)
#pragma omp simd
                for (int64_t q = 0; q < Q; q++) dst[oh * g.Wp + q] += src[oh * g.Wp + q];
        }
        // The result is the gradient of the padded input; crop the padding away.
        float* dxi = dx + i * in_size;
        for (int64_t c = 0; c < p.C; c++)
            for (int64_t h = 0; h < p.H; h++)
                std::memcpy(dxi + (c * p.H + h) * p.W, s.xp + (c * g.Hp + h + p.pad) * g.Wp + p.pad,
                            sizeof(float) * p.W);
    }
    if (p.K % 16 == 0)
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t t = 0; t < CRS; t++) dw[k * CRS + t] += s.dwT[t * p.K + k];
    return true;
}

}  // namespace pylenet
