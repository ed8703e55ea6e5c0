// Which SIMD levels were compiled, which ones this CPU runs, and the one in use.
#include "gemm/simd.h"

#include <atomic>
#include <mutex>
#include <cstdlib>
#include <stdexcept>

#include "gemm/gemm.h"

namespace pylenet {

namespace {

struct Level {
    const char* name;
    const GemmKernels* kernels;
    bool (*runs)();
};

#if defined(PYLENET_SIMD_X86)
bool cpu_avx512() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
}
bool cpu_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
bool always() { return true; }

// Best first; the first runnable entry is "auto".
const Level kLevels[] = {
#if defined(PYLENET_SIMD_X86)
    {"avx512", &kGemmAvx512, cpu_avx512},
    {"avx2", &kGemmAvx2, cpu_avx2},
    {"sse2", &kGemmSse2, always},
#endif
#if defined(PYLENET_SIMD_NEON)
    {"neon", &kGemmNeon, always},
#endif
    {"scalar", &kGemmScalar, always},
};
constexpr int kNumLevels = int(sizeof(kLevels) / sizeof(kLevels[0]));

int best_level() {
    for (int i = 0; i < kNumLevels; i++)
        if (kLevels[i].runs()) return i;
    return kNumLevels - 1;
}

std::string known_names() {
    std::string s;
    for (const Level& l : kLevels) s += std::string(s.empty() ? "" : ", ") + l.name;
    return s;
}

// The index of `name`, or an exception saying why it cannot be used.
int level_index(const std::string& name, const char* where) {
    if (name == "auto" || name.empty()) return best_level();
    for (int i = 0; i < kNumLevels; i++) {
        if (name != kLevels[i].name) continue;
        if (kLevels[i].runs()) return i;
        throw std::invalid_argument(std::string(where) + "'" + name +
                                    "': this CPU cannot run that SIMD level (best here: " +
                                    kLevels[best_level()].name + ")");
    }
    const bool other_arch = name == "avx512" || name == "avx2" || name == "sse2" || name == "neon";
    throw std::invalid_argument(std::string(where) + "'" + name + "': " +
                                (other_arch ? "not compiled into this build"
                                            : "unknown SIMD level") +
                                " (choose auto, " + known_names() + ")");
}

// The process-wide choice: made once from PYLENET_SIMD; a bad value is kept as an error
// for simd_level() to report, while the kernels fall back to the best level.
struct State {
    std::atomic<int> index{0};  // read by every kernel call
    std::mutex mutex;           // guards error
    std::string error;
    State() {
        const char* env = std::getenv("PYLENET_SIMD");
        try {
            index = level_index(env ? env : "auto", "PYLENET_SIMD=");
        } catch (const std::invalid_argument& e) {
            index = best_level();
            error = e.what();
        }
    }
};

State& state() {
    static State s;
    return s;
}

}  // namespace

std::vector<std::string> simd_compiled() {
    std::vector<std::string> out;
    for (const Level& l : kLevels) out.push_back(l.name);
    return out;
}

bool simd_supported(const std::string& name) {
    for (const Level& l : kLevels)
        if (name == l.name) return l.runs();
    return false;
}

std::string simd_level() {
    State& s = state();
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        if (!s.error.empty()) throw std::invalid_argument(s.error);
    }
    return kLevels[s.index.load(std::memory_order_relaxed)].name;
}

void simd_set_level(const std::string& name) {
    const int i = level_index(name, "simd level ");
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.index.store(i, std::memory_order_relaxed);
    s.error.clear();
}

const GemmKernels& simd_kernels() {
    return *kLevels[state().index.load(std::memory_order_relaxed)].kernels;
}

}  // namespace pylenet
