// Build and run-time feature report.
#include "base/build_info.h"

#include "gemm/simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef PYLENET_VERSION
#define PYLENET_VERSION "0.0.0+unknown"
#endif

namespace pylenet {

BuildInfo build_info() {
    BuildInfo info;
    info.version = PYLENET_VERSION;
#if defined(__clang__)
    info.compiler = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    info.compiler = std::string("gcc ") + __VERSION__;
#else
    info.compiler = "unknown";
#endif
#ifdef _OPENMP
    info.openmp = true;
    info.max_threads = omp_get_num_procs();
#endif
#ifdef PYLENET_CUDA
    info.cuda = true;
#endif
    info.simd_compiled = simd_compiled();
    for (const std::string& level : info.simd_compiled)
        if (simd_supported(level)) info.simd_supported.push_back(level);
    info.simd_used = simd_level();
    return info;
}

}  // namespace pylenet
