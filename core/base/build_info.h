// What this build of the core contains, for pylenet.ops.build_info() and the benchmarks.
#pragma once
#include <string>
#include <vector>

namespace pylenet {

struct BuildInfo {
    std::string version, compiler;
    bool openmp = false, cuda = false;
    int max_threads = 1;
    std::vector<std::string> simd_compiled, simd_supported;  // built in; runnable here
    std::string simd_used;  // the level in use (simd.h)
};

// Describes the compiled core and the machine it runs on.
BuildInfo build_info();

}  // namespace pylenet
