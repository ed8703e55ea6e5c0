// GpuNet (gpu.h): validation shared with Net, then each call forwarded to the backend's
// implementation (cuda/net_impl.h); the host emulation is instantiated here.
#include <stdexcept>
#include <string>

#include "cuda/gpu.h"
#include "cuda/host_backend.h"
#include "cuda/impl.h"
#include "cuda/net_impl.h"

namespace pylenet {
namespace gpu {

std::unique_ptr<Impl> make_host_impl(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W) {
    return std::make_unique<NetImpl<HostBackend>>(std::move(layers), C, H, W, true);
}

DeviceInfo device_info() { return cuda_device_info(); }

void require_device() {
    const DeviceInfo info = cuda_device_info();
    if (info.usable) return;
    if (!info.compiled)
        throw std::runtime_error("CUDA is not available: " + info.reason);
    throw std::runtime_error("CUDA is not available: pylenet was built with CUDA, but " + info.reason);
}

GpuNet::GpuNet(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W, bool emulate) {
    if (emulate) {
        impl_ = make_host_impl(std::move(layers), C, H, W);
    } else {
        // The chain is validated first (a bad chain is a ValueError wherever it runs).
        Net check(layers, C, H, W);
        (void)check;
        require_device();
        impl_ = make_device_impl(std::move(layers), C, H, W);
    }
}
GpuNet::~GpuNet() = default;

const std::vector<Shape>& GpuNet::param_shapes() const { return impl_->net().param_shapes(); }
const std::vector<Shape>& GpuNet::buffer_shapes() const { return impl_->net().buffer_shapes(); }
Shape GpuNet::input_shape() const { return impl_->net().input_shape(); }
int64_t GpuNet::out_features() const { return impl_->net().out_features(); }
bool GpuNet::emulated() const { return impl_->emulated(); }
bool GpuNet::penalty_output() const { return impl_->net().penalty_output(); }

void GpuNet::set_params(const std::vector<const float*>& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->set_params(host);
}
void GpuNet::get_params(const std::vector<float*>& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->get_params(host);
}
void GpuNet::set_buffers(const std::vector<const float*>& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->set_buffers(host);
}
void GpuNet::get_buffers(const std::vector<float*>& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->get_buffers(host);
}
void GpuNet::set_optimizer(const OptimConfig& config) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->set_optimizer(config);
}
int GpuNet::state_slots() const { return impl_->state_slots(); }
void GpuNet::set_optimizer_state(const std::vector<std::vector<const float*>>& state, bool has_state,
                                 int64_t steps) {
    if (steps < 0) throw std::invalid_argument("GpuNet: optimizer steps must be >= 0, got " + std::to_string(steps));
    if (has_state && int(state.size()) != impl_->state_slots())
        throw std::invalid_argument("GpuNet: the optimizer has " + std::to_string(impl_->state_slots()) +
                                    " state arrays per parameter, got " + std::to_string(state.size()));
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->set_optimizer_state(state, has_state, steps);
}
void GpuNet::get_optimizer_state(const std::vector<std::vector<float*>>& state) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->get_optimizer_state(state);
}
int64_t GpuNet::optimizer_steps() const { return impl_->optimizer_steps(); }

void GpuNet::check_input(const Shape& x) const { impl_->net().check_input(x); }
void GpuNet::check_params(const char* what, const std::vector<Shape>& shapes) const {
    impl_->net().check_params(what, shapes);
}
void GpuNet::check_buffers(const std::vector<Shape>& shapes) const { impl_->net().check_buffers(shapes); }
void GpuNet::check_train_step(const Shape& x, const Shape& labels_shape, const int64_t* labels) const {
    impl_->net().check_train_step(x, labels_shape, labels);
}
void GpuNet::check_predict_u8(const Shape& images, int64_t pad, int64_t lut_size) const {
    impl_->net().check_predict_u8(images, pad, lut_size);
}

void GpuNet::forward(float* out, const float* x, int64_t N) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->forward(out, x, N);
}
void GpuNet::predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                        int64_t pad, const float* lut) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->predict_u8(probs, images, N, h, w, pad, lut);
}
StepResult GpuNet::train_step(float* out, const float* x, const int64_t* labels, int64_t N, float lr,
                              const std::string& loss, const StepNoise& noise, float smoothing) {
    const LossKindInfo& kind = loss_kind(loss);
    check_loss_smoothing("GpuNet.train_step", kind, smoothing);
    std::lock_guard<std::mutex> lock(mutex_);
    return impl_->train_step(out, x, labels, N, lr, kind, noise, smoothing);
}
void GpuNet::set_dataset(const uint8_t* images, const int64_t* labels, int64_t N, int64_t h, int64_t w,
                         int64_t pad, const float* lut) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->set_dataset(images, labels, N, h, w, pad, lut);
}
int64_t GpuNet::dataset_size() const { return impl_->dataset_size(); }
std::vector<StepResult> GpuNet::train_indices(const int64_t* indices, int64_t count, int64_t batch,
                                              const float* lrs, const std::string& loss,
                                              bool stop_on_nonfinite, const StepNoise& noise,
                                              float smoothing) {
    check_at_least("GpuNet.train_indices", "batch", batch, 1);
    if (impl_->dataset_size() == 0 && count > 0)
        throw std::invalid_argument("GpuNet.train_indices: no dataset on the device (call set_dataset first)");
    check_indices("GpuNet.train_indices", "indices", indices, count, impl_->dataset_size());
    std::lock_guard<std::mutex> lock(mutex_);
    if (count > 0) {  // every step's batch size, the last one's too
        impl_->net().check_batch(std::min(batch, count));
        impl_->net().check_batch(count - (count - 1) / batch * batch);
    }
    const LossKindInfo& kind = loss_kind(loss);
    check_loss_smoothing("GpuNet.train_indices", kind, smoothing);
    return impl_->train_indices(indices, count, batch, lrs, kind, stop_on_nonfinite, noise, smoothing);
}
void GpuNet::backward(float* dx, const std::vector<float*>& grads, const float* x, const float* dy,
                      int64_t N) {
    std::lock_guard<std::mutex> lock(mutex_);
    impl_->backward(dx, grads, x, dy, N);
}
double GpuNet::loss(float* dout, const float* out, const int64_t* labels, int64_t N,
                    const std::string& loss) {
    std::lock_guard<std::mutex> lock(mutex_);
    return impl_->loss(dout, out, labels, N, loss_kind(loss));
}
Shape GpuNet::dataset_image() const { return impl_->dataset_image(); }

}  // namespace gpu
}  // namespace pylenet
