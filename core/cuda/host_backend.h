// The host emulation of the device (cuda/net_impl.h's backend B): memory is host memory,
// copies are memcpy, a kernel is a loop over its launch grid calling the same element.h
// functor, and a program runs directly (there is no graph to capture). Element results are
// independent of each other, so the loop may run on several threads.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "parallel.h"

namespace pylenet {
namespace gpu {

struct HostBackend {
    void* alloc(size_t bytes) {
        void* p = std::calloc(bytes, 1);
        if (!p) throw std::bad_alloc();
        return p;
    }
    void release(void* p) { std::free(p); }
    void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
    void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
    void zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
    template <class F>
    void launch(int64_t n, const F& f) {
        parallel_for(n, threads_for(n * 64), [&](int64_t i) { f(i); });
    }
    template <class Fn>
    void run(int64_t, Fn&& fn) { fn(); }
    void forget() {}
};

}  // namespace gpu
}  // namespace pylenet
