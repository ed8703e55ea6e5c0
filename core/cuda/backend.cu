// The device backend of the GPU network (cuda/net_impl.h): cudaMalloc'd memory, copies and
// kernels on one stream, and each training or inference program captured once as a CUDA
// graph, then replayed. Every CUDA call is checked; a failure is a std::runtime_error naming
// the call and CUDA's message. Built only with PYLENET_CUDA (nvcc).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <typeinfo>
#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#endif

#include "cuda/element.h"
#include "cuda/impl.h"
#include "cuda/net_impl.h"

#ifndef PYLENET_CUDA_ARCHS
#define PYLENET_CUDA_ARCHS ""
#endif

namespace pylenet {
namespace gpu {

namespace {

// A failed call leaves its error as the runtime's "last error" too, which the next
// cudaGetLastError() (after a kernel launch) would report again: a caught error (the
// out-of-memory fallback of fit) must not fail the next call. So it is cleared here, and
// after every call whose error is ignored (cleanup). A sticky error (a kernel that faulted)
// cannot be cleared: the context is lost and every later call fails, naming it.
void check(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}
void check(cudaError_t err, const std::string& what) { check(err, what.c_str()); }

// Runs a cleanup call whose error cannot be acted on, and clears that error.
void ignore(cudaError_t) { cudaGetLastError(); }

// A kernel's functor for error messages ("pylenet::gpu::ConvForward"), demangled where the
// host compiler's ABI allows.
template <class F>
std::string functor_name() {
    const char* raw = typeid(F).name();
#if __has_include(<cxxabi.h>)
    int status = 0;
    std::unique_ptr<char, void (*)(void*)> nice(abi::__cxa_demangle(raw, nullptr, nullptr, &status), std::free);
    if (status == 0 && nice) return nice.get();
#endif
    return raw;
}

// One thread per index; a grid-stride loop covers launches larger than the grid.
template <class F>
__global__ void for_each_kernel(F f, int64_t n) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

constexpr int kThreads = 256;

}  // namespace

struct CudaBackend {
    cudaStream_t stream = nullptr;
    std::map<GraphKey, cudaGraphExec_t> graphs;
    void* pinned = nullptr;  // staging for small copies (the latency of inference at batch 1)
    size_t pinned_size = 0;

    CudaBackend() {
        check(cudaSetDevice(0), "cudaSetDevice");
        check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    }
    ~CudaBackend() {
        forget();
        if (pinned) ignore(cudaFreeHost(pinned));
        if (stream) ignore(cudaStreamDestroy(stream));
    }
    void* alloc(size_t bytes) {
        void* p = nullptr;
        check(cudaMalloc(&p, bytes), "cudaMalloc");
        const cudaError_t err = cudaMemsetAsync(p, 0, bytes, stream);
        if (err != cudaSuccess) ignore(cudaFree(p));
        check(err, "cudaMemsetAsync");
        return p;
    }
    void release(void* p) {
        ignore(cudaStreamSynchronize(stream));
        ignore(cudaFree(p));
    }
    // Pinned staging of at least `bytes` (copies up to 1 MiB go through it).
    void* staging(size_t bytes) {
        if (bytes > pinned_size) {
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            if (pinned) ignore(cudaFreeHost(pinned));
            pinned = nullptr;
            pinned_size = 0;
            check(cudaMallocHost(&pinned, bytes), "cudaMallocHost");
            pinned_size = bytes;
        }
        return pinned;
    }
    void upload(void* dst, const void* src, size_t bytes) {
        if (bytes == 0) return;
        if (bytes <= (size_t(1) << 20)) {
            // The staging buffer may still feed an earlier copy: wait for the stream first.
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            void* stage = staging(bytes);
            std::memcpy(stage, src, bytes);
            check(cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (upload)");
            return;
        }
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (upload)");
    }
    void download(void* dst, const void* src, size_t bytes) {
        if (bytes == 0) return;
        if (bytes <= (size_t(1) << 20)) {
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
            void* stage = staging(bytes);
            check(cudaMemcpyAsync(stage, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync (download)");
            check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (download)");
            std::memcpy(dst, stage, bytes);
            return;
        }
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync (download)");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (download)");
    }
    void zero(void* dst, size_t bytes) {
        if (bytes) check(cudaMemsetAsync(dst, 0, bytes, stream), "cudaMemsetAsync");
    }
    template <class F>
    void launch(int64_t n, const F& f) {
        if (n <= 0) return;
        const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, int64_t(1) << 20);
        for_each_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(f, n);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess)
            check(err, "the launch of " + functor_name<F>() + " (" + std::to_string(n) + " threads)");
    }
    // Replays the program captured under `key`, capturing it first.
    template <class Fn>
    void run(const GraphKey& key, Fn&& fn) {
        auto it = graphs.find(key);
        if (it == graphs.end()) {
            cudaGraph_t graph = nullptr;
            check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
            try {
                fn();
            } catch (...) {
                // Ends the (now invalid) capture; its errors are not the one being reported.
                ignore(cudaStreamEndCapture(stream, &graph));
                if (graph) ignore(cudaGraphDestroy(graph));
                throw;
            }
            check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
            cudaGraphExec_t exec = nullptr;
            const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
            ignore(cudaGraphDestroy(graph));
            check(err, "cudaGraphInstantiate");
            it = graphs.emplace(key, exec).first;
        }
        check(cudaGraphLaunch(it->second, stream), "cudaGraphLaunch");
    }
    void forget() {
        if (!graphs.empty()) ignore(cudaStreamSynchronize(stream));
        for (auto& kv : graphs) ignore(cudaGraphExecDestroy(kv.second));
        graphs.clear();
    }
};

std::unique_ptr<Impl> make_device_impl(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W) {
    return std::make_unique<NetImpl<CudaBackend>>(std::move(layers), C, H, W, false);
}

namespace {
DeviceInfo read_device_info() {
    DeviceInfo info;
    info.compiled = true;
    int runtime = 0, driver = 0;
    ignore(cudaRuntimeGetVersion(&runtime));
    ignore(cudaDriverGetVersion(&driver));
    info.runtime_version = runtime;
    info.driver_version = driver;
    const std::string archs = PYLENET_CUDA_ARCHS;
    for (size_t start = 0; start < archs.size();) {
        const size_t comma = archs.find(',', start);
        const size_t end = comma == std::string::npos ? archs.size() : comma;
        if (end > start) info.archs.push_back(archs.substr(start, end - start));
        start = end + 1;
    }
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        info.reason = cudaGetErrorString(err);
        cudaGetLastError();  // clear it
        return info;
    }
    info.device_count = count;
    if (count == 0) {
        info.reason = "no CUDA-capable device is detected";
        return info;
    }
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
        info.reason = "cannot read the properties of device 0";
        cudaGetLastError();
        return info;
    }
    info.name = prop.name;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.total_memory = int64_t(prop.totalGlobalMem);
    // A binary without machine code or PTX for this GPU's architecture imports and sees the
    // GPU, but cannot launch a kernel: ask for one kernel's attributes, which needs its code.
    cudaFuncAttributes attr;
    const cudaError_t probe = cudaFuncGetAttributes(&attr, for_each_kernel<UnaryForward>);
    if (probe != cudaSuccess) {
        cudaGetLastError();
        const std::string cc = std::to_string(prop.major) + std::to_string(prop.minor);
        info.reason = std::string("device 0 (") + prop.name + ", compute capability " + std::to_string(prop.major) +
                      "." + std::to_string(prop.minor) + ") cannot run pylenet's kernels, built for " +
                      (archs.empty() ? std::string("?") : archs) + " (" + cudaGetErrorString(probe) +
                      "); rebuild with PYLENET_CUDA_ARCH=" + cc;
        return info;
    }
    info.usable = true;
    return info;
}
}  // namespace

// Read once per process (cudaGetDeviceProperties alone can take longer than an inference at
// batch 1, which asks through pylenet's device checks).
DeviceInfo cuda_device_info() {
    static const DeviceInfo info = read_device_info();
    return info;
}

}  // namespace gpu
}  // namespace pylenet
