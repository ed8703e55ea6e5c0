// Thread-count control: a process-wide count used through `num_threads` clauses, so that
// set_num_threads from one Python thread applies to kernels started from any other.
#include "base/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace pylenet {

namespace {
int initial_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
std::atomic<int> g_threads{initial_threads()};
thread_local int t_serial_scopes = 0;
}  // namespace

int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

SerialScope::SerialScope() { t_serial_scopes++; }
SerialScope::~SerialScope() { t_serial_scopes--; }

int get_num_threads() { return g_threads.load(std::memory_order_relaxed); }

void set_num_threads(int n) {
#ifdef _OPENMP
    g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed);
#else
    (void)n;  // without OpenMP the core is single-threaded
#endif
}

int threads_for(int64_t work) {
    if (t_serial_scopes > 0) return 1;
#ifdef _OPENMP
    if (omp_get_level() > 0) return 1;  // inside a team, even a one-thread one (the fused net)
#endif
    // Below ~64k multiply-adds a fork/join costs more than it saves.
    return work < (int64_t(1) << 16) ? 1 : get_num_threads();
}

int64_t batch_blocks(int64_t N) { return std::max<int64_t>(1, std::min<int64_t>(N / 8, kMaxBatchBlocks)); }

void sum_blocks(float* dst, const float* parts, int64_t stride, int64_t nblocks, int64_t n) {
    if (n <= 0) return;
    std::memcpy(dst, parts, sizeof(float) * size_t(n));
    for (int64_t b = 1; b < nblocks; b++) {
        const float* src = parts + b * stride;
        for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    }
}

}  // namespace pylenet
