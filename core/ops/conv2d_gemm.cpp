// Stride-1 conv forward/backward without an im2col matrix. With the input zero-padded into a
// plane of Hp x Wp, output (p, q) reads input p*Wp + q + (r*Wp + s), so the GEMM kernels read
// the image in place through offsets: on the "wide" grid j = p*Wp + q (one shifted row per
// tap; columns q >= Q are computed and dropped) or, when K is a multiple of 16, on the exact
// grid with output channels across the vector lanes (gemm_rows_d gathering B by tap and position).
#include "ops/conv2d_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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

// Scratch for one image, shared by forward and backward. The base is rounded up to 64 bytes
// and each region starts on a 64-byte boundary, so whole rows of the wide grid load aligned.
struct Scratch {
    float *xp, *wide, *wtap, *dwT, *yT;  // padded x or dx; wide y/dy; w per tap; dw^T; y^T or dy^T
    int64_t *off, *offk, *offc, *offp;   // taps; rows of the wide dy; channel planes; positions
    int64_t total;                        // floats, with room for the alignment
};

Scratch carve(float* ws, const Conv2dParams& p) {
    const Wide g = wide_of(p);
    int64_t at = 0;
    if (ws) ws += (64 - reinterpret_cast<uintptr_t>(ws) % 64) % 64 / sizeof(float);
    auto take = [&](int64_t floats) {
        float* ptr = ws ? ws + at : nullptr;
        at += round16(floats);
        return ptr;
    };
    Scratch s;
    s.xp = take(p.C * g.Hp * g.Wp);
    s.wide = take(p.K * g.Jp);
    s.wtap = take(p.K * p.crs());
    s.dwT = take(p.K * p.crs());
    s.yT = take(p.K * p.out_h() * p.out_w());
    s.off = reinterpret_cast<int64_t*>(take(2 * p.crs()));
    s.offp = reinterpret_cast<int64_t*>(take(2 * p.out_h() * p.out_w()));
    s.offk = reinterpret_cast<int64_t*>(take(2 * p.K));
    s.offc = reinterpret_cast<int64_t*>(take(2 * p.C));
    s.total = at + 16;
    return s;
}

// Output position offsets offp[p*Q + q] = p*Wp + q: where each output's window starts.
void position_offsets(int64_t* offp, const Conv2dParams& p, const Wide& g) {
    for (int64_t oh = 0; oh < p.out_h(); oh++)
        for (int64_t q = 0; q < p.out_w(); q++) offp[oh * p.out_w() + q] = oh * g.Wp + q;
}

// Whether the exact-grid kernels apply: output channels fill whole 16-lane tiles.
inline bool exact_grid(const Conv2dParams& p) { return p.K % 16 == 0; }

}  // namespace

int64_t conv2d_gemm_workspace(const Conv2dParams& p) { return carve(nullptr, p).total; }

void conv2d_forward_gemm(float* y, const float* x, const float* w, const float* b,
                         int64_t n, const Conv2dParams& p, float* ws, bool relu) {
    const int64_t P = p.out_h(), Q = p.out_w(), PQ = P * Q, CRS = p.crs();
    const Wide g = wide_of(p);
    Scratch s = carve(ws, p);
    tap_offsets(s.off, p, g);
    // The exact grid pays a transpose of w per call: worth it from the level's
    // exact_conv_from images on. Both grids sum each output's taps in order from 0, then add b.
    const bool exact = exact_grid(p) && n >= simd_kernels().exact_conv_from;
    if (exact) {
        position_offsets(s.offp, p, g);
        transpose(s.wtap, p.K, w, CRS, p.K, CRS);  // w^T (CRS, K)
    }
    for (int64_t i = 0; i < n; i++) {
        const float* src = padded(s.xp, x + i * p.C * p.H * p.W, p);
        float* yi = y + i * p.K * PQ;
        if (exact) {  // y^T (PQ, K) = B (PQ, CRS) w^T, B[pq][t] = src[offp[pq] + off[t]]
            std::memset(s.yT, 0, sizeof(float) * PQ * p.K);
            gemm_rows_d(s.yT, p.K, s.wtap, p.K, PQ, p.K, src, s.offp, s.off, CRS);
        } else {  // y_wide (K, J) = w (K, CRS) * B, B[t][j] = src[off[t] + j]
            gemm_a_rows(s.wide, g.Jp, w, p.K, CRS, src, s.off, g.J, false);
        }
        if (exact) transpose(yi, PQ, s.yT, p.K, PQ, p.K);
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

bool conv2d_backward_gemm(float* dx, float* dw, float* db, const float* x, const float* w,
                          const float* dy, int64_t n, const Conv2dParams& p, float* ws) {
    const int64_t in_size = p.C * p.H * p.W;
    // The wide grid multiplies discarded columns (zero gradient) by x and by w: Inf or NaN
    // there would leak into results PyTorch keeps finite, so the caller uses im2col instead.
    if (!all_finite(x, n * in_size) || (dx && !all_finite(w, p.K * p.crs()))) return false;
    const int64_t P = p.out_h(), Q = p.out_w(), CRS = p.crs(), RS = p.R * p.S;
    const Wide g = wide_of(p);
    Scratch s = carve(ws, p);
    tap_offsets(s.off, p, g);
    if (dx) {  // per tap (r, s): the (C, K) block wtap[rs][c][k] = w[k][c][r][s]
        for (int64_t rs = 0; rs < RS; rs++)
            for (int64_t c = 0; c < p.C; c++)
                for (int64_t k = 0; k < p.K; k++) s.wtap[(rs * p.C + c) * p.K + k] = w[(k * p.C + c) * RS + rs];
        for (int64_t k = 0; k < p.K; k++) s.offk[k] = k * g.Jp;
    }
    const bool exact = exact_grid(p);
    if (exact) {
        position_offsets(s.offp, p, g);
        std::memset(s.dwT, 0, sizeof(float) * CRS * p.K);
    }
    if (dx || !exact) std::memset(s.wide, 0, sizeof(float) * p.K * g.Jp);  // dropped columns stay 0
    for (int64_t i = 0; i < n; i++) {
        const float* dyi = dy + i * p.K * P * Q;
        const float* src = padded(s.xp, x + i * in_size, p);
        if (dx || !exact)
            for (int64_t k = 0; k < p.K; k++)
                for (int64_t oh = 0; oh < P; oh++)
                    std::memcpy(s.wide + k * g.Jp + oh * g.Wp, dyi + (k * P + oh) * Q, sizeof(float) * Q);
        // dw[k][t] += sum_pq dy[k][pq] * x[off[t] + offp[pq]]   (y = w * B  =>  dw = dy B^T)
        if (exact) {
            // dw^T (CRS, K) += B^T (CRS, PQ) * dy^T (PQ, K): no horizontal sums.
            transpose(s.yT, p.K, dyi, P * Q, p.K, P * Q);
            gemm_rows_d(s.dwT, p.K, s.yT, p.K, CRS, p.K, src, s.off, s.offp, P * Q);
        } else {  // on the wide grid: dw (K, CRS) += dy_wide (K, J) * B^T
            gemm_a_rows_t(dw, s.wide, g.Jp, p.K, CRS, src, s.off, g.J);
        }
        if (db)
            for (int64_t k = 0; k < p.K; k++) db[k] += sum(dyi + k * P * Q, P * Q);
        if (!dx) continue;
        // dx = W^T dy, folded as it is computed: for each tap (r, s) and channel c, the row
        // dxp[c*Hp*Wp + r*Wp + s + j] += sum_k w[k][c][r][s] * dy_wide[k][j]. One call's rows
        // lie in different channel planes, so no tile writes an address twice.
        float* dxi = dx + i * in_size;
        float* acc = p.pad == 0 ? dxi : s.xp;  // without padding dx has the padded layout
        std::memset(acc, 0, sizeof(float) * p.C * g.Hp * g.Wp);
        for (int64_t rs = 0; rs < RS; rs++) {
            for (int64_t c = 0; c < p.C; c++) s.offc[c] = (c * g.Hp + rs / p.S) * g.Wp + rs % p.S;
            gemm_a_rows_scatter(acc, s.offc, s.wtap + rs * p.C * p.K, p.C, p.K, s.wide, s.offk, g.J);
        }
        if (p.pad > 0)  // the gradient of the padded input: crop the padding away
            for (int64_t c = 0; c < p.C; c++)
                for (int64_t h = 0; h < p.H; h++)
                    std::memcpy(dxi + (c * p.H + h) * p.W, s.xp + (c * g.Hp + h + p.pad) * g.Wp + p.pad,
                                sizeof(float) * p.W);
    }
    if (exact) {  // dw += (dw^T)^T, through a transposed copy where w's tap blocks were
        float* dwK = s.wtap;
        transpose(dwK, CRS, s.dwT, p.K, CRS, p.K);
        for (int64_t i = 0; i < p.K * CRS; i++) dw[i] += dwK[i];
    }
    return true;
}

}  // namespace pylenet
