// The GEMM micro-kernels, written once over a vector type and its register tiles. Each
// product reads one operand as "rows": row t of it is src + off[t] (implicit GEMM: a
// convolution reads its image in place this way). a_rows: C = A * Rows; a_rows_t:
// C += A * Rows^T (dot products); rows_d: C += Rows * D (Rows broadcast against D's rows).
// Each core/gemm/gemm_<level>.cpp includes this after its target pragma, with a traits struct V:
//   R, W                 the register type and the floats it holds
//   zero(), set1(x), load(p), store(p, r)
//   load_part(p, n), store_part(p, r, n)    0 < n < W; nothing touched past p + n
//   fma(acc, a, b)       acc + a * b
//   reduce(r)            r[0..W) -> a register whose lane i is the lane sum of r[i], in a
//                        fixed tree order
// and its tiles (accumulators must fit the register file with the loads beside them):
//   AR_MR x AR_NV        gemm_a_rows: rows x vectors of columns
//   ART_MR x ART_TN      gemm_a_rows_t: rows x taps, then ART2_MR x ART2_TN and 1 x ART1_TN for
//                        the rows left over; MV_MR x 1 when T < ART_TN (matrix-vector products)
//   RD_MR, RD_MR2        gemm_rows_d: rows per tile (16 columns each), main and leftover
//   EXACT_CONV_FROM      images per call from which conv forward uses the exact grid (the
//                        w^T it needs costs more than the wide grid's waste below that)
// Every C element is computed by the same operations in the same order whatever tile covers
// it, so results never depend on how callers split rows across threads.
#pragma once
#include <cstdint>

#define PYLENET_KERNEL __attribute__((always_inline)) inline

namespace pylenet {
namespace gemm_impl {

// ------------------------------------------------------------------ C = A * B  (gemm_a_rows)

// One MR x (NV*W) tile of C (=|+=) A * B, row i of C at c[i]; a TAIL tile (NV = 1) covers
// `cols` < W columns.
template <class V, int MR, int NV, bool TAIL>
PYLENET_KERNEL void a_rows_tile(float* const* c, const float* A, int64_t T, const float* src,
                            const int64_t* off, int64_t j0, int64_t cols, bool accumulate) {
    typename V::R acc[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = !accumulate ? V::zero()
                        : TAIL      ? V::load_part(c[i] + j0, cols)
                                    : V::load(c[i] + j0 + V::W * v);
    for (int64_t t = 0; t < T; t++) {
        const float* b = src + off[t] + j0;
        typename V::R bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = TAIL ? V::load_part(b, cols) : V::load(b + V::W * v);
        for (int i = 0; i < MR; i++) {
            const typename V::R a = V::set1(A[i * T + t]);
            for (int v = 0; v < NV; v++) acc[i][v] = V::fma(acc[i][v], a, bv[v]);
        }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            if (TAIL)
                V::store_part(c[i] + j0, acc[i][v], cols);
            else
                V::store(c[i] + j0 + V::W * v, acc[i][v]);
        }
}

// MR rows of C (row i at C + coff[i], or at C + i * ldc when coff is null): full tiles of
// AR_NV vectors, then single vectors, then a masked tail.
template <class V, int MR>
PYLENET_KERNEL void a_rows_block(float* C, int64_t ldc, const int64_t* coff, const float* A, int64_t T,
                            const float* src, const int64_t* off, int64_t J, bool acc) {
    float* c[MR];
    for (int i = 0; i < MR; i++) c[i] = C + (coff ? coff[i] : i * ldc);
    constexpr int64_t wide = int64_t(V::AR_NV) * V::W;
    int64_t j0 = 0;
    for (; j0 + wide <= J; j0 += wide) a_rows_tile<V, MR, V::AR_NV, false>(c, A, T, src, off, j0, wide, acc);
    for (; j0 + V::W <= J; j0 += V::W) a_rows_tile<V, MR, 1, false>(c, A, T, src, off, j0, V::W, acc);
    if (j0 < J) a_rows_tile<V, MR, 1, true>(c, A, T, src, off, j0, J - j0, acc);
}

// The last `rows` (< MR) rows, with a tile of exactly that height.
template <class V, int MR>
inline void a_rows_leftover(int64_t rows, float* C, int64_t ldc, const int64_t* coff, const float* A,
                        int64_t T, const float* src, const int64_t* off, int64_t J, bool acc) {
    if constexpr (MR > 0) {
        if (rows == MR) return a_rows_block<V, MR>(C, ldc, coff, A, T, src, off, J, acc);
        a_rows_leftover<V, MR - 1>(rows, C, ldc, coff, A, T, src, off, J, acc);
    }
}

// All M rows, AR_MR at a time.
template <class V>
inline void a_rows_all(float* C, int64_t ldc, const int64_t* coff, const float* A, int64_t M,
                   int64_t T, const float* src, const int64_t* off, int64_t J, bool accumulate) {
    int64_t m = 0;
    for (; m + V::AR_MR <= M; m += V::AR_MR)
        a_rows_block<V, V::AR_MR>(coff ? C : C + m * ldc, ldc, coff ? coff + m : nullptr, A + m * T, T,
                             src, off, J, accumulate);
    a_rows_leftover<V, V::AR_MR - 1>(M - m, coff ? C : C + m * ldc, ldc, coff ? coff + m : nullptr,
                                 A + m * T, T, src, off, J, accumulate);
}

template <class V>
void a_rows(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
        const int64_t* off, int64_t J, bool accumulate) {
    a_rows_all<V>(C, ldc, nullptr, A, M, T, src, off, J, accumulate);
}

template <class V>
void a_rows_scatter(float* C, const int64_t* coff, const float* A, int64_t M, int64_t T,
                const float* src, const int64_t* off, int64_t J) {
    a_rows_all<V>(C, 0, coff, A, M, T, src, off, J, true);
}

// ---------------------------------------------------------------- C += A * B^T (gemm_a_rows_t)

// Adds the lane sums of n accumulators to C[at[0]], ..., C[at[n-1]], W at a time through
// V::reduce (missing registers are zeros, which leave the other lanes' sums unchanged).
template <class V, int N>
PYLENET_KERNEL void add_lane_sums(float* const* at, const typename V::R* acc) {
    for (int g = 0; g < N; g += V::W) {
        typename V::R group[V::W];
        for (int l = 0; l < V::W; l++) group[l] = g + l < N ? acc[g + l] : V::zero();
        float sums[V::W];
        V::store(sums, V::reduce(group));
        for (int l = 0; l < V::W && g + l < N; l++) *at[g + l] += sums[l];
    }
}

// One MR x TN tile of C (row stride T) += A * B^T over J columns (masked tail past the last W).
template <class V, int MR, int TN>
PYLENET_KERNEL void a_rows_t_tile(float* C, const float* A, int64_t lda, int64_t T, const float* src,
                            const int64_t* off, int64_t J, int64_t t0) {
    typename V::R acc[MR * TN];
    for (int i = 0; i < MR * TN; i++) acc[i] = V::zero();
    const float* b[TN];
    for (int u = 0; u < TN; u++) b[u] = src + off[t0 + u];
    int64_t j = 0;
    for (; j + V::W <= J; j += V::W) {
        typename V::R bv[TN];
        for (int u = 0; u < TN; u++) bv[u] = V::load(b[u] + j);
        for (int i = 0; i < MR; i++) {
            const typename V::R a = V::load(A + i * lda + j);
            for (int u = 0; u < TN; u++) acc[i * TN + u] = V::fma(acc[i * TN + u], a, bv[u]);
        }
    }
    if (j < J) {
        typename V::R bv[TN];
        for (int u = 0; u < TN; u++) bv[u] = V::load_part(b[u] + j, J - j);
        for (int i = 0; i < MR; i++) {
            const typename V::R a = V::load_part(A + i * lda + j, J - j);
            for (int u = 0; u < TN; u++) acc[i * TN + u] = V::fma(acc[i * TN + u], a, bv[u]);
        }
    }
    float* at[MR * TN];
    for (int i = 0; i < MR; i++)
        for (int u = 0; u < TN; u++) at[i * TN + u] = C + i * T + t0 + u;
    add_lane_sums<V, MR * TN>(at, acc);
}

// MR rows of C: TN taps at a time, then one at a time.
template <class V, int MR, int TN>
PYLENET_KERNEL void a_rows_t_block(float* C, const float* A, int64_t lda, int64_t T, const float* src,
                            const int64_t* off, int64_t J) {
    int64_t t0 = 0;
    for (; t0 + TN <= T; t0 += TN) a_rows_t_tile<V, MR, TN>(C, A, lda, T, src, off, J, t0);
    for (; t0 < T; t0++) a_rows_t_tile<V, MR, 1>(C, A, lda, T, src, off, J, t0);
}

template <class V>
void a_rows_t(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
        const int64_t* off, int64_t J) {
    int64_t m = 0;
    if (T < V::ART_TN)  // few B rows (a matrix-vector product): MV_MR rows share each B load
        for (; m + V::MV_MR <= M; m += V::MV_MR)
            for (int64_t t = 0; t < T; t++)
                a_rows_t_tile<V, V::MV_MR, 1>(C + m * T, A + m * lda, lda, T, src, off, J, t);
    for (; m + V::ART_MR <= M; m += V::ART_MR)
        a_rows_t_block<V, V::ART_MR, V::ART_TN>(C + m * T, A + m * lda, lda, T, src, off, J);
    for (; m + V::ART2_MR <= M; m += V::ART2_MR)
        a_rows_t_block<V, V::ART2_MR, V::ART2_TN>(C + m * T, A + m * lda, lda, T, src, off, J);
    for (; m < M; m++) a_rows_t_block<V, 1, V::ART1_TN>(C + m * T, A + m * lda, lda, T, src, off, J);
}

// ---------------------------------------------------------------- C += B * D   (gemm_rows_d)

// RT rows x 16 columns of C (T, Kc) += B (T, J) * D (J, Kc): B values broadcast, D rows
// loaded. B[t][j] = src[off[t] + j], or src[off[t] + offj[j]] when GATHER.
template <class V, int RT, bool GATHER>
PYLENET_KERNEL void rows_d_tile(float* C, int64_t ldc, const float* D, int64_t ldd,
                            const float* src, const int64_t* off, const int64_t* offj, int64_t J,
                            int64_t t0, int64_t k0) {
    constexpr int KV = 16 / V::W;
    typename V::R acc[RT][KV];
    const float* b[RT];
    for (int i = 0; i < RT; i++) {
        b[i] = src + off[t0 + i];
        for (int v = 0; v < KV; v++) acc[i][v] = V::load(C + (t0 + i) * ldc + k0 + V::W * v);
    }
    for (int64_t j = 0; j < J; j++) {
        const int64_t jj = GATHER ? offj[j] : j;
        typename V::R d[KV];
        for (int v = 0; v < KV; v++) d[v] = V::load(D + j * ldd + k0 + V::W * v);
        for (int i = 0; i < RT; i++) {
            const typename V::R bb = V::set1(b[i][jj]);
            for (int v = 0; v < KV; v++) acc[i][v] = V::fma(acc[i][v], bb, d[v]);
        }
    }
    for (int i = 0; i < RT; i++)
        for (int v = 0; v < KV; v++) V::store(C + (t0 + i) * ldc + k0 + V::W * v, acc[i][v]);
}

template <class V, bool GATHER>
inline void rows_d_all(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
                   const float* src, const int64_t* off, const int64_t* offj, int64_t J) {
    static_assert(16 % V::W == 0, "gemm_rows_d tiles are 16 columns wide");
    for (int64_t k0 = 0; k0 < Kc; k0 += 16) {
        int64_t t = 0;
        for (; t + V::RD_MR <= T; t += V::RD_MR)
            rows_d_tile<V, V::RD_MR, GATHER>(C, ldc, D, ldd, src, off, offj, J, t, k0);
        for (; t + V::RD_MR2 <= T; t += V::RD_MR2)
            rows_d_tile<V, V::RD_MR2, GATHER>(C, ldc, D, ldd, src, off, offj, J, t, k0);
        for (; t < T; t++) rows_d_tile<V, 1, GATHER>(C, ldc, D, ldd, src, off, offj, J, t, k0);
    }
}

template <class V>
void rows_d(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
        const float* src, const int64_t* off, const int64_t* offj, int64_t J) {
    if (offj)
        rows_d_all<V, true>(C, ldc, D, ldd, T, Kc, src, off, offj, J);
    else
        rows_d_all<V, false>(C, ldc, D, ldd, T, Kc, src, off, nullptr, J);
}

}  // namespace gemm_impl
}  // namespace pylenet

// The table entry of a level whose traits are V (used at the end of each gemm_<level>.cpp).
#define PYLENET_GEMM_TABLE(NAME, V)                                                        \
    const GemmKernels NAME = {V::kName,  V::W,     V::AR_MR,                              \
                               V::AR_NV,  V::ART_MR, V::ART_TN,                              \
                               V::RD_MR,  V::EXACT_CONV_FROM,                              \
                               gemm_impl::a_rows<V>, gemm_impl::a_rows_scatter<V>,               \
                               gemm_impl::a_rows_t<V>, gemm_impl::rows_d<V>}
