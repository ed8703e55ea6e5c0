// What GpuNet (gpu.h) forwards to: one implementation per backend (cuda/net_impl.h over the
// device in cuda/backend.cu, over the host emulation in gpu_net.cpp), and the factories.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cuda/gpu.h"
#include "net/net.h"

namespace pylenet {
namespace gpu {

struct Impl {
    virtual ~Impl() = default;
    virtual const Net& net() const = 0;  // the validated chain (shapes, checks)
    virtual bool emulated() const = 0;
    virtual void set_params(const std::vector<const float*>& host) = 0;
    virtual void get_params(const std::vector<float*>& host) = 0;
    virtual void set_buffers(const std::vector<const float*>& host) = 0;
    virtual void get_buffers(const std::vector<float*>& host) = 0;
    virtual void set_optimizer(const OptimConfig& config) = 0;
    virtual int state_slots() const = 0;
    virtual void set_optimizer_state(const std::vector<std::vector<const float*>>& state,
                                     bool has_state, int64_t steps) = 0;
    virtual void get_optimizer_state(const std::vector<std::vector<float*>>& state) = 0;
    virtual int64_t optimizer_steps() const = 0;
    virtual void forward(float* out, const float* x, int64_t N) = 0;
    virtual void predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                            int64_t pad, const float* lut) = 0;
    virtual StepResult train_step(float* out, const float* x, const int64_t* labels, int64_t N,
                                  float lr, const LossKindInfo& loss, const StepNoise& noise,
                                  float smoothing) = 0;
    virtual void set_dataset(const uint8_t* images, const int64_t* labels, int64_t N, int64_t h,
                             int64_t w, int64_t pad, const float* lut) = 0;
    virtual int64_t dataset_size() const = 0;
    virtual Shape dataset_image() const = 0;  // (h, w, pad) of the dataset
    virtual std::vector<StepResult> train_indices(const int64_t* indices, int64_t count,
                                                  int64_t batch, const float* lrs,
                                                  const LossKindInfo& loss,
                                                  bool stop_on_nonfinite, const StepNoise& noise,
                                                  float smoothing) = 0;
    virtual void backward(float* dx, const std::vector<float*>& grads, const float* x,
                          const float* dy, int64_t N) = 0;
    virtual double loss(float* dout, const float* out, const int64_t* labels, int64_t N,
                        const LossKindInfo& loss) = 0;
};

// The host emulation (always built) and the device implementation (cuda/backend.cu; in a
// build without CUDA, gpu_none.cpp's throws, saying so).
std::unique_ptr<Impl> make_host_impl(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W);
std::unique_ptr<Impl> make_device_impl(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W);
// device_info() of the CUDA part (gpu_none.cpp: compiled = false).
DeviceInfo cuda_device_info();

}  // namespace gpu
}  // namespace pylenet
