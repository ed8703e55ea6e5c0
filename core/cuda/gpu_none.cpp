// The CUDA part of a build without it (no PYLENET_CUDA): device_info says so, and asking for a
// device network raises the same message. With PYLENET_CUDA, cuda/backend.cu defines these.
#ifndef PYLENET_CUDA
#include <stdexcept>

#include "cuda/impl.h"

namespace pylenet {
namespace gpu {

DeviceInfo cuda_device_info() {
    DeviceInfo info;
    info.reason = "pylenet was built without CUDA (rebuild with PYLENET_CUDA=1 pip install .)";
    return info;
}

std::unique_ptr<Impl> make_device_impl(std::vector<LayerDesc>, int64_t, int64_t, int64_t) {
    throw std::runtime_error("CUDA is not available: " + cuda_device_info().reason);
}

}  // namespace gpu
}  // namespace pylenet
#endif
