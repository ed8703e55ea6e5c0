// Register-tiled implicit-GEMM kernels on 16-float vectors (GCC vector extensions, lowered
// to AVX-512, AVX2 or SSE by the SIMD clones). Tiles: 6 rows x 32 columns for igemm_nn,
// 4 rows x 4 taps for igemm_nt; template instances cover the remainders.
#include "igemm.h"

#include <cstring>

#include "simd.h"

namespace pylenet {

namespace {

typedef float v16 __attribute__((vector_size(64)));

__attribute__((always_inline)) inline v16 load(const float* p) {
    v16 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
__attribute__((always_inline)) inline void store(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
// The first n (< 16) floats at p, zeros after: tails never read past the end.
__attribute__((always_inline)) inline v16 load_part(const float* p, int64_t n) {
    v16 v = v16{};
    std::memcpy(&v, p, sizeof(float) * size_t(n));
    return v;
}
__attribute__((always_inline)) inline void store_part(float* p, v16 v, int64_t n) {
    std::memcpy(p, &v, sizeof(float) * size_t(n));
}
// Lane sum in the same tree order as hsum16 (l + l^8, then ^4, ^2, ^1), so that every tile
// shape rounds identically and results never depend on how rows were split across threads.
__attribute__((always_inline)) inline float hsum(v16 v) {
    float s8[8], s4[4], s2[2];
    for (int l = 0; l < 8; l++) s8[l] = v[l] + v[l + 8];
    for (int l = 0; l < 4; l++) s4[l] = s8[l] + s8[l + 4];
    for (int l = 0; l < 2; l++) s2[l] = s4[l] + s4[l + 2];
    return s2[0] + s2[1];
}

// One MR x (16*NV) tile of C (=|+=) A * B; a tail tile (NV = 1) covers only `cols` columns.
template <int MR, int NV, bool TAIL>
__attribute__((always_inline)) inline void nn_tile(float* C, int64_t ldc, const float* A,
                                                   int64_t T, const float* src,
                                                   const int64_t* off, int64_t j0, int64_t cols,
                                                   bool accumulate) {
    v16 acc[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = !accumulate ? v16{}
                        : TAIL      ? load_part(C + i * ldc + j0, cols)
                                    : load(C + i * ldc + j0 + 16 * v);
    for (int64_t t = 0; t < T; t++) {
        const float* b = src + off[t] + j0;
        v16 bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = TAIL ? load_part(b, cols) : load(b + 16 * v);
        for (int i = 0; i < MR; i++) {
            const float a = A[i * T + t];
            for (int v = 0; v < NV; v++) acc[i][v] += a * bv[v];
        }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            if (TAIL)
                store_part(C + i * ldc + j0, acc[i][v], cols);
            else
                store(C + i * ldc + j0 + 16 * v, acc[i][v]);
        }
}

template <int MR>
__attribute__((always_inline)) inline void nn_rows(float* C, int64_t ldc, const float* A,
                                                   int64_t T, const float* src,
                                                   const int64_t* off, int64_t J, bool acc) {
    int64_t j0 = 0;
    for (; j0 + 32 <= J; j0 += 32) nn_tile<MR, 2, false>(C, ldc, A, T, src, off, j0, 32, acc);
    if (j0 + 16 <= J) {
        nn_tile<MR, 1, false>(C, ldc, A, T, src, off, j0, 16, acc);
        j0 += 16;
    }
    if (j0 < J) nn_tile<MR, 1, true>(C, ldc, A, T, src, off, j0, J - j0, acc);
}

// Lane sums of 16 vectors as one vector: out[i] = sum of v[i]'s lanes. Four rounds of
// pairwise folds (shuffle halves together, add) instead of 16 serial horizontal sums.
__attribute__((always_inline)) inline v16 hsum16(v16* v) {
    typedef int i16 __attribute__((vector_size(64)));
    const i16 lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const i16 hi8 = {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31};
    const i16 lo4 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27};
    const i16 hi4 = {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31};
    const i16 lo2 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29};
    const i16 hi2 = {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31};
    const i16 lo1 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const i16 hi1 = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};
    v16 a[8], b[4], c[2];
    // After each round, vector i holds partial sums of 2x as many inputs in interleaved blocks.
    for (int i = 0; i < 8; i++)
        a[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], lo8) + __builtin_shuffle(v[2 * i], v[2 * i + 1], hi8);
    for (int i = 0; i < 4; i++)
        b[i] = __builtin_shuffle(a[2 * i], a[2 * i + 1], lo4) + __builtin_shuffle(a[2 * i], a[2 * i + 1], hi4);
    for (int i = 0; i < 2; i++)
        c[i] = __builtin_shuffle(b[2 * i], b[2 * i + 1], lo2) + __builtin_shuffle(b[2 * i], b[2 * i + 1], hi2);
    return __builtin_shuffle(c[0], c[1], lo1) + __builtin_shuffle(c[0], c[1], hi1);
}

// One MR x TN tile of C += A * B^T, over J columns (a zero-filled tail past the last 16).
template <int MR, int TN>
__attribute__((always_inline)) inline void nt_tile(float* C, const float* A, int64_t lda,
                                                   int64_t T, const float* src,
                                                   const int64_t* off, int64_t J, int64_t t0) {
    v16 acc[MR * TN];
    for (int i = 0; i < MR * TN; i++) acc[i] = v16{};
    const float* b[TN];
    for (int u = 0; u < TN; u++) b[u] = src + off[t0 + u];
    int64_t j = 0;
    for (; j + 16 <= J; j += 16) {
        v16 av[MR], bv[TN];
        for (int i = 0; i < MR; i++) av[i] = load(A + i * lda + j);
        for (int u = 0; u < TN; u++) bv[u] = load(b[u] + j);
        for (int i = 0; i < MR; i++)
            for (int u = 0; u < TN; u++) acc[i * TN + u] += av[i] * bv[u];
    }
    if (j < J) {
        v16 av[MR], bv[TN];
        for (int i = 0; i < MR; i++) av[i] = load_part(A + i * lda + j, J - j);
        for (int u = 0; u < TN; u++) bv[u] = load_part(b[u] + j, J - j);
        for (int i = 0; i < MR; i++)
            for (int u = 0; u < TN; u++) acc[i * TN + u] += av[i] * bv[u];
    }
    if (MR * TN == 16) {
        const v16 sums = hsum16(acc);
        for (int i = 0; i < MR; i++)
            for (int u = 0; u < TN; u++) C[i * T + t0 + u] += sums[i * TN + u];
    } else {
        for (int i = 0; i < MR; i++)
            for (int u = 0; u < TN; u++) C[i * T + t0 + u] += hsum(acc[i * TN + u]);
    }
}

template <int MR>
__attribute__((always_inline)) inline void nt_rows(float* C, const float* A, int64_t lda,
                                                   int64_t T, const float* src,
                                                   const int64_t* off, int64_t J) {
    int64_t t0 = 0;
    for (; t0 + 4 <= T; t0 += 4) nt_tile<MR, 4>(C, A, lda, T, src, off, J, t0);
    for (; t0 < T; t0++) nt_tile<MR, 1>(C, A, lda, T, src, off, J, t0);
}

// One RT x 16 tile of C (T, 16*KV) += B (T, J) * D (J, 16*KV): taps broadcast, D rows loaded.
template <int RT>
__attribute__((always_inline)) inline void tn_tile(float* C, int64_t ldc, const float* D,
                                                   int64_t ldd, const float* src,
                                                   const int64_t* off, int64_t J, int64_t t0,
                                                   int64_t k0) {
    v16 acc[RT];
    for (int i = 0; i < RT; i++) acc[i] = load(C + (t0 + i) * ldc + k0);
    const float* b[RT];
    for (int i = 0; i < RT; i++) b[i] = src + off[t0 + i];
    for (int64_t j = 0; j < J; j++) {
        const v16 d = load(D + j * ldd + k0);
        for (int i = 0; i < RT; i++) acc[i] += b[i][j] * d;
    }
    for (int i = 0; i < RT; i++) store(C + (t0 + i) * ldc + k0, acc[i]);
}

}  // namespace

PYLENET_SIMD_CLONES
void igemm_nn(float* C, int64_t ldc, const float* A, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J, bool accumulate) {
    int64_t m = 0;
    for (; m + 6 <= M; m += 6) nn_rows<6>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate);
    switch (M - m) {
    case 5: nn_rows<5>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate); break;
    case 4: nn_rows<4>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate); break;
    case 3: nn_rows<3>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate); break;
    case 2: nn_rows<2>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate); break;
    case 1: nn_rows<1>(C + m * ldc, ldc, A + m * T, T, src, off, J, accumulate); break;
    default: break;
    }
}

PYLENET_SIMD_CLONES
void igemm_nt(float* C, const float* A, int64_t lda, int64_t M, int64_t T, const float* src,
              const int64_t* off, int64_t J) {
    int64_t m = 0;
    if (T < 4)  // few B rows (a matrix-vector product): 16 rows of A share each B load
        for (; m + 16 <= M; m += 16)
            for (int64_t t = 0; t < T; t++) nt_tile<16, 1>(C + m * T, A + m * lda, lda, T, src, off, J, t);
    for (; m + 4 <= M; m += 4) nt_rows<4>(C + m * T, A + m * lda, lda, T, src, off, J);
    for (; m + 2 <= M; m += 2) {  // two rows left (C1's 6 channels): 2 x 8 tiles
        int64_t t0 = 0;
        for (; t0 + 8 <= T; t0 += 8) nt_tile<2, 8>(C + m * T, A + m * lda, lda, T, src, off, J, t0);
        for (; t0 < T; t0++) nt_tile<2, 1>(C + m * T, A + m * lda, lda, T, src, off, J, t0);
    }
    for (; m < M; m++) nt_rows<1>(C + m * T, A + m * lda, lda, T, src, off, J);
}

}  // namespace pylenet

namespace pylenet {

PYLENET_SIMD_CLONES
void igemm_tn(float* C, int64_t ldc, const float* D, int64_t ldd, int64_t T, int64_t Kc,
              const float* src, const int64_t* off, int64_t J) {
    for (int64_t k0 = 0; k0 < Kc; k0 += 16) {
        int64_t t = 0;
        for (; t + 12 <= T; t += 12) tn_tile<12>(C, ldc, D, ldd, src, off, J, t, k0);
        for (; t + 4 <= T; t += 4) tn_tile<4>(C, ldc, D, ldd, src, off, J, t, k0);
        for (; t < T; t++) tn_tile<1>(C, ldc, D, ldd, src, off, J, t, k0);
    }
}

}  // namespace pylenet
