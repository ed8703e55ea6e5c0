// Thread-count control for the core, working with or without OpenMP, and the one batch split
// shared by every batch-parallel training path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pylenet {

// Threads the core's parallel regions use (>= 1); 1 when built without OpenMP.
int get_num_threads();
// Sets the threads used by every later call, from any calling thread. n must be >= 1.
void set_num_threads(int n);
// Threads to use for `work` scalar operations: 1 when the work is too small to pay for a
// fork, or when the caller already runs inside a parallel region.
int threads_for(int64_t work);

// This thread's index in the running parallel_for team (0 outside one).
int thread_index();

// While one lives, the calling thread runs one share of work that is already split (the
// fused net on one thread): threads_for() returns 1 there, as inside an OpenMP team.
class SerialScope {
public:
    SerialScope();
    ~SerialScope();
    SerialScope(const SerialScope&) = delete;
    SerialScope& operator=(const SerialScope&) = delete;
};

// Runs body(i) for every i in [0, n) on `threads` threads (static schedule), or on the calling
// thread when threads <= 1: no OpenMP region then, which would cost a team allocation per call.
template <class F>
void parallel_for(int64_t n, int threads, F&& body) {
    if (threads <= 1) {
        for (int64_t i = 0; i < n; i++) body(i);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) body(i);
}

// The batch split of training: the per-op linear forward and the conv/linear backward and the
// fused network (net.h) all cut a batch of N into batch_blocks(N) blocks, block b holding
// samples [N b / nblocks, N (b+1) / nblocks), run the same per-block kernels on each, and add
// the blocks' weight gradients with sum_blocks, so the two paths give bit-identical results.
// At least 8 samples per block (each costs a gradient buffer to clear and to add), at most
// kMaxBatchBlocks blocks: a function of N alone, never of the thread count.
constexpr int64_t kMaxBatchBlocks = 8;
int64_t batch_blocks(int64_t N);
inline int64_t block_begin(int64_t N, int64_t nblocks, int64_t b) { return N * b / nblocks; }
// Runs body(blk, n0, n, ws) for every block of the batch split of N: block blk holds samples
// [n0, n0 + n), and ws is the running thread's own ws_floats floats of scratch. At most
// `threads` threads (and never more than blocks); the results cannot depend on their number.
template <class F>
void for_each_batch_block(int64_t N, int threads, int64_t ws_floats, F&& body) {
    const int64_t nblocks = batch_blocks(N);
    const int64_t stride = (ws_floats + 15) / 16 * 16;  // each thread's share 64-byte apart
    const int nt = int(threads < nblocks ? threads : nblocks);
    std::vector<float> ws(std::size_t(nt > 1 ? nt : 1) * std::size_t(stride));
    parallel_for(nblocks, nt, [&](int64_t blk) {
        const int64_t n0 = block_begin(N, nblocks, blk);
        body(blk, n0, block_begin(N, nblocks, blk + 1) - n0, ws.data() + int64_t(thread_index()) * stride);
    });
}
// dst[i] = parts[i] + parts[stride + i] + ... + parts[(nblocks-1) stride + i] for i < n,
// added in block order (the first block copied, so a lone block passes through unchanged).
void sum_blocks(float* dst, const float* parts, int64_t stride, int64_t nblocks, int64_t n);

}  // namespace pylenet
