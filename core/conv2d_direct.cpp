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
    float *xp, *wide, *dyp, *wflip;
    int64_t* off;
    int64_t total;  // floats
};

Scratch carve(float* ws, const Conv2dParams& p) {
    const int64_t P = p.out_h(), Q = p.out_w();
    const Wide f = wide_of(p.H, p.W, p.pad, P, Q);
    const int64_t Hd = P + 2 * (p.R - 1), Wd = Q + 2 * (p.S - 1);
    const int64_t back_Jp = round16((f.Hp - 1) * Wd + f.Wp);
    const int64_t taps = std::max(p.crs(), p.K * p.R * p.S);
    int64_t at = 0;
    auto take = [&](int64_t floats) {
        float* ptr = ws ? ws + at : nullptr;
        at += align16(floats);
        return ptr;
    };
    Scratch s;
    s.xp = take(p.C * f.Hp * f.Wp + kSlack);
    s.wide = take(std::max(p.K * f.Jp, p.C * back_Jp));
    s.dyp = take(p.K * Hd * Wd + kSlack);
    s.wflip = take(p.K * p.crs());
    s.off = reinterpret_cast<int64_t*>(take(2 * taps));
    s.total = at;
    return s;
}

}  // namespace

int64_t conv2d_direct_workspace(const Conv2dParams& p) { return carve(nullptr, p).total; }

void conv2d_forward_direct(float* y, const float* x, const float* w, const float* b,
                           const Conv2dParams& p, float* ws) {
    const int64_t P = p.out_h(), Q = p.out_w();
    const Wide g = wide_of(p.H, p.W, p.pad, P, Q);
    Scratch s = carve(ws, p);
    pad_into(s.xp, x, p.C, p.H, p.W, p.pad);
    tap_offsets(s.off, p.C, p.R, p.S, g.Hp, g.Wp);
    igemm_nn(s.wide, w, p.K, p.crs(), s.xp, s.off, g.Jp);
    for (int64_t k = 0; k < p.K; k++) {
        const float bk = b ? b[k] : 0.0f;
        for (int64_t oh = 0; oh < P; oh++) {
            const float* src = s.wide + k * g.Jp + oh * g.Wp;
            float* dst = y + (k * P + oh) * Q;
            for (int64_t q = 0; q < Q; q++) dst[q] = src[q] + bk;
        }
    }
}

bool conv2d_backward_direct(float* dx, float* dw, float* db, const float* x, const float* w,
                            const float* dy, const Conv2dParams& p, float* ws) {
    const int64_t n_in = p.C * p.H * p.W;
    for (int64_t i = 0; i < n_in; i++)
        if (!std::isfinite(x[i])) return false;
    const int64_t P = p.out_h(), Q = p.out_w();
    const Wide g = wide_of(p.H, p.W, p.pad, P, Q);
    Scratch s = carve(ws, p);
    // dw[k][t] += sum_j dy_wide[k][j] * xp[off[t] + j]   (y = w * B  =>  dw = dy B^T)
    pad_into(s.xp, x, p.C, p.H, p.W, p.pad);
    tap_offsets(s.off, p.C, p.R, p.S, g.Hp, g.Wp);
    std::memset(s.wide, 0, sizeof(float) * p.K * g.Jp);
    for (int64_t k = 0; k < p.K; k++)
        for (int64_t oh = 0; oh < P; oh++)
            std::memcpy(s.wide + k * g.Jp + oh * g.Wp, dy + (k * P + oh) * Q, sizeof(float) * Q);
    igemm_nt(dw, s.wide, p.K, p.crs(), s.xp, s.off, g.Jp);
    if (db)
        for (int64_t k = 0; k < p.K; k++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < P * Q; i++) acc += dy[k * P * Q + i];
            db[k] += acc;
        }
    if (!dx) return true;
    // dx = W^T dy: the "full" correlation of dy (zero-padded by R-1, S-1) with the flipped
    // kernel, i.e. a stride-1 forward conv from K to C channels with wflip[c][k][R-1-r][S-1-s].
    const int64_t Hd = P + 2 * (p.R - 1), Wd = Q + 2 * (p.S - 1);
    std::memset(s.dyp, 0, sizeof(float) * (p.K * Hd * Wd + kSlack));
    for (int64_t k = 0; k < p.K; k++)
        for (int64_t oh = 0; oh < P; oh++)
            std::memcpy(s.dyp + (k * Hd + oh + p.R - 1) * Wd + p.S - 1, dy + (k * P + oh) * Q,
                        sizeof(float) * Q);
    for (int64_t c = 0; c < p.C; c++)
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t r = 0; r < p.R; r++)
                for (int64_t q = 0; q < p.S; q++)
                    s.wflip[((c * p.K + k) * p.R + r) * p.S + q] =
                        w[((k * p.C + c) * p.R + (p.R - 1 - r)) * p.S + (p.S - 1 - q)];
    const int64_t Jb = (g.Hp - 1) * Wd + g.Wp, Jbp = round16(Jb);
    tap_offsets(s.off, p.K, p.R, p.S, Hd, Wd);
    igemm_nn(s.wide, s.wflip, p.C, p.K * p.R * p.S, s.dyp, s.off, Jbp);
    // The result is the gradient of the padded input; crop the padding away.
    for (int64_t c = 0; c < p.C; c++)
        for (int64_t h = 0; h < p.H; h++)
            std::memcpy(dx + (c * p.H + h) * p.W, s.wide + c * Jbp + (h + p.pad) * Wd + p.pad,
                        sizeof(float) * p.W);
    return true;
}

}  // namespace pylenet
