// Which SIMD levels were compiled, and which one this CPU selects at run time.
#include "simd.h"

namespace pylenet {

std::vector<std::string> simd_compiled() {
#if defined(PYLENET_NATIVE)
    return {"native"};
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    return {"avx512 (x86-64-v4)", "avx2+fma (x86-64-v3)", "baseline (x86-64)"};
#else
    return {"baseline"};
#endif
}

std::string simd_used() {
#if defined(PYLENET_NATIVE)
    return "native";
#elif defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return "avx512 (x86-64-v4)";
    if (__builtin_cpu_supports("x86-64-v3")) return "avx2+fma (x86-64-v3)";
    return "baseline (x86-64)";
#else
    return "baseline";
#endif
}

}  // namespace pylenet
