// The GPU network's logic, written once over a backend B that owns memory and runs kernels:
// cuda/backend.cu instantiates it for the device (nvcc), gpu_net.cpp for the host emulation
// (g++). It holds no CUDA call of its own, only B's:
//   void* alloc(size_t) / release(void*)       device memory
//   upload(dst, src, bytes) / download(...)    stream-ordered copies (download waits)
//   zero(dst, bytes)                           stream-ordered memset
//   launch(n, functor)                         functor(i) for every i < n (element.h)
//   run(key, fn)                               fn() enqueues a program; it is captured once
//                                              per GraphKey (a CUDA graph) and replayed
//   forget()                                   drops the captured graphs (buffers moved)
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/element.h"
#include "cuda/impl.h"
#include "net/net.h"
#include "ops/dropout.h"

namespace pylenet {
namespace gpu {

// Device memory of T, resized by its owner (resizing drops the backend's graphs).
template <class B, class T>
struct DeviceArray {
    B* backend = nullptr;
    T* ptr = nullptr;
    int64_t size = 0;
    ~DeviceArray() {
        if (ptr) backend->release(ptr);
    }
    // At least n elements; returns whether the memory moved. The new memory comes first, so a
    // failed allocation (out of memory) leaves the array and the captured programs as they
    // were; the programs are dropped before the old memory is released, because a replay of
    // one would read it.
    bool reserve(B* b, int64_t n) {
        backend = b;
        if (n <= size && ptr) return false;
        T* fresh = static_cast<T*>(backend->alloc(sizeof(T) * size_t(std::max<int64_t>(n, 1))));
        if (ptr) {
            backend->forget();
            backend->release(ptr);
        }
        ptr = fresh;
        size = n;
        return true;
    }
};

// How one layer runs on the device: its registry family (registry.h) and what that needs.
struct GLayer {
    Family family = Family::kFlatten;
    Unary unary = Unary::kRelu;
    float a = 0.0f, b = 0.0f;         // an element-wise kind's attributes
    ConvGeom conv{};                  // N is set per call
    PoolGeom pool{};
    int64_t I = 0, O = 0;             // linear, RBF
    int64_t C = 0, HW = 1;            // BatchNorm, global pooling: channels, values per channel
    float eps = 0.0f, momentum = 0.0f;  // BatchNorm
    int64_t state = -1, buffer = -1;  // BatchNorm: offsets into the batch states and the buffers
    uint32_t threshold = 0;           // Dropout: drop threshold and the kept values' scale
    float scale = 1.0f;
    int64_t index = 0;                // the layer's position in the chain (Dropout's noise)
    int64_t in_size = 0, out_size = 0;
    int64_t w = -1, bias = -1;        // offsets into the flat parameters (-1: none)
    int64_t konst = -1;               // offset of its constant (mask, centres) in consts
    int in_slot = 0, out_slot = 0;    // activation slots
    int64_t argmax = -1;              // offset (per sample) into the argmax buffer
    bool relu_after = false;          // writes relu(out): the next layer is a fused ReLU
    bool skip = false;                // a ReLU fused into the layer before, or a Flatten
};

template <class B>
class NetImpl final : public Impl {
public:
    NetImpl(std::vector<LayerDesc> descs, int64_t C, int64_t H, int64_t W, bool emulated)
        : net_(descs, C, H, W), emulated_(emulated) {
        plan();
    }
    // The captured programs go before the memory they use (the arrays are destroyed first).
    ~NetImpl() override { b_.forget(); }

    const Net& net() const override { return net_; }
    bool emulated() const override { return emulated_; }

    // ------------------------------------------------------------ parameters and optimiser
    void set_params(const std::vector<const float*>& host) override {
        const auto& shapes = net_.param_shapes();
        for (size_t i = 0; i < shapes.size(); i++) {
            const int64_t n = numel(shapes[i]);
            float* shadow = shadow_.data() + param_off_[i];
            if (uploaded_ && !trained_ && std::memcmp(shadow, host[i], sizeof(float) * size_t(n)) == 0)
                continue;
            b_.upload(params_.ptr + param_off_[i], host[i], sizeof(float) * size_t(n));
            std::memcpy(shadow, host[i], sizeof(float) * size_t(n));  // what the device now holds
        }
        uploaded_ = true;
        trained_ = false;
    }

    void get_params(const std::vector<float*>& host) override {
        b_.download(shadow_.data(), params_.ptr, sizeof(float) * shadow_.size());
        uploaded_ = true;  // the shadow holds the device's values again
        trained_ = false;
        const auto& shapes = net_.param_shapes();
        for (size_t i = 0; i < shapes.size(); i++)
            std::memcpy(host[i], shadow_.data() + param_off_[i], sizeof(float) * size_t(numel(shapes[i])));
    }

    void set_buffers(const std::vector<const float*>& host) override {
        const auto& shapes = net_.buffer_shapes();
        for (size_t i = 0; i < shapes.size(); i++)
            b_.upload(buffers_.ptr + buffer_off_[i], host[i], sizeof(float) * size_t(numel(shapes[i])));
    }

    void get_buffers(const std::vector<float*>& host) override {
        const auto& shapes = net_.buffer_shapes();
        for (size_t i = 0; i < shapes.size(); i++)
            b_.download(host[i], buffers_.ptr + buffer_off_[i], sizeof(float) * size_t(numel(shapes[i])));
    }

    void set_optimizer(const OptimConfig& c) override {
        const bool same = c.kind == opt_.kind && c.momentum == opt_.momentum &&
                          c.weight_decay == opt_.weight_decay && c.nesterov == opt_.nesterov &&
                          c.beta1 == opt_.beta1 && c.beta2 == opt_.beta2 && c.eps == opt_.eps;
        opt_ = c;
        if (!same) b_.forget();  // the update's constants are part of the captured programs
        ctrl_.buf_ready = 0;
        ctrl_.opt_steps = 0;
        b_.zero(state0_.ptr, sizeof(float) * size_t(total_));
        b_.zero(state1_.ptr, sizeof(float) * size_t(total_));
    }
    int state_slots() const override {
        if (opt_.kind == OptimConfig::kAdam) return 2;
        return opt_.momentum != 0.0f ? 1 : 0;
    }
    void set_optimizer_state(const std::vector<std::vector<const float*>>& state, bool has_state,
                             int64_t steps) override {
        float* slots[2] = {state0_.ptr, state1_.ptr};
        b_.zero(state0_.ptr, sizeof(float) * size_t(total_));
        b_.zero(state1_.ptr, sizeof(float) * size_t(total_));
        const auto& shapes = net_.param_shapes();
        if (has_state)
            for (size_t s = 0; s < state.size() && s < 2; s++)
                for (size_t i = 0; i < shapes.size(); i++)
                    b_.upload(slots[s] + param_off_[i], state[s][i], sizeof(float) * size_t(numel(shapes[i])));
        ctrl_.buf_ready = has_state ? 1 : 0;
        ctrl_.opt_steps = steps;
    }
    void get_optimizer_state(const std::vector<std::vector<float*>>& state) override {
        const float* slots[2] = {state0_.ptr, state1_.ptr};
        std::vector<float> tmp(static_cast<size_t>(total_));
        const auto& shapes = net_.param_shapes();
        for (size_t s = 0; s < state.size() && s < 2; s++) {
            b_.download(tmp.data(), slots[s], sizeof(float) * tmp.size());
            for (size_t i = 0; i < shapes.size(); i++)
                std::memcpy(state[s][i], tmp.data() + param_off_[i], sizeof(float) * size_t(numel(shapes[i])));
        }
    }
    int64_t optimizer_steps() const override { return ctrl_.opt_steps; }

    // ------------------------------------------------------------ inference
    void forward(float* out, const float* x, int64_t N) override {
        const int64_t in = net_.input_shape()[0] * net_.input_shape()[1] * net_.input_shape()[2];
        for (int64_t n0 = 0; n0 < N; n0 += kMaxChunk) {
            const int64_t n = std::min(kMaxChunk, N - n0);
            reserve(n);
            b_.upload(acts_[0].ptr, x + n0 * in, sizeof(float) * size_t(n * in));
            b_.run(key(kProgForward, 0, n), [&] { enqueue_forward(n, false); });
            b_.download(out + n0 * classes(), acts_[out_slot()].ptr, sizeof(float) * size_t(n * classes()));
        }
    }

    void predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                    int64_t pad, const float* lut) override {
        if (lut_host_.empty() || std::memcmp(lut_host_.data(), lut, sizeof(float) * 256) != 0) {
            lut_host_.clear();  // uploaded once per table, not per call; remembered once there
            b_.upload(lut_.ptr, lut, sizeof(float) * 256);
            lut_host_.assign(lut, lut + 256);
        }
        for (int64_t n0 = 0; n0 < N; n0 += kMaxChunk) {
            const int64_t n = std::min(kMaxChunk, N - n0);
            reserve(n);
            if (u8_.reserve(&b_, n * h * w)) b_.forget();
            b_.upload(u8_.ptr, images + n0 * h * w, size_t(n * h * w));
            b_.run(key(kProgPredict, 0, n, pad), [&] {
                const int64_t Hp = h + 2 * pad, Wp = w + 2 * pad;
                b_.launch(n * Hp * Wp, PrepareU8{acts_[0].ptr, u8_.ptr, nullptr, nullptr, lut_.ptr, h, w, pad});
                enqueue_forward(n, false);
                b_.launch(n, SoftmaxRows{probs_.ptr, acts_[out_slot()].ptr, classes(), net_.penalty_output()});
            });
            b_.download(probs + n0 * classes(), probs_.ptr, sizeof(float) * size_t(n * classes()));
        }
    }

    // ------------------------------------------------------------ training
    StepResult train_step(float* out, const float* x, const int64_t* labels, int64_t N, float lr,
                          const LossKindInfo& loss, const StepNoise& noise, float smoothing) override {
        reserve(N);
        steps_capacity(1);
        const int64_t in = N * net_.input_shape()[0] * net_.input_shape()[1] * net_.input_shape()[2];
        b_.upload(acts_[0].ptr, x, sizeof(float) * size_t(in));
        b_.upload(labels_.ptr, labels, sizeof(int64_t) * size_t(N));
        b_.upload(lrs_.ptr, &lr, sizeof(float));
        begin_run(false, noise);
        trained_ = true;  // the device parameters may now differ from the shadow
        b_.run(key(kProgTrainHost, int(loss.kind), N, 0, smoothing), [&] { enqueue_train(N, loss, N, false, smoothing); });
        std::vector<StepResult> r = end_run(1);
        if (out) b_.download(out, acts_[out_slot()].ptr, sizeof(float) * size_t(N * classes()));
        return r[0];
    }

    void set_dataset(const uint8_t* images, const int64_t* labels, int64_t N, int64_t h, int64_t w,
                     int64_t pad, const float* lut) override {
        data_n_ = 0;  // no dataset until this one is whole on the device (a failure leaves none)
        b_.forget();
        data_.reserve(&b_, N * h * w);
        data_labels_.reserve(&b_, N);
        b_.upload(data_.ptr, images, size_t(N * h * w));
        b_.upload(data_labels_.ptr, labels, sizeof(int64_t) * size_t(N));
        b_.upload(data_lut_.ptr, lut, sizeof(float) * 256);
        data_h_ = h;
        data_w_ = w;
        data_pad_ = pad;
        data_n_ = N;
    }
    int64_t dataset_size() const override { return data_n_; }
    Shape dataset_image() const override { return {data_h_, data_w_, data_pad_}; }

    std::vector<StepResult> train_indices(const int64_t* indices, int64_t count, int64_t batch,
                                          const float* lrs, const LossKindInfo& loss,
                                          bool stop_on_nonfinite, const StepNoise& noise,
                                          float smoothing) override {
        const int64_t steps = (count + batch - 1) / batch;
        if (steps == 0) return {};
        reserve(std::min(batch, count));
        steps_capacity(steps);
        if (idx_.reserve(&b_, count)) b_.forget();
        b_.upload(idx_.ptr, indices, sizeof(int64_t) * size_t(count));
        b_.upload(lrs_.ptr, lrs, sizeof(float) * size_t(steps));
        begin_run(stop_on_nonfinite, noise);
        trained_ = true;
        const int64_t full = count / batch, rest = count - full * batch;
        for (int64_t s = 0; s < full; s++)
            b_.run(key(kProgTrainData, int(loss.kind), batch, batch, smoothing),
                   [&] { enqueue_train(batch, loss, batch, true, smoothing); });
        if (rest)  // its step counter still advances by `batch`: part of the key
            b_.run(key(kProgTrainData, int(loss.kind), rest, batch, smoothing),
                   [&] { enqueue_train(rest, loss, batch, true, smoothing); });
        return end_run(steps);
    }

    // ------------------------------------------------------------ test hooks
    void backward(float* dx, const std::vector<float*>& grads, const float* x, const float* dy,
                  int64_t N) override {
        reserve(N);
        const Shape is = net_.input_shape();
        const int64_t in = N * is[0] * is[1] * is[2];
        b_.upload(acts_[0].ptr, x, sizeof(float) * size_t(in));
        begin_run(false, StepNoise{});
        enqueue_forward(N, true);
        b_.upload(grad_a_.ptr, dy, sizeof(float) * size_t(N * classes()));
        const float* g = enqueue_backward(N, true, true);
        b_.download(dx, g, sizeof(float) * size_t(in));
        std::vector<float> flat(static_cast<size_t>(total_));
        b_.download(flat.data(), grads_.ptr, sizeof(float) * flat.size());
        const auto& shapes = net_.param_shapes();
        for (size_t i = 0; i < shapes.size(); i++)
            std::memcpy(grads[i], flat.data() + param_off_[i], sizeof(float) * size_t(numel(shapes[i])));
    }

    double loss(float* dout, const float* out, const int64_t* labels, int64_t N,
                const LossKindInfo& loss) override {
        reserve(N);
        steps_capacity(1);
        b_.upload(acts_[out_slot()].ptr, out, sizeof(float) * size_t(N * classes()));
        b_.upload(labels_.ptr, labels, sizeof(int64_t) * size_t(N));
        begin_run(false, StepNoise{});
        enqueue_loss(N, loss, 0.0f);  // no EndStep: a loss alone is not an optimiser step
        std::vector<StepResult> r = end_run(1);
        b_.download(dout, grad_a_.ptr, sizeof(float) * size_t(N * classes()));
        return r[0].loss;
    }

private:
    static constexpr int64_t kMaxChunk = 8192;  // samples per inference program
    enum Prog { kProgForward = 1, kProgPredict, kProgTrainHost, kProgTrainData };
    // A captured program's key: what it runs, its loss, the batch and one more parameter.
    static GraphKey key(int prog, int loss, int64_t n, int64_t extra = 0, float smoothing = 0.0f) {
        return {prog, loss, n, extra, smoothing};
    }

    int64_t classes() const { return net_.out_features(); }
    int out_slot() const { return layers_.back().out_slot; }

    // From the validated Net's layers, what each runs on the device (by its registry family)
    // and where it reads and writes; allocates the parameters, their gradients, the buffers,
    // the optimiser state and the batch states.
    void plan() {
        for (const Shape& s : net_.param_shapes()) {
            param_off_.push_back(total_);
            total_ += numel(s);
        }
        for (const Shape& s : net_.buffer_shapes()) {
            buffer_off_.push_back(total_buffers_);
            total_buffers_ += numel(s);
        }
        std::vector<float> consts;
        int64_t per_sample_argmax = 0, states = 0;
        slot_size_.push_back(numel(net_.input_shape()));
        const auto& ls = net_.layers();
        for (size_t i = 0; i < ls.size(); i++) {
            const NetLayer& L = ls[i];
            const LayerKindInfo& kind = *L.desc.kind;
            GLayer g;
            g.family = kind.family;
            g.index = int64_t(i);
            g.in_size = L.in_size;
            g.out_size = L.out_size;
            g.w = L.weight >= 0 ? param_off_[size_t(L.weight)] : -1;
            g.bias = L.bias >= 0 ? param_off_[size_t(L.bias)] : -1;
            if (!L.desc.constant.empty()) {
                g.konst = int64_t(consts.size());
                consts.insert(consts.end(), L.desc.constant.begin(), L.desc.constant.end());
            }
            switch (g.family) {
                case Family::kConv: {
                    const Conv2dParams& c = L.conv;
                    g.conv = {0, c.C, c.H, c.W, c.K, c.R, c.S, c.stride, c.pad, c.out_h(), c.out_w()};
                    break;
                }
                case Family::kMaxPool:
                    g.argmax = per_sample_argmax;
                    per_sample_argmax += L.out_size;
                    [[fallthrough]];
                case Family::kAvgPool:
                case Family::kSubsample: {
                    const Pool2dParams& p = L.pool;
                    g.pool = {0, p.C, p.H, p.W, p.kernel, p.stride, p.out_h(), p.out_w()};
                    break;
                }
                case Family::kLinear:
                case Family::kRbf:
                    g.I = L.linear.I;
                    g.O = L.linear.O;
                    break;
                case Family::kElementwise:
                    g.unary = kind.unary;
                    g.a = L.desc.values.size() > 0 ? L.desc.f(0) : 0.0f;
                    g.b = L.desc.values.size() > 1 ? L.desc.f(1) : 0.0f;
                    break;
                case Family::kBatchNorm:
                case Family::kGlobalAvgPool:
                    g.C = L.in_shape[0];
                    g.HW = L.in_size / g.C;
                    if (g.family == Family::kBatchNorm) {
                        g.eps = float(L.desc.values[kind.attr("eps")]);
                        g.momentum = float(L.desc.values[kind.attr("momentum")]);
                        g.buffer = buffer_off_[size_t(L.buffer)];
                        g.state = states;
                        states += 4 * g.C;
                    }
                    break;
                case Family::kDropout: {
                    const double p = L.desc.values[kind.attr("p")];
                    g.threshold = drop_threshold(p);
                    g.scale = dropout_scale(p);
                    break;
                }
                case Family::kFlatten:
                    break;
            }
            // Slots: a Flatten and a ReLU fused into the layer before share its input's slot.
            const GLayer* prev = layers_.empty() ? nullptr : &layers_.back();
            g.in_slot = prev ? prev->out_slot : 0;
            const bool fused = kind.is_relu() && prev && prev->relu_after;
            if (g.family == Family::kFlatten || fused) {
                g.skip = true;
                g.out_slot = g.in_slot;
            } else {
                g.out_slot = int(slot_size_.size());
                slot_size_.push_back(L.out_size);
            }
            if (kind.fuses_relu && i + 1 < ls.size() && ls[i + 1].desc.kind->is_relu()) g.relu_after = true;
            layers_.push_back(g);
            max_act_ = std::max(max_act_, std::max(L.in_size, L.out_size));
        }
        argmax_per_sample_ = per_sample_argmax;
        shadow_.assign(size_t(total_), 0.0f);
        params_.reserve(&b_, total_);
        grads_.reserve(&b_, total_);
        state0_.reserve(&b_, total_);
        state1_.reserve(&b_, total_);
        buffers_.reserve(&b_, total_buffers_);
        bn_states_.reserve(&b_, states);
        int64_t widest = 1;
        for (const GLayer& g : layers_)
            if (g.family == Family::kBatchNorm) widest = std::max(widest, 2 * g.C);
        bn_total_.reserve(&b_, widest);
        b_.zero(params_.ptr, sizeof(float) * size_t(total_));
        b_.zero(state0_.ptr, sizeof(float) * size_t(total_));
        b_.zero(state1_.ptr, sizeof(float) * size_t(total_));
        b_.zero(buffers_.ptr, sizeof(float) * size_t(std::max<int64_t>(total_buffers_, 1)));
        consts_.reserve(&b_, int64_t(consts.size()));
        if (!consts.empty()) b_.upload(consts_.ptr, consts.data(), sizeof(float) * consts.size());
        lut_.reserve(&b_, 256);
        data_lut_.reserve(&b_, 256);
        ctrl_dev_.reserve(&b_, 1);
        acts_.resize(slot_size_.size());
    }

    // Sizes every per-sample buffer for batches of n (grows only; moving memory drops graphs).
    // cap_ changes only once every buffer holds n: after a failed allocation the buffers
    // still hold the old capacity (DeviceArray::reserve), and so does cap_.
    void reserve(int64_t n) {
        if (n <= cap_) return;
        bool moved = false;
        for (size_t s = 0; s < acts_.size(); s++) moved |= acts_[s].reserve(&b_, n * slot_size_[s]);
        moved |= grad_a_.reserve(&b_, n * max_act_);
        moved |= grad_b_.reserve(&b_, n * max_act_);
        moved |= argmax_.reserve(&b_, n * std::max<int64_t>(argmax_per_sample_, 1));
        moved |= labels_.reserve(&b_, n);
        moved |= row_loss_.reserve(&b_, n);
        moved |= row_ok_.reserve(&b_, n);
        moved |= probs_.reserve(&b_, n * classes());
        int64_t part = 1;
        for (const GLayer& g : layers_) part = std::max(part, chunk_floats(g, n));
        moved |= part_.reserve(&b_, part);
        if (moved) b_.forget();
        cap_ = n;
    }
    void steps_capacity(int64_t steps) {
        bool moved = lrs_.reserve(&b_, steps);
        moved |= results_.reserve(&b_, steps);
        if (moved) b_.forget();
    }

    // Floats of chunk sums the layer's batch reductions need for a batch of n.
    static int64_t chunk_floats(const GLayer& g, int64_t n) {
        if (g.family == Family::kConv) {
            const ConvGeom& c = g.conv;
            return (c.K * c.C * c.R * c.S + c.K) * chunks_of(n * c.P * c.Q);
        }
        if (g.family == Family::kLinear) return (g.O * g.I + g.O) * chunks_of(n);
        if (g.family == Family::kSubsample) return 2 * g.pool.C * chunks_of(n * g.pool.P * g.pool.Q);
        if (g.family == Family::kBatchNorm) return 2 * g.C * chunks_of(n * g.HW);
        return 0;
    }

    // The layer's geometry for a batch of n.
    static ConvGeom conv_at(const GLayer& g, int64_t n) {
        ConvGeom c = g.conv;
        c.N = n;
        return c;
    }
    static PoolGeom pool_at(const GLayer& g, int64_t n) {
        PoolGeom p = g.pool;
        p.N = n;
        return p;
    }

    float* param(int64_t off) const { return off >= 0 ? params_.ptr + off : nullptr; }
    const float* konst(const GLayer& g) const { return g.konst >= 0 ? consts_.ptr + g.konst : nullptr; }
    float* bn_state(const GLayer& g) const { return bn_states_.ptr + g.state; }

    // Every layer's forward for the n samples in slot 0; training keeps the argmax, uses the
    // batch's statistics (moving the running ones) and drops out.
    void enqueue_forward(int64_t n, bool training) {
        for (const GLayer& g : layers_) {
            if (g.skip) continue;
            const float* x = acts_[size_t(g.in_slot)].ptr;
            float* y = acts_[size_t(g.out_slot)].ptr;
            switch (g.family) {
                case Family::kConv: {
                    const ConvGeom c = conv_at(g, n);
                    b_.launch(n * channel_blocks(c.K) * c.P * c.Q,
                              ConvForward{y, x, param(g.w), param(g.bias), konst(g), c, g.relu_after});
                    break;
                }
                case Family::kMaxPool: {
                    const PoolGeom p = pool_at(g, n);
                    b_.launch(n * g.out_size,
                              MaxPoolForward{y, training ? argmax_.ptr + n * g.argmax : nullptr, x, p});
                    break;
                }
                case Family::kAvgPool:
                case Family::kSubsample: {
                    const PoolGeom p = pool_at(g, n);
                    const bool sub = g.family == Family::kSubsample;
                    b_.launch(n * g.out_size, AvgPoolForward{y, x, sub ? param(g.w) : nullptr,
                                                             sub ? param(g.bias) : nullptr, p});
                    break;
                }
                case Family::kGlobalAvgPool:
                    b_.launch(n * g.C, GlobalAvgForward{y, x, g.HW});
                    break;
                case Family::kElementwise:
                    b_.launch(n * g.out_size, UnaryForward{y, x, g.unary, g.a, g.b});
                    break;
                case Family::kLinear:
                    b_.launch(n * g.O, LinearForward{y, x, param(g.w), param(g.bias), g.I, g.O, g.relu_after});
                    break;
                case Family::kRbf:
                    b_.launch(n * g.O, RbfForward{y, x, konst(g), g.I, g.O});
                    break;
                case Family::kBatchNorm:
                    enqueue_batchnorm(g, y, x, n, training);
                    break;
                case Family::kDropout:
                    if (training)
                        b_.launch(n * g.out_size, DropoutMask{y, x, ctrl_dev_.ptr, g.in_size, g.index, g.threshold, g.scale});
                    else
                        b_.launch(n * g.out_size, Copy{y, x});
                    break;
                case Family::kFlatten:
                    break;
            }
        }
    }

    // BatchNorm's forward: in training the batch's mean, then its variance about the mean
    // (chunk sums added in order), the batch state and the running statistics; in evaluation
    // the running statistics' scale and shift.
    void enqueue_batchnorm(const GLayer& g, float* y, const float* x, int64_t n, bool training) {
        float* state = bn_state(g);
        float* running = buffers_.ptr + g.buffer;
        if (training) {
            const int64_t T = chunks_of(n * g.HW);
            for (int pass = 0; pass < 2; pass++) {
                b_.launch(g.C * T, BatchNormChunks{part_.ptr, x, nullptr, state, n, g.C, g.HW, pass});
                b_.launch(g.C, ReduceChunks{bn_total_.ptr, part_.ptr, g.C, T});
                b_.launch(g.C, BatchNormFinish{state, running, bn_total_.ptr, param(g.w), param(g.bias), g.C,
                                               n * g.HW, g.eps, g.momentum, pass});
            }
        } else {
            b_.launch(g.C, BatchNormEvalAffine{state, running, param(g.w), param(g.bias), g.C, g.eps});
        }
        b_.launch(n * g.C * g.HW, BatchNormApply{y, x, state, g.C, g.HW, g.relu_after});
    }

    // Loss rows into grad_a and the step's result slot (ctrl: apply or not).
    void enqueue_loss(int64_t n, const LossKindInfo& loss, float smoothing) {
        b_.launch(n, LossRows{grad_a_.ptr, row_loss_.ptr, row_ok_.ptr, acts_[out_slot()].ptr, labels_.ptr,
                              classes(), loss.kind, net_.penalty_output(), loss.scale(n, classes()), smoothing});
        b_.launch(1, FinishLoss{ctrl_dev_.ptr, results_.ptr, row_loss_.ptr, row_ok_.ptr, n,
                                loss.mean_count(n, classes())});
    }

    // Backward from the output gradient in grad_a: every layer's weight gradients into grads
    // (overwritten) and, with input_grad, the input's gradient; returns where that lies.
    const float* enqueue_backward(int64_t n, bool input_grad, bool training) {
        float* dy = grad_a_.ptr;
        float* spare = grad_b_.ptr;
        bool relu_folded = false;  // the ReLU before a max pool ran inside the pool's backward
        for (size_t li = layers_.size(); li-- > 0;) {
            const GLayer& g = layers_[li];
            if (g.family == Family::kFlatten) continue;
            if (relu_folded) {
                relu_folded = false;
                continue;
            }
            const bool need_dx = li > 0 || input_grad;
            const float* x = acts_[size_t(g.in_slot)].ptr;
            const float* y = acts_[size_t(g.out_slot)].ptr;
            // Element-wise layers (a fused ReLU too, reading its layer's output) run in place.
            if (g.family == Family::kElementwise) {
                const bool from_output = unary_from_output(g.unary);
                if (need_dx) b_.launch(n * g.in_size, UnaryBackward{dy, from_output ? y : x, y, dy, g.unary, g.a, g.b});
                continue;
            }
            switch (g.family) {
                case Family::kConv: {
                    const ConvGeom c = conv_at(g, n);
                    const int64_t E = c.K * c.C * c.R * c.S + (g.bias >= 0 ? c.K : 0);
                    const int64_t T = chunks_of(n * c.P * c.Q);
                    b_.launch(E * T, ConvWeightChunks{chunk_target(g.w, T), x, dy, konst(g), c, E});
                    reduce_into(g.w, E, T);
                    if (need_dx)
                        b_.launch(n * channel_blocks(c.C) * c.H * c.W,
                                  ConvBackwardInput{spare, dy, param(g.w), konst(g), c});
                    break;
                }
                case Family::kMaxPool: {
                    const PoolGeom p = pool_at(g, n);
                    const GLayer* before = li > 0 ? &layers_[li - 1] : nullptr;
                    relu_folded = need_dx && before && before->family == Family::kElementwise &&
                                  before->unary == Unary::kRelu;
                    if (need_dx)
                        b_.launch(n * g.in_size, MaxPoolBackward{spare, dy, argmax_.ptr + n * g.argmax,
                                                                 relu_folded ? x : nullptr, p});
                    break;
                }
                case Family::kAvgPool:
                case Family::kSubsample: {
                    const PoolGeom p = pool_at(g, n);
                    const bool sub = g.family == Family::kSubsample;
                    if (sub) {
                        const int64_t E = p.C + (g.bias >= 0 ? p.C : 0), T = chunks_of(n * p.P * p.Q);
                        b_.launch(E * T, SubsampleWeightChunks{chunk_target(g.w, T), x, dy, p, E});
                        reduce_into(g.w, E, T);
                    }
                    if (need_dx)
                        b_.launch(n * g.in_size, AvgPoolBackward{spare, dy, sub ? param(g.w) : nullptr, p});
                    break;
                }
                case Family::kGlobalAvgPool:
                    if (need_dx) b_.launch(n * g.in_size, GlobalAvgBackward{spare, dy, g.HW});
                    break;
                case Family::kLinear: {
                    const int64_t E = g.O * g.I + (g.bias >= 0 ? g.O : 0), T = chunks_of(n);
                    b_.launch(E * T, LinearWeightChunks{chunk_target(g.w, T), x, dy, n, g.I, g.O, E});
                    reduce_into(g.w, E, T);
                    if (need_dx) b_.launch(n * g.I, LinearBackwardInput{spare, dy, param(g.w), g.I, g.O});
                    break;
                }
                case Family::kRbf:
                    if (need_dx) b_.launch(n * g.I, RbfBackward{spare, x, konst(g), dy, g.I, g.O});
                    break;
                case Family::kBatchNorm: {
                    const float* state = bn_state(g);
                    const float* total = nullptr;
                    if (training) {
                        const int64_t T = chunks_of(n * g.HW);
                        b_.launch(2 * g.C * T, BatchNormChunks{part_.ptr, x, dy, state, n, g.C, g.HW, 2});
                        b_.launch(2 * g.C, ReduceChunks{bn_total_.ptr, part_.ptr, 2 * g.C, T});
                        b_.launch(g.C, BatchNormParamGrads{g.w >= 0 ? grads_.ptr + g.w : nullptr,
                                                           g.bias >= 0 ? grads_.ptr + g.bias : nullptr, state,
                                                           bn_total_.ptr, g.C});
                        total = bn_total_.ptr;
                    }
                    if (need_dx)
                        b_.launch(n * g.in_size, BatchNormBackwardInput{spare, x, dy, state, total, param(g.w),
                                                                        g.C, g.HW, n * g.HW});
                    break;
                }
                case Family::kDropout:
                    if (need_dx) {
                        if (training)
                            b_.launch(n * g.in_size, DropoutMask{spare, dy, ctrl_dev_.ptr, g.in_size, g.index,
                                                                 g.threshold, g.scale});
                        else
                            b_.launch(n * g.in_size, Copy{spare, dy});
                    }
                    break;
                default:
                    break;
            }
            if (need_dx) std::swap(dy, spare);
        }
        return dy;
    }

    // grads[w ...] = the chunk sums added in order. The weight's E entries, then its bias's,
    // lie in the chunk buffer in that order; both are contiguous in the flat gradients only
    // when the bias follows the weight, which param_shapes guarantees (weight, then bias).
    void reduce_into(int64_t w_off, int64_t E, int64_t T) {
        if (T > 1) b_.launch(E, ReduceChunks{grads_.ptr + w_off, part_.ptr, E, T});
    }
    // Where the chunk sums go: straight into the gradients when there is one chunk.
    float* chunk_target(int64_t w_off, int64_t T) { return T == 1 ? grads_.ptr + w_off : part_.ptr; }

    // The whole training step for n samples (from the dataset through the indices, or from
    // the uploaded batch), its loss, backward, update and step counter.
    void enqueue_train(int64_t n, const LossKindInfo& loss, int64_t batch, bool from_data, float smoothing) {
        if (from_data) {
            const int64_t Hp = data_h_ + 2 * data_pad_, Wp = data_w_ + 2 * data_pad_;
            b_.launch(n * Hp * Wp, PrepareU8{acts_[0].ptr, data_.ptr, idx_.ptr, &ctrl_dev_.ptr->first,
                                             data_lut_.ptr, data_h_, data_w_, data_pad_});
            b_.launch(n, GatherLabels{labels_.ptr, data_labels_.ptr, idx_.ptr, &ctrl_dev_.ptr->first});
        }
        enqueue_forward(n, true);
        enqueue_loss(n, loss, smoothing);
        enqueue_backward(n, false, true);
        b_.launch(total_, OptimizerUpdate{params_.ptr, state0_.ptr, state1_.ptr, grads_.ptr, lrs_.ptr,
                                          ctrl_dev_.ptr, opt_.kind == OptimConfig::kAdam ? 1 : 0,
                                          opt_.momentum, opt_.weight_decay, opt_.beta1, opt_.beta2,
                                          opt_.eps, opt_.nesterov});
        b_.launch(1, EndStep{ctrl_dev_.ptr, batch});
    }

    // The control block's host copy goes up before a run of steps and comes back after it.
    void begin_run(bool stop_on_nonfinite, const StepNoise& noise) {
        ctrl_.step = 0;
        ctrl_.first = 0;
        ctrl_.halted = 0;
        ctrl_.apply = 0;
        ctrl_.stop_on_nonfinite = stop_on_nonfinite ? 1 : 0;
        ctrl_.seed = noise.seed;
        ctrl_.epoch = noise.epoch;
        ctrl_.sample_base = noise.first;
        b_.upload(ctrl_dev_.ptr, &ctrl_, sizeof(StepControl));
    }
    std::vector<StepResult> end_run(int64_t steps) {
        b_.download(&ctrl_, ctrl_dev_.ptr, sizeof(StepControl));
        std::vector<StepSlot> slots(static_cast<size_t>(steps));
        b_.download(slots.data(), results_.ptr, sizeof(StepSlot) * slots.size());
        std::vector<StepResult> out(slots.size());
        for (size_t s = 0; s < slots.size(); s++) {
            out[s].loss = slots[s].loss;
            out[s].correct = slots[s].correct;
            out[s].applied = slots[s].applied != 0;
        }
        return out;
    }

    Net net_;
    bool emulated_;
    B b_;
    std::vector<GLayer> layers_;
    std::vector<int64_t> param_off_, buffer_off_, slot_size_;
    int64_t total_ = 0, total_buffers_ = 0, max_act_ = 0, argmax_per_sample_ = 0, cap_ = 0;
    std::vector<float> shadow_;  // what the device parameters hold (set_params compares)
    std::vector<float> lut_host_;  // what lut_ holds
    bool uploaded_ = false;
    bool trained_ = false;  // a step ran since the shadow last matched the device
    OptimConfig opt_;
    StepControl ctrl_{};
    DeviceArray<B, float> params_, grads_, state0_, state1_, buffers_, bn_states_, bn_total_, consts_, lut_, data_lut_;
    std::vector<DeviceArray<B, float>> acts_;
    DeviceArray<B, float> grad_a_, grad_b_, part_, probs_, lrs_;
    DeviceArray<B, int32_t> argmax_, row_ok_;
    DeviceArray<B, int64_t> labels_, idx_, data_labels_;
    DeviceArray<B, double> row_loss_;
    DeviceArray<B, uint8_t> u8_, data_;
    DeviceArray<B, StepSlot> results_;
    DeviceArray<B, StepControl> ctrl_dev_;
    int64_t data_n_ = 0, data_h_ = 0, data_w_ = 0, data_pad_ = 0;
};

}  // namespace gpu
}  // namespace pylenet
