// Matrix products for the conv and linear layers, vectorised along contiguous rows and
// compiled per SIMD level (see simd.h). Four rows of C share each load of B.
#include "gemm.h"

#include <cstring>

#include "simd.h"

namespace pylenet {

PYLENET_SIMD_CLONES
void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    if (!accumulate)
        for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, sizeof(float) * N);
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) {
        float* c0 = C + i * ldc;
        float* c1 = c0 + ldc;
        float* c2 = c1 + ldc;
        float* c3 = c2 + ldc;
        const float* a = A + i * lda;
        for (int64_t k = 0; k < K; k++) {
            const float a0 = a[k], a1 = a[lda + k], a2 = a[2 * lda + k], a3 = a[3 * lda + k];
            const float* b = B + k * ldb;
#pragma omp simd
            for (int64_t j = 0; j < N; j++) {
                const float bj = b[j];
                c0[j] += a0 * bj;
                c1[j] += a1 * bj;
                c2[j] += a2 * bj;
                c3[j] += a3 * bj;
            }
        }
    }
    for (; i < M; i++) {
        float* c = C + i * ldc;
        for (int64_t k = 0; k < K; k++) {
            const float a0 = A[i * lda + k];
            const float* b = B + k * ldb;
#pragma omp simd
            for (int64_t j = 0; j < N; j++) c[j] += a0 * b[j];
        }
    }
}

PYLENET_SIMD_CLONES
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    for (int64_t i = 0; i < M; i++) {
        const float* a = A + i * lda;
        for (int64_t j = 0; j < N; j++) {
            const float* b = B + j * ldb;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < K; k++) acc += a[k] * b[k];
            C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc : acc;
        }
    }
}

PYLENET_SIMD_CLONES
void gemm_tn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
             int64_t ldb, float* C, int64_t ldc, bool accumulate) {
    if (!accumulate)
        for (int64_t i = 0; i < M; i++) std::memset(C + i * ldc, 0, sizeof(float) * N);
    for (int64_t k = 0; k < K; k++) {
        const float* a = A + k * lda;
        const float* b = B + k * ldb;
        int64_t i = 0;
        for (; i + 4 <= M; i += 4) {
            const float a0 = a[i], a1 = a[i + 1], a2 = a[i + 2], a3 = a[i + 3];
            float* c0 = C + i * ldc;
            float* c1 = c0 + ldc;
            float* c2 = c1 + ldc;
            float* c3 = c2 + ldc;
#pragma omp simd
            for (int64_t j = 0; j < N; j++) {
                const float bj = b[j];
                c0[j] += a0 * bj;
                c1[j] += a1 * bj;
                c2[j] += a2 * bj;
                c3[j] += a3 * bj;
            }
        }
        for (; i < M; i++) {
            const float ai = a[i];
            float* c = C + i * ldc;
#pragma omp simd
            for (int64_t j = 0; j < N; j++) c[j] += ai * b[j];
        }
    }
}

}  // namespace pylenet
