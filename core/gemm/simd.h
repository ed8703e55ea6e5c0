// SIMD levels: the instruction sets the micro-kernels were compiled for and the one in use.
// The level is chosen once, at first use, from the CPU's features, or forced with the
// environment variable PYLENET_SIMD=avx512|avx2|sse2|neon|scalar|auto; simd_set_level
// changes it later (tests and benchmarks). One algorithm, one layout; only tiles differ.
#pragma once
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PYLENET_SIMD_X86 1  // avx512, avx2 and sse2 kernels are compiled
#endif
#if defined(__aarch64__)
#define PYLENET_SIMD_NEON 1  // neon kernels are compiled
#endif

namespace pylenet {

struct GemmKernels;  // gemm/gemm.h: the micro-kernel table of one level

// Levels compiled into this build, best first (always ends with "scalar").
std::vector<std::string> simd_compiled();
// Whether `name` is compiled in and this CPU can run it.
bool simd_supported(const std::string& name);
// The level in use. Throws std::invalid_argument when PYLENET_SIMD names a level that is
// unknown, not compiled, or not runnable on this CPU (the extension calls it at import).
std::string simd_level();
// Uses `name` ("auto" = the best supported) from now on, process-wide; throws
// std::invalid_argument, changing nothing, when it is unknown or this CPU cannot run it.
// Each kernel call reads the level once: switch while no other thread runs kernels, or a step
// running meanwhile mixes levels (float32 rounding apart, the same results).
void simd_set_level(const std::string& name);
// The kernel table of the level in use (never throws; the best level if PYLENET_SIMD was bad).
const GemmKernels& simd_kernels();

}  // namespace pylenet
