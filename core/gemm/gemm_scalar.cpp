// GEMM micro-kernels on plain floats (one lane): the portable level for CPUs without a
// tuned one, and a second opinion on the vector levels in the tests.
#include <cstdint>

#include "base/compile_as.h"
#include "gemm/gemm.h"

// fma() is a separate multiply and add; contracting some of them into fused ones (where the
// compiler targets a CPU that has FMA) would make a result depend on its tile.
PYLENET_NO_FP_CONTRACT
#include "gemm/gemm_kernels.h"

namespace pylenet {
namespace {

struct Scalar {
    static constexpr const char* kName = "scalar";
    using R = float;
    static constexpr int W = 1;
    static constexpr int AR_MR = 4, AR_NV = 4;
    static constexpr int ART_MR = 2, ART_TN = 4, ART2_MR = 1, ART2_TN = 4, ART1_TN = 4, MV_MR = 4;
    static constexpr int RD_MR = 2, RD_MR2 = 1;
    static constexpr int EXACT_CONV_FROM = 1;  // no transposes to amortise at one lane

    static R zero() { return 0.0f; }
    static R set1(float x) { return x; }
    static R load(const float* p) { return *p; }
    static void store(float* p, R r) { *p = r; }
    static R load_part(const float* p, int64_t) { return *p; }   // never called: W = 1
    static void store_part(float* p, R r, int64_t) { *p = r; }  // never called: W = 1
    static R fma(R acc, R a, R b) { return acc + a * b; }
    static R reduce(const R* v) { return v[0]; }
};

}  // namespace

PYLENET_GEMM_TABLE(kGemmScalar, Scalar);

}  // namespace pylenet
