// The one interface between the CPU core (and its binding) and the optional CUDA part. No CUDA
// header is included here: a CPU-only build compiles core/gpu_none.cpp behind it, which says
// why CUDA cannot be used, and a CUDA build (PYLENET_CUDA) compiles core/cuda/*.cu.
//
// GpuNet runs the fused network of net.h on a device: weights, optimiser state and (when the
// caller uploads it) a uint8 dataset stay in device memory; a training step is one fixed
// sequence of kernels on one stream, captured once per batch size as a CUDA graph and then
// replayed, with no host synchronisation except where losses are read back. Every reduction
// sums in a fixed order (no atomics), so a seed gives the same weights run after run.
//
// The same network logic also runs on the host ("emulated": every kernel is a loop over its
// launch grid calling the same __host__ __device__ per-element functions), which is how the
// CPU-only build tests it; emulation is for tests, never chosen for a user.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/net.h"
#include "net/registry.h"

namespace pylenet {
namespace gpu {

// What the CUDA part sees of this machine. Never throws.
struct DeviceInfo {
    bool compiled = false;     // the CUDA part was built in (PYLENET_CUDA)
    bool usable = false;       // compiled, a driver and at least one GPU: device 0 is used
    std::string reason;        // why not usable ("" when usable)
    int device_count = 0;
    std::string name;          // device 0's name, "" when none
    int cc_major = 0, cc_minor = 0;      // its compute capability
    int64_t total_memory = 0;  // bytes
    int runtime_version = 0;   // CUDA runtime the part was built with, e.g. 13000
    int driver_version = 0;    // the driver's CUDA version, 0 when there is no driver
    std::vector<std::string> archs;  // what the part was compiled for, e.g. "sm_80"
};
DeviceInfo device_info();

// Throws std::runtime_error saying why (not compiled in, no driver, no GPU) unless usable.
void require_device();

// Optimiser of a GpuNet's update, with torch.optim's rules (optim.h).
struct OptimConfig {
    enum Kind { kSgd, kAdam } kind = kSgd;
    float momentum = 0.0f, weight_decay = 0.0f;  // SGD (weight_decay also Adam's)
    bool nesterov = false;
    double beta1 = 0.9, beta2 = 0.999;  // Adam (double: its bias correction is 1 - beta^t)
    float eps = 1e-8f;
};

// Per-step results of GpuNet::train_*: the mean loss (NaN/Inf as computed), the number of
// correctly classified samples, and whether the update was applied.
struct StepResult {
    double loss = 0.0;
    int64_t correct = 0;
    bool applied = false;
};

struct Impl;  // cuda/impl.h

// Calls on one GpuNet are serialised by a mutex; separate GpuNets run concurrently.
class GpuNet {
public:
    // Validates the chain as Net does (std::invalid_argument with the same messages) and, for
    // a device net, that every kind has CUDA kernels (std::invalid_argument naming the kind);
    // emulate=false needs a usable device (require_device). Device memory is allocated here.
    GpuNet(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W, bool emulate);
    ~GpuNet();
    GpuNet(const GpuNet&) = delete;
    GpuNet& operator=(const GpuNet&) = delete;

    const std::vector<Shape>& param_shapes() const;
    const std::vector<Shape>& buffer_shapes() const;
    Shape input_shape() const;
    int64_t out_features() const;
    bool emulated() const;
    bool penalty_output() const;

    // Uploads the parameters that differ from what was last uploaded or downloaded (compared
    // against a host copy), in param_shapes order; host[i] holds numel(param_shapes[i]).
    void set_params(const std::vector<const float*>& host);
    // Copies the device parameters into host[i] (overwritten).
    void get_params(const std::vector<float*>& host);
    // The buffers (BatchNorm's running statistics; buffer_shapes order): training on the device
    // moves them there; get_buffers copies them back.
    void set_buffers(const std::vector<const float*>& host);
    void get_buffers(const std::vector<float*>& host);

    // The optimiser and its state. slots: SGD with momentum 1 (the momentum buffer), Adam 2
    // (m, v), else 0; `steps` the updates done so far (Adam's bias correction). Without state
    // (has_state false) SGD's first update starts its buffer at the gradient and Adam's
    // moments start at 0; set_optimizer resets to that.
    void set_optimizer(const OptimConfig& config);
    int state_slots() const;
    // state[slot][param] host arrays (param_shapes sizes); has_state false: start fresh.
    void set_optimizer_state(const std::vector<std::vector<const float*>>& state, bool has_state,
                             int64_t steps);
    void get_optimizer_state(const std::vector<std::vector<float*>>& state);
    int64_t optimizer_steps() const;

    // The checks of the calls below, Net's own (std::invalid_argument): x (N, C, H, W), arrays
    // of param_shapes (`what` names them), labels (N,) in [0, classes), uint8 images (N, h, w)
    // padded by pad to (H, W) with C == 1.
    void check_input(const Shape& x) const;
    void check_params(const char* what, const std::vector<Shape>& shapes) const;
    void check_buffers(const std::vector<Shape>& shapes) const;
    void check_train_step(const Shape& x, const Shape& labels_shape, const int64_t* labels) const;
    void check_predict_u8(const Shape& images, int64_t pad, int64_t lut_size) const;

    // out (N, classes) = the network applied to x (N, C, H, W) (host arrays).
    void forward(float* out, const float* x, int64_t N);
    // probs (N, classes): Net::predict_u8 on the device.
    void predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                    int64_t pad, const float* lut);

    // One training step on a host batch: forward, loss (`loss` names a loss kind), backward
    // and the optimiser update at rate lr; the update is skipped when the loss is not finite.
    // out (N, classes), when not null, receives the outputs. noise: Dropout's, as Net's;
    // smoothing: cross-entropy's label smoothing.
    StepResult train_step(float* out, const float* x, const int64_t* labels, int64_t N,
                          float lr, const std::string& loss, const StepNoise& noise,
                          float smoothing = 0.0f);

    // Keeps a uint8 dataset (N, h, w) with labels on the device, prepared as predict_u8 does
    // (padded by pad, mapped through lut) for train_indices. Replaces any earlier one.
    void set_dataset(const uint8_t* images, const int64_t* labels, int64_t N, int64_t h,
                     int64_t w, int64_t pad, const float* lut);
    int64_t dataset_size() const;
    // Steps over the device dataset: step s trains on samples indices[s*batch ...] (the last
    // step takes what is left), at rate lrs[s]. A non-finite loss skips that step's update;
    // with stop_on_nonfinite, every later step's update is skipped too (their results say
    // applied = false). One synchronisation, at the end, to read the results. Dropout's
    // sample indices run from noise.first for indices[0].
    std::vector<StepResult> train_indices(const int64_t* indices, int64_t count, int64_t batch,
                                          const float* lrs, const std::string& loss,
                                          bool stop_on_nonfinite, const StepNoise& noise,
                                          float smoothing = 0.0f);

    // Test hooks. backward: forward of x (N, C, H, W), then backward from the output
    // gradient dy (N, classes): dx (N, C, H, W) and grads[i] (param_shapes) overwritten, no
    // update. loss: the loss kind's mean over out (N, classes) and its gradient dout.
    void backward(float* dx, const std::vector<float*>& grads, const float* x, const float* dy,
                  int64_t N);
    double loss(float* dout, const float* out, const int64_t* labels, int64_t N,
                const std::string& loss);
    // (h, w, pad) of the uploaded dataset.
    Shape dataset_image() const;

private:
    std::unique_ptr<Impl> impl_;
    std::mutex mutex_;  // one call at a time per GpuNet (shared device buffers)
};

}  // namespace gpu
}  // namespace pylenet
