// Thread-count control for the core, working with or without OpenMP.
#pragma once
#include <cstdint>

namespace pylenet {

// Threads the core's parallel regions use (>= 1); 1 when built without OpenMP.
int get_num_threads();
// Sets the threads used by every later call, from any calling thread. n must be >= 1.
void set_num_threads(int n);
// Threads to use for `work` scalar operations: 1 when the work is too small to pay for a
// fork, or when the caller already runs inside a parallel region.
int threads_for(int64_t work);

}  // namespace pylenet
