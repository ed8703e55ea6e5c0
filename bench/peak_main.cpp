// Prints the measured single-core peak of every SIMD level this CPU runs (or of the levels
// named on the command line), one line each, and the level the core's kernels use.
// Usage: peak [LEVEL ...]
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_common.h"

int main(int argc, char** argv) {
    std::vector<std::string> levels(argv + 1, argv + argc);
    if (levels.empty()) levels = bench::peak_levels();
    int failures = 0;
    for (const std::string& level : levels) {
        try {
            std::printf("%s\n", bench::peak_flops_per_core(level).header().c_str());
        } catch (const std::invalid_argument& e) {
            std::printf("FAIL: %s\n", e.what());
            failures++;
        }
    }
    try {
        std::printf("core kernels run at: %s\n", bench::simd_level_in_use().c_str());
    } catch (const std::invalid_argument& e) {
        std::printf("FAIL: %s\n", e.what());
        failures++;
    }
    return failures ? 1 : 0;
}
