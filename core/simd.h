// Run-time SIMD dispatch: hot kernels are compiled for several x86-64 levels and the
// loader picks one per machine (GCC/Clang target_clones), so the default build runs on
// any x86-64 CPU and still uses AVX2/AVX-512 where present.
#pragma once
#include <string>
#include <vector>

#if defined(PYLENET_NATIVE) || !defined(__x86_64__) || !defined(__GNUC__) || defined(__clang__)
#define PYLENET_SIMD_CLONES
#else
#define PYLENET_SIMD_CLONES \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif

namespace pylenet {

// Instruction-set levels the hot kernels were compiled for.
std::vector<std::string> simd_compiled();
// The level this machine runs (the best compiled level it supports).
std::string simd_used();

}  // namespace pylenet
