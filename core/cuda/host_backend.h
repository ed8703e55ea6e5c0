// The host emulation of the device (cuda/net_impl.h's backend B): memory is host memory,
// copies are memcpy, and a kernel is a loop over its launch grid calling the same element.h
// functor. Programs are "captured" as the device captures them: run(key, fn) records the
// kernels fn launches, with their parameters as they were then, and replays that record for
// the key from then on; a copy during a capture is an error, as it is on the device. So the
// emulation also tests which programs may be reused. Element results are independent of each
// other, so a loop may run on several threads.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <new>
#include <stdexcept>
#include <vector>

#include "base/parallel.h"
#include "cuda/element.h"

namespace pylenet {
namespace gpu {

struct HostBackend {
    using Program = std::vector<std::function<void()>>;
    std::map<GraphKey, Program> graphs;
    Program* capturing = nullptr;

    void* alloc(size_t bytes) {
        not_capturing("alloc");
        void* p = std::calloc(bytes, 1);
        if (!p) throw std::bad_alloc();
        return p;
    }
    void release(void* p) { std::free(p); }
    void upload(void* dst, const void* src, size_t bytes) {
        not_capturing("upload");
        if (bytes) std::memcpy(dst, src, bytes);
    }
    void download(void* dst, const void* src, size_t bytes) {
        not_capturing("download");
        if (bytes) std::memcpy(dst, src, bytes);
    }
    void zero(void* dst, size_t bytes) {
        not_capturing("zero");
        if (bytes) std::memset(dst, 0, bytes);
    }
    template <class F>
    void launch(int64_t n, const F& f) {
        if (capturing) {
            capturing->push_back([n, f] { grid(n, f); });
            return;
        }
        grid(n, f);
    }
    template <class Fn>
    void run(const GraphKey& key, Fn&& fn) {
        auto it = graphs.find(key);
        if (it == graphs.end()) {
            Program program;
            capturing = &program;
            try {
                fn();
            } catch (...) {
                capturing = nullptr;
                throw;
            }
            capturing = nullptr;
            it = graphs.emplace(key, std::move(program)).first;
        }
        for (const auto& kernel : it->second) kernel();
    }
    void forget() { graphs.clear(); }

private:
    template <class F>
    static void grid(int64_t n, const F& f) {
        parallel_for(n, threads_for(n * 64), [&](int64_t i) { f(i); });
    }
    void not_capturing(const char* what) const {
        if (capturing) throw std::logic_error(std::string("GpuNet: ") + what + " inside a captured program");
    }
};

}  // namespace gpu
}  // namespace pylenet
