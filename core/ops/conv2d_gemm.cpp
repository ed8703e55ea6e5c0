// Stride-1 conv forward/backward without an im2col matrix. With the input zero-padded into a
// plane of Hp x Wp, output (p, q) reads input p*Wp + q + (r*Wp + s), so the GEMM kernels read
// the image in place through offsets: on the "wide" grid j = p*Wp + q (one shifted row per
// tap; columns q >= Q are computed and dropped) or, when K is a multiple of 16, on the exact
// grid with output channels across the vector lanes (gemm_rows_d gathering B by tap and
// position). On the exact grid, small maps batch several images into one GEMM (their
// positions one after another), and dx of a small map with 16k input channels is itself an
// exact-grid correlation of the padded dy with the flipped kernel.
#include "ops/conv2d_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "base/reduce.h"
#include "base/transpose.h"
#include "gemm/gemm.h"
#include "ops/activations.h"

namespace pylenet {

namespace {

struct Wide {
    int64_t Hp, Wp, J, Jp;  // padded input plane; wide output columns (used, row stride)
};

inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

inline Wide wide_of(const Conv2dParams& p) {
    Wide g;
    g.Hp = p.H + 2 * p.pad, g.Wp = p.W + 2 * p.pad;
    g.J = (p.out_h() - 1) * g.Wp + p.out_w();
    g.Jp = round16(g.J);
    return g;
}

// Copies x (C,H,W) into a zeroed (C,Hp,Wp) buffer with `pad` zeros around.
void pad_into(float* xp, const float* x, int64_t C, int64_t H, int64_t W, int64_t pad) {
    const int64_t Hp = H + 2 * pad, Wp = W + 2 * pad;
    std::memset(xp, 0, sizeof(float) * C * Hp * Wp);
    for (int64_t c = 0; c < C; c++)
        for (int64_t h = 0; h < H; h++)
            std::memcpy(xp + (c * Hp + h + pad) * Wp + pad, x + (c * H + h) * W, sizeof(float) * W);
}

// The image the kernels read: x itself when there is no padding, else its padded copy in xp.
const float* padded(float* xp, const float* x, const Conv2dParams& p) {
    if (p.pad == 0) return x;
    pad_into(xp, x, p.C, p.H, p.W, p.pad);
    return xp;
}

// Tap offsets off[(c*R + r)*S + s] = c*Hp*Wp + r*Wp + s into a padded (C,Hp,Wp) buffer.
void tap_offsets(int64_t* off, const Conv2dParams& p, const Wide& g) {
    for (int64_t c = 0; c < p.C; c++)
        for (int64_t r = 0; r < p.R; r++)
            for (int64_t s = 0; s < p.S; s++) off[(c * p.R + r) * p.S + s] = (c * g.Hp + r) * g.Wp + s;
}

// Whether the exact-grid kernels apply: output channels fill whole 16-lane tiles.
inline bool exact_grid(const Conv2dParams& p) { return p.K % 16 == 0; }
// Whether dx runs on the exact grid too: input channels fill whole 16-lane tiles, the
// padding is at most the kernel's reach (dx is a correlation of dy padded by R-1-pad), and the
// map is small, where the wide grid's per-tap calls are short (measured: 2x faster at 4x4,
// 1.3x at 7x7, slower from 14x14 on).
inline bool exact_dx(const Conv2dParams& p) {
    return p.stride == 1 && p.C % 16 == 0 && p.pad < p.R && p.pad < p.S && p.H * p.W <= 100;
}

// Images per exact-grid GEMM: small maps are batched so that each call has about
// kGroupPositions output positions (the tiles' rows, or the dot products' length). The
// kernels add each product in the same order however images are grouped, so the group size
// changes the speed only, never a bit.
constexpr int64_t kGroupPositions = 192;
inline int64_t group_of(const Conv2dParams& p, int64_t n) {
    const int64_t per = std::min(p.out_h() * p.out_w(), p.H * p.W);
    return std::max<int64_t>(1, std::min<int64_t>(n, (kGroupPositions + per - 1) / std::max<int64_t>(per, 1)));
}

// The padded dy of the exact-grid dx: (K, Hq, Wq) with R-1-pad rows and S-1-pad columns of
// zeros around, so dx[c][h][w] = sum_{k,r,s} w[k][c][r][s] dyq[k][h + R-1-r][w + S-1-s].
struct DyPad {
    int64_t top, left, Hq, Wq;
};
inline DyPad dy_pad_of(const Conv2dParams& p) {
    DyPad d;
    d.top = p.R - 1 - p.pad, d.left = p.S - 1 - p.pad;
    d.Hq = p.out_h() + 2 * d.top, d.Wq = p.out_w() + 2 * d.left;
    return d;
}

// Scratch for a call of up to n images, shared by forward and backward. The base is rounded
// up to 64 bytes and each region starts on a 64-byte boundary, so whole rows of the wide grid
// load aligned.
struct Scratch {
    float *xp;     // the group's padded images (g of C*Hp*Wp)
    float *acc;    // the wide-grid dx of one padded image
    float *wide;   // wide y / dy of one image (K, Jp)
    float *wtap;   // w^T (forward), w per tap (wide dx) or w as (KRS, C) (exact dx)
    float *dwT;    // dw^T (CRS, K)
    float *yT;     // the group's y^T or dy^T (g*PQ, K), or dx^T (g*HW, C)
    float *dyq;    // the group's padded dy (g of K*Hq*Wq) for the exact dx
    int64_t *off, *offp, *offk, *offc;  // taps; positions; rows of the wide dy; channel planes
    int64_t total;                       // floats, with room for the alignment
};

Scratch carve(float* ws, const Conv2dParams& p, int64_t n) {
    const Wide g = wide_of(p);
    const DyPad q = dy_pad_of(p);
    const int64_t G = group_of(p, n), PQ = p.out_h() * p.out_w(), HW = p.H * p.W;
    const int64_t taps = (p.C + p.K) * p.R * p.S;  // dw's taps, then the exact dx's
    int64_t at = 0;
    if (ws) ws += (64 - reinterpret_cast<uintptr_t>(ws) % 64) % 64 / sizeof(float);
    auto take = [&](int64_t floats) {
        float* ptr = ws ? ws + at : nullptr;
        at += round16(floats);
        return ptr;
    };
    Scratch s;
    s.xp = take(G * p.C * g.Hp * g.Wp);
    s.acc = take(p.C * g.Hp * g.Wp);
    s.wide = take(p.K * g.Jp);
    s.wtap = take(p.K * p.crs());
    s.dwT = take(p.K * p.crs());
    s.yT = take(G * std::max(PQ * p.K, HW * p.C));
    s.dyq = exact_dx(p) ? take(G * p.K * q.Hq * q.Wq) : nullptr;
    s.off = reinterpret_cast<int64_t*>(take(2 * taps));
    s.offp = reinterpret_cast<int64_t*>(take(2 * G * std::max(PQ, HW)));
    s.offk = reinterpret_cast<int64_t*>(take(2 * p.K));
    s.offc = reinterpret_cast<int64_t*>(take(2 * p.C));
    s.total = at + 16;
    return s;
}

// Output position offsets offp[i*P*Q + p*Q + q] = i*image + (p*Wp + q)*stride for the G images
// of a group, each `image` floats apart: where each output's window starts.
void position_offsets(int64_t* offp, int64_t G, int64_t image, int64_t P, int64_t Q, int64_t Wp,
                      int64_t stride = 1) {
    for (int64_t i = 0; i < G; i++)
        for (int64_t oh = 0; oh < P; oh++)
            for (int64_t q = 0; q < Q; q++) offp[(i * P + oh) * Q + q] = i * image + (oh * Wp + q) * stride;
}

// Copies dy (K, P, Q) into a zeroed (K, Hq, Wq) buffer at (top, left).
void pad_dy(float* dyq, const float* dy, const Conv2dParams& p, const DyPad& q) {
    const int64_t P = p.out_h(), Q = p.out_w();
    std::memset(dyq, 0, sizeof(float) * p.K * q.Hq * q.Wq);
    for (int64_t k = 0; k < p.K; k++)
        for (int64_t oh = 0; oh < P; oh++)
            std::memcpy(dyq + (k * q.Hq + oh + q.top) * q.Wq + q.left, dy + (k * P + oh) * Q, sizeof(float) * Q);
}

}  // namespace

int64_t conv2d_gemm_workspace(const Conv2dParams& p, int64_t n) { return carve(nullptr, p, n).total; }

void conv2d_forward_gemm(float* y, const float* x, const float* w, const float* b,
                         int64_t n, const Conv2dParams& p, float* ws, bool relu) {
    const int64_t P = p.out_h(), Q = p.out_w(), PQ = P * Q, CRS = p.crs(), in_size = p.C * p.H * p.W;
    const Wide g = wide_of(p);
    Scratch s = carve(ws, p, n);
    tap_offsets(s.off, p, g);
    // The exact grid pays a transpose of w per call (worth it from the level's exact_conv_from
    // images on) and of y per image (worth it for long sums, CRS >= 128, where the wide grid
    // drops more than 15% of its columns; measured on Zen 4). A strided conv has no wide grid.
    // Both grids sum each output's taps in order from 0, then add b: the choice changes no bit.
    const bool exact = exact_grid(p) && (p.stride > 1 || (n >= simd_kernels().exact_conv_from &&
                                                          CRS >= 128 && 100 * Q < 85 * g.Wp));
    const int64_t G = exact ? group_of(p, n) : 1, image = p.C * g.Hp * g.Wp;
    if (exact) transpose(s.wtap, p.K, w, CRS, p.K, CRS);  // w^T (CRS, K)
    for (int64_t i0 = 0; i0 < n; i0 += G) {
        const int64_t m = std::min(G, n - i0);
        if (exact) {  // y^T (m*PQ, K) = B (m*PQ, CRS) w^T, B[i,pq][t] = image i at offp[i,pq] + off[t]
            const float* src = x + i0 * in_size;  // unpadded images lie one after another already
            if (p.pad > 0) {
                for (int64_t i = 0; i < m; i++) pad_into(s.xp + i * image, x + (i0 + i) * in_size, p.C, p.H, p.W, p.pad);
                src = s.xp;
            }
            position_offsets(s.offp, m, image, P, Q, g.Wp, p.stride);  // image == in_size unpadded
            std::memset(s.yT, 0, sizeof(float) * m * PQ * p.K);
            gemm_rows_d(s.yT, p.K, s.wtap, p.K, m * PQ, p.K, src, s.offp, s.off, CRS);
            for (int64_t i = 0; i < m; i++) transpose(y + (i0 + i) * p.K * PQ, PQ, s.yT + i * PQ * p.K, p.K, PQ, p.K);
        } else {  // y_wide (K, J) = w (K, CRS) * B, B[t][j] = src[off[t] + j]
            gemm_a_rows(s.wide, g.Jp, w, p.K, CRS, padded(s.xp, x + i0 * in_size, p), s.off, g.J, false);
        }
        for (int64_t i = 0; i < m; i++) {
            float* yi = y + (i0 + i) * p.K * PQ;
            for (int64_t k = 0; k < p.K; k++) {
                const float bk = b ? b[k] : 0.0f;
                for (int64_t oh = 0; oh < P; oh++) {
                    float* to = yi + (k * P + oh) * Q;
                    const float* from = exact ? to : s.wide + k * g.Jp + oh * g.Wp;
                    if (relu)
                        for (int64_t q = 0; q < Q; q++) to[q] = pylenet::relu(from[q] + bk);
                    else
                        for (int64_t q = 0; q < Q; q++) to[q] = from[q] + bk;
                }
            }
        }
    }
}

bool conv2d_backward_gemm(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, int64_t n, const Conv2dParams& p, float* ws) {
    const int64_t in_size = p.C * p.H * p.W;
    // The wide grid multiplies discarded columns (zero gradient) by x and by w: Inf or NaN
    // there would leak into results PyTorch keeps finite, so the caller uses im2col instead.
    if (!all_finite(x, n * in_size) || (dx && !all_finite(w, p.K * p.crs()))) return false;
    if (p.stride > 1 && dx) throw std::logic_error("conv2d_backward_gemm: a strided dx is im2col's");
    const int64_t P = p.out_h(), Q = p.out_w(), PQ = P * Q, HW = p.H * p.W, CRS = p.crs(), RS = p.R * p.S;
    const Wide g = wide_of(p);
    const DyPad q = dy_pad_of(p);
    Scratch s = carve(ws, p, n);
    const bool exact_w = exact_grid(p);           // dw on the exact grid, else the wide one
    const bool exact_x = dx && exact_dx(p);       // dx on the exact grid
    const bool wide_x = dx && !exact_x;           // dx on the wide grid, scattered per tap
    const int64_t G = exact_w || exact_x ? group_of(p, n) : 1, image = p.C * g.Hp * g.Wp;
    int64_t* offx = s.off;  // the exact dx's taps follow dw's (CRS of them)
    tap_offsets(s.off, p, g);
    if (wide_x) {  // per tap (r, s): the (C, K) block wtap[rs][c][k] = w[k][c][r][s]
        for (int64_t rs = 0; rs < RS; rs++)
            for (int64_t c = 0; c < p.C; c++)
                for (int64_t k = 0; k < p.K; k++) s.wtap[(rs * p.C + c) * p.K + k] = w[(k * p.C + c) * RS + rs];
        for (int64_t k = 0; k < p.K; k++) s.offk[k] = k * g.Jp;
    }
    if (exact_x) {  // D (KRS, C): D[(k, r, s)][c] = w[k][c][r][s]; its taps read dyq flipped
        offx = s.off + CRS;
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t c = 0; c < p.C; c++)
                for (int64_t rs = 0; rs < RS; rs++) s.wtap[(k * RS + rs) * p.C + c] = w[(k * p.C + c) * RS + rs];
        for (int64_t k = 0; k < p.K; k++)
            for (int64_t r = 0; r < p.R; r++)
                for (int64_t c = 0; c < p.S; c++)
                    offx[(k * p.R + r) * p.S + c] = (k * q.Hq + p.R - 1 - r) * q.Wq + p.S - 1 - c;
    }
    if (exact_w) std::memset(s.dwT, 0, sizeof(float) * CRS * p.K);
    if (wide_x || !exact_w) std::memset(s.wide, 0, sizeof(float) * p.K * g.Jp);  // dropped columns stay 0
    for (int64_t i0 = 0; i0 < n; i0 += G) {
        const int64_t m = std::min(G, n - i0);
        const float* dy0 = dy + i0 * p.K * PQ;
        // The group's padded images, one after another (B's rows for dw): x itself unpadded.
        const float* xs = x + i0 * in_size;
        if (p.pad > 0) {
            for (int64_t i = 0; i < m; i++) pad_into(s.xp + i * image, x + (i0 + i) * in_size, p.C, p.H, p.W, p.pad);
            xs = s.xp;
        }
        if (exact_w) {
            // dw^T (CRS, K) += B^T (CRS, m*PQ) * dy^T (m*PQ, K): no horizontal sums; the
            // products are added image by image, position by position, whatever m is.
            for (int64_t i = 0; i < m; i++) transpose(s.yT + i * PQ * p.K, p.K, dy0 + i * p.K * PQ, PQ, p.K, PQ);
            position_offsets(s.offp, m, image, P, Q, g.Wp, p.stride);
            gemm_rows_d(s.dwT, p.K, s.yT, p.K, CRS, p.K, xs, s.off, s.offp, m * PQ);
        }
        if (db)
            for (int64_t i = 0; i < m; i++)
                for (int64_t k = 0; k < p.K; k++) db[k] += sum(dy0 + (i * p.K + k) * PQ, PQ);
        if (exact_x) {  // dx^T (m*HW, C) = B' (m*HW, KRS) * D, B' reading the padded dy
            const int64_t dimage = p.K * q.Hq * q.Wq;
            for (int64_t i = 0; i < m; i++) pad_dy(s.dyq + i * dimage, dy0 + i * p.K * PQ, p, q);
            position_offsets(s.offp, m, dimage, p.H, p.W, q.Wq);
            std::memset(s.yT, 0, sizeof(float) * m * HW * p.C);
            gemm_rows_d(s.yT, p.C, s.wtap, p.C, m * HW, p.C, s.dyq, s.offp, offx, p.K * RS);
            for (int64_t i = 0; i < m; i++) transpose(dx + (i0 + i) * in_size, HW, s.yT + i * HW * p.C, p.C, HW, p.C);
        }
        if (!wide_x && exact_w) continue;
        for (int64_t i = 0; i < m; i++) {
            const float* dyi = dy0 + i * p.K * PQ;
            for (int64_t k = 0; k < p.K; k++)
                for (int64_t oh = 0; oh < P; oh++)
                    std::memcpy(s.wide + k * g.Jp + oh * g.Wp, dyi + (k * P + oh) * Q, sizeof(float) * Q);
            // dw[k][t] += sum_pq dy[k][pq] * x[off[t] + offp[pq]]   (y = w * B  =>  dw = dy B^T)
            if (!exact_w) gemm_a_rows_t(dw, s.wide, g.Jp, p.K, CRS, xs + i * image, s.off, g.J);
            if (!wide_x) continue;
            // dx = W^T dy, folded as it is computed: for each tap (r, s) and channel c, the row
            // dxp[c*Hp*Wp + r*Wp + s + j] += sum_k w[k][c][r][s] * dy_wide[k][j]. One call's rows
            // lie in different channel planes, so no tile writes an address twice.
            float* dxi = dx + (i0 + i) * in_size;
            float* acc = p.pad == 0 ? dxi : s.acc;  // without padding dx has the padded layout
            std::memset(acc, 0, sizeof(float) * p.C * g.Hp * g.Wp);
            for (int64_t rs = 0; rs < RS; rs++) {
                for (int64_t c = 0; c < p.C; c++) s.offc[c] = (c * g.Hp + rs / p.S) * g.Wp + rs % p.S;
                gemm_a_rows_scatter(acc, s.offc, s.wtap + rs * p.C * p.K, p.C, p.K, s.wide, s.offk, g.J);
            }
            if (p.pad > 0)  // the gradient of the padded input: crop the padding away
                for (int64_t c = 0; c < p.C; c++)
                    for (int64_t h = 0; h < p.H; h++)
                        std::memcpy(dxi + (c * p.H + h) * p.W, s.acc + (c * g.Hp + h + p.pad) * g.Wp + p.pad,
                                    sizeof(float) * p.W);
        }
    }
    if (exact_w) {  // dw += (dw^T)^T, through a transposed copy
        float* dwK = s.wtap;  // free by now
        transpose(dwK, CRS, s.dwT, p.K, CRS, p.K);
        for (int64_t i = 0; i < p.K * CRS; i++) dw[i] += dwK[i];
    }
    return true;
}

}  // namespace pylenet
