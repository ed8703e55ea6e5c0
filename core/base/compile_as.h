// How a file asks the compiler for code it would not get from the build's flags: one target
// instruction set for a stretch of functions (each gemm_<level>.cpp), or float arithmetic
// exactly as written. GCC and clang spell these differently; this header spells them once.
#pragma once

#define PYLENET_PRAGMA(x) _Pragma(#x)

#if defined(__clang__)
// The functions up to PYLENET_TARGET_END are compiled for `isa`, e.g. "avx2,fma".
#define PYLENET_TARGET_BEGIN(isa) \
    PYLENET_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define PYLENET_TARGET_END PYLENET_PRAGMA(clang attribute pop)
// From here on, a * b + c is never contracted into a fused multiply-add.
#define PYLENET_NO_FP_CONTRACT PYLENET_PRAGMA(clang fp contract(off))
#else
#define PYLENET_TARGET_BEGIN(isa) PYLENET_PRAGMA(GCC push_options) PYLENET_PRAGMA(GCC target(isa))
#define PYLENET_TARGET_END PYLENET_PRAGMA(GCC pop_options)
#define PYLENET_NO_FP_CONTRACT PYLENET_PRAGMA(GCC optimize("fp-contract=off"))
#endif
