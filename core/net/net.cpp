// The fused network: validation of the layer chain, block-parallel forward/backward over a
// batch (in phases around batch-coupled layers), and the in-order reduction of the per-block
// weight gradients.
#include "net/net.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "base/parallel.h"
#include "ops/losses.h"
#include "ops/noise.h"
#include "ops/preprocess.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pylenet {

namespace {
std::string layer_name(size_t i) { return "layer " + std::to_string(i); }
inline int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }
}  // namespace

Net::Net(std::vector<LayerDesc> descs, int64_t C, int64_t H, int64_t W) : C_(C), H_(H), W_(W) {
    if (descs.empty()) throw std::invalid_argument("Net: the layer list is empty");
    check_at_least("Net", "input channels", C, 1);
    check_at_least("Net", "input height", H, 1);
    check_at_least("Net", "input width", W, 1);
    Shape shape = {C, H, W};
    for (size_t i = 0; i < descs.size(); i++) {
        Layer L;
        L.desc = descs[i];
        L.index = i;
        L.in_shape = shape;
        if (!L.desc.kind) throw std::invalid_argument("Net: " + layer_name(i) + " has no kind");
        check_attrs(L.desc);
        L.in_size = numel(L.in_shape);
        shape = L.desc.kind->setup(L, layer_name(i), param_shapes_, buffer_shapes_);
        L.out_shape = shape;
        L.out_size = numel(L.out_shape);
        layers_.push_back(L);
    }
    if (shape.size() != 1)
        throw std::invalid_argument("Net: the last layer must output (features,), got " +
                                    shape_str(shape));
    out_features_ = shape[0];
    for (const Shape& s : param_shapes_) {
        param_offsets_.push_back(total_params_);
        total_params_ += round16(numel(s));  // each gradient on a 64-byte boundary
    }
    // Activation slots: slot 0 is the input (read in place); Flatten reuses its input's slot.
    int64_t offset = 0, arg_offset = 0;
    act_offsets_.push_back(-1);
    for (const Layer& L : layers_) {
        max_act_ = std::max(max_act_, std::max(L.in_size, L.out_size));
        if (L.desc.kind->in_place) {
            act_offsets_.push_back(act_offsets_.back());
        } else {
            act_offsets_.push_back(offset);
            offset += round16(L.out_size);  // each slot starts on a 64-byte boundary
        }
        argmax_offsets_.push_back(arg_offset);
        if (L.desc.kind->keeps_argmax) arg_offset += L.out_size;
        if (L.desc.kind->coupled()) {
            coupled_.push_back(L.index);
            stat_offsets_.push_back(stat_width_);
            state_offsets_.push_back(state_width_);
            stat_width_ += L.desc.kind->stat_size(L);
            state_width_ += L.desc.kind->state_size(L);
        }
    }
    act_offsets_.push_back(offset);  // total floats per sample
    argmax_offsets_.push_back(arg_offset);
}

void Net::check_input(const Shape& xs) const {
    if (xs.size() != 4 || xs[1] != C_ || xs[2] != H_ || xs[3] != W_)
        throw std::invalid_argument("Net: x must have shape (N, " + std::to_string(C_) + ", " +
                                    std::to_string(H_) + ", " + std::to_string(W_) + "), got " +
                                    shape_str(xs));
}

void Net::check_params(const char* what, const std::vector<Shape>& shapes) const {
    if (shapes.size() != param_shapes_.size())
        throw std::invalid_argument("Net: expected " + std::to_string(param_shapes_.size()) + " " +
                                    what + " arrays, got " + std::to_string(shapes.size()));
    for (size_t i = 0; i < shapes.size(); i++)
        if (shapes[i] != param_shapes_[i])
            throw std::invalid_argument("Net: " + std::string(what) + " " + std::to_string(i) +
                                        " has shape " + shape_str(shapes[i]) + ", expected " +
                                        shape_str(param_shapes_[i]));
}

void Net::check_buffers(const std::vector<Shape>& shapes) const {
    if (shapes.size() != buffer_shapes_.size())
        throw std::invalid_argument("Net: expected " + std::to_string(buffer_shapes_.size()) +
                                    " buffer arrays (running statistics), got " +
                                    std::to_string(shapes.size()));
    for (size_t i = 0; i < shapes.size(); i++)
        if (shapes[i] != buffer_shapes_[i])
            throw std::invalid_argument("Net: buffer " + std::to_string(i) + " has shape " +
                                        shape_str(shapes[i]) + ", expected " +
                                        shape_str(buffer_shapes_[i]));
}

void Net::check_train_step(const Shape& xs, const Shape& ls, const int64_t* labels) const {
    check_input(xs);
    const int64_t N = xs[0];
    if (N < 1) throw std::invalid_argument("Net.train_step: the batch is empty");
    if (ls != Shape{N})
        throw std::invalid_argument("Net.train_step: labels must have shape (" + std::to_string(N) +
                                    ",), got " + shape_str(ls));
    check_indices("Net.train_step", "labels", labels, N, out_features_);
    check_batch(N);
}

void Net::check_batch(int64_t N) const {
    if (N < 1) throw std::invalid_argument("Net.train_step: the batch is empty");
    for (size_t c : coupled_) {
        const Layer& L = layers_[c];
        if (N * (L.in_size / L.in_shape[0]) <= 1)
            throw std::invalid_argument("Net.train_step: " + layer_name(c) + " (" +
                                        L.desc.kind->class_name + ") needs more than one value "
                                        "per channel in training, got a batch of " +
                                        std::to_string(N) + " (use a batch of 2 or more)");
    }
}

void Net::check_predict_u8(const Shape& is, int64_t pad, int64_t lut_size) const {
    const char* op = "Net.predict_u8";
    check_ndim(op, "images", is, 3, "(N, H, W)");
    check_at_least(op, "pad", pad, 0);
    if (C_ != 1 || is[1] + 2 * pad != H_ || is[2] + 2 * pad != W_)
        throw std::invalid_argument(std::string(op) + ": images " + shape_str(is) + " padded by " +
                                    std::to_string(pad) + " do not fit the network input " +
                                    shape_str(input_shape()));
    if (lut_size != 256)
        throw std::invalid_argument(std::string(op) + ": lut must hold 256 floats, got " +
                                    std::to_string(lut_size));
}

void Net::prepare(int64_t cap, int count, int64_t grad_blocks) {
    if (cap > block_cap_ || int(workspaces_.size()) < count) {
        block_cap_ = std::max(block_cap_, cap);
        workspaces_.resize(std::max<size_t>(workspaces_.size(), size_t(count)));
        for (Workspace& ws : workspaces_) {
            ws.acts.resize(size_t(block_cap_ * act_offsets_.back()));
            ws.input.resize(size_t(block_cap_ * C_ * H_ * W_));
            ws.argmax.resize(size_t(block_cap_ * argmax_offsets_.back()));
            ws.grad_a.resize(size_t(block_cap_ * max_act_));
            ws.grad_b.resize(size_t(block_cap_ * max_act_));
            int64_t scratch = 0;
            for (const Layer& L : layers_) scratch = std::max(scratch, L.desc.kind->workspace(L, block_cap_));
            ws.scratch.resize(size_t(scratch));
        }
    }
    if (grad_blocks_.size() < size_t(grad_blocks * total_params_))
        grad_blocks_.resize(size_t(grad_blocks * total_params_));
    if (stats_.size() < size_t(grad_blocks * stat_width_)) stats_.resize(size_t(grad_blocks * stat_width_));
    totals_.resize(size_t(stat_width_));
    states_.resize(size_t(state_width_));
}

float* Net::act(Workspace& ws, const float* x, size_t slot) const {
    return act_offsets_[slot] < 0 ? const_cast<float*>(x)
                                  : ws.acts.data() + act_offsets_[slot] * block_cap_;
}

BlockArgs Net::args(const Layer& L, Workspace& ws, int64_t n, const float* const* params,
                    const Mode& m) const {
    const LayerKindInfo& kind = *L.desc.kind;
    BlockArgs a;
    a.n = n;
    a.batch = m.batch;
    a.w = L.weight >= 0 ? params[L.weight] : nullptr;
    a.b = L.bias >= 0 ? params[L.bias] : nullptr;
    a.scratch = ws.scratch.data();
    a.argmax = kind.keeps_argmax && m.keep ? ws.argmax.data() + argmax_offsets_[L.index] * block_cap_ : nullptr;
    a.training = m.training;
    a.buffers = L.buffer >= 0 ? m.buffers + L.buffer : nullptr;
    if (kind.coupled()) {
        const size_t k = size_t(std::find(coupled_.begin(), coupled_.end(), L.index) - coupled_.begin());
        a.state = states_.data() + state_offsets_[k];
        a.batch_sums = totals_.data() + stat_offsets_[k];
    }
    if (m.noise) {
        a.noise = noise_key(m.noise->seed, m.noise->epoch, L.index);
        a.sample0 = m.noise->first + m.first;
    }
    return a;
}

void Net::forward_range(Workspace& ws, const float* x, int64_t n, const float* const* params,
                        const Mode& m, size_t l0, size_t l1) {
    for (size_t l = l0; l < l1; l++) {
        const Layer& L = layers_[l];
        const LayerKindInfo& kind = *L.desc.kind;
        const bool fuse_relu = kind.fuses_relu && l + 1 < layers_.size() && layers_[l + 1].desc.kind->is_relu();
        kind.forward(L, act(ws, x, fuse_relu ? l + 2 : l + 1), act(ws, x, l), args(L, ws, n, params, m),
                     fuse_relu);
        if (fuse_relu) l++;
    }
}

void Net::backward_range(Workspace& ws, const float* x, int64_t n, const float* const* params,
                         float* grads, const Mode& m, size_t l0, size_t l1, bool input_grad) {
    for (size_t l = l1; l-- > l0;) {
        const Layer& L = layers_[l];
        const LayerKindInfo& kind = *L.desc.kind;
        if (kind.in_place) continue;  // same memory, same gradient
        float* dw = L.weight >= 0 ? grads + param_offsets_[size_t(L.weight)] : nullptr;
        float* db = L.bias >= 0 ? grads + param_offsets_[size_t(L.bias)] : nullptr;
        float* next = ws.g == ws.grad_a.data() ? ws.grad_b.data() : ws.grad_a.data();
        const bool need_dx = l > 0 || input_grad;  // nobody needs the input's gradient otherwise
        kind.backward(L, need_dx ? next : nullptr, dw, db, act(ws, x, l), act(ws, x, l + 1), ws.g,
                      args(L, ws, n, params, m));
        if (need_dx) ws.g = next;
    }
}

template <class Body>
void Net::in_phases(int64_t nblocks, int nt, Body&& body) {
    if (nt == 1) {  // no OpenMP region: entering one costs a team allocation per call
        SerialScope serial;
        auto run = [&](auto&& f) {
            for (int64_t b = 0; b < nblocks; b++) f(b, 0);
        };
        auto once = [&](auto&& f) { f(); };
        auto split = [&](auto&& f) { f(0, 1); };
        body(run, once, split);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        const int t = 0, T = 1;
#endif
        // Orphaned work-sharing: every thread meets the same sequence of them.
        auto run = [&](auto&& f) {
#pragma omp for schedule(static)
            for (int64_t b = 0; b < nblocks; b++) f(b, t);
        };
        auto once = [&](auto&& f) {
#pragma omp single
            f();
        };
        auto split = [&](auto&& f) { f(t, T); };
        body(run, once, split);
    }
}

// Inference keeps no activations for backward, so the batch is walked in chunks of 16 that
// stay in cache; chunk c runs body(workspace, first sample, count). The chunking is fixed,
// so results do not depend on the thread count.
template <class Body>
void Net::for_chunks(int64_t N, Body&& body) {
    if (N <= 0) return;
    const int64_t chunk = 16, nchunks = (N + chunk - 1) / chunk;
    const int nt = int(std::min<int64_t>(get_num_threads(), nchunks));
    prepare(std::min(N, chunk), nt, 0);
    in_phases(nchunks, nt, [&](auto run, auto, auto) {
        run([&](int64_t c, int t) { body(workspaces_[size_t(t)], c * chunk, std::min(chunk, N - c * chunk)); });
    });
}

void Net::forward(float* out, const float* x, int64_t N, const float* const* params,
                  const float* const* buffers) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_;
    Mode m;
    m.buffers = const_cast<float* const*>(buffers);  // evaluation reads them only
    for_chunks(N, [&](Workspace& ws, int64_t n0, int64_t n) {
        const float* xb = x + n0 * in_size;
        forward_range(ws, xb, n, params, m, 0, layers_.size());
        std::memcpy(out + n0 * classes, act(ws, xb, layers_.size()), sizeof(float) * n * classes);
    });
}

void Net::predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                     int64_t pad, const float* lut, const float* const* params,
                     const float* const* buffers) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t classes = out_features_;
    Mode m;
    m.buffers = const_cast<float* const*>(buffers);
    for_chunks(N, [&](Workspace& ws, int64_t n0, int64_t n) {
        gather_pad_normalize(ws.input.data(), images + n0 * h * w, nullptr, n, h, w, pad, lut);
        forward_range(ws, ws.input.data(), n, params, m, 0, layers_.size());
        const float* out = act(ws, ws.input.data(), layers_.size());
        float* pb = probs + n0 * classes;
        if (penalty_output()) {  // class scores = -penalties
            for (int64_t i = 0; i < n * classes; i++) pb[i] = -out[i];
            out = pb;  // softmax may run in place
        }
        softmax(pb, out, n, classes);
    });
}

double Net::train_step(float* out, float* const* grads, const float* x, const int64_t* labels,
                       int64_t N, const float* const* params, float* const* buffers,
                       const LossKindInfo& loss, const StepNoise& noise, float smoothing) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t nblocks = batch_blocks(N);  // the split the per-op functions use
    const int nt = int(std::min<int64_t>(get_num_threads(), nblocks));
    // A batch-coupled net keeps every block's activations across its phases: one workspace
    // per block. Otherwise a block runs start to end in one go: one per thread, kept in cache.
    const bool per_block = batch_coupled();
    prepare((N + nblocks - 1) / nblocks, per_block ? int(nblocks) : nt, nblocks);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_, P = total_params_;
    const size_t L = layers_.size();
    double block_loss[kMaxBatchBlocks] = {0};
    Mode base;
    base.training = base.keep = true;
    base.noise = &noise;
    base.batch = N;
    base.buffers = buffers;
    // Block b's samples, workspace and mode.
    auto n0_of = [&](int64_t b) { return block_begin(N, nblocks, b); };
    auto n_of = [&](int64_t b) { return block_begin(N, nblocks, b + 1) - block_begin(N, nblocks, b); };
    auto ws_of = [&](int64_t b, int t) -> Workspace& { return workspaces_[size_t(per_block ? b : t)]; };
    auto mode_of = [&](int64_t b) {
        Mode m = base;
        m.first = n0_of(b);
        return m;
    };
    auto grads_of = [&](int64_t b) { return grad_blocks_.data() + b * P; };
    auto stats_of = [&](int64_t b, size_t k) { return stats_.data() + b * stat_width_ + stat_offsets_[k]; };
    // Adds the blocks' sums of coupled layer k in block order.
    auto total_of = [&](size_t k) {
        const int64_t width = layers_[coupled_[k]].desc.kind->stat_size(layers_[coupled_[k]]);
        double* total = totals_.data() + stat_offsets_[k];
        std::fill(total, total + width, 0.0);
        for (int64_t b = 0; b < nblocks; b++)
            for (int64_t i = 0; i < width; i++) total[i] += stats_of(b, k)[i];
        return total;
    };
    auto zeroed = [&](double* s, const Layer& C) {
        std::fill(s, s + C.desc.kind->stat_size(C), 0.0);
        return s;
    };
    in_phases(nblocks, nt, [&](auto run, auto once, auto split) {
        size_t from = 0;  // the first layer the next forward range runs
        for (size_t k = 0; k < coupled_.size(); k++) {
            const size_t c = coupled_[k];
            const Layer& C = layers_[c];
            run([&](int64_t b, int t) {
                if (from == 0) std::memset(grads_of(b), 0, sizeof(float) * size_t(P));
                forward_range(ws_of(b, t), x + n0_of(b) * in_size, n_of(b), params, mode_of(b), from, c);
            });
            for (int pass = 0; pass < C.desc.kind->stat_passes; pass++) {
                float* state = states_.data() + state_offsets_[k];
                run([&](int64_t b, int t) {
                    C.desc.kind->forward_stats(C, pass, zeroed(stats_of(b, k), C),
                                               act(ws_of(b, t), x + n0_of(b) * in_size, c), n_of(b), state);
                });
                once([&] {
                    C.desc.kind->forward_combine(C, pass, total_of(k), N, state,
                                                 C.buffer >= 0 ? buffers + C.buffer : nullptr,
                                                 C.weight >= 0 ? params[C.weight] : nullptr,
                                                 C.bias >= 0 ? params[C.bias] : nullptr);
                });
            }
            from = c;  // the coupled layer runs, with its batch state, at the start of the next range
        }
        const size_t tail = coupled_.empty() ? 0 : coupled_.back() + 1;
        run([&](int64_t b, int t) {
            Workspace& ws = ws_of(b, t);
            const int64_t n0 = n0_of(b), n = n_of(b);
            const float* xb = x + n0 * in_size;
            if (from == 0) std::memset(grads_of(b), 0, sizeof(float) * size_t(P));
            forward_range(ws, xb, n, params, mode_of(b), from, L);
            const float* logits = act(ws, xb, L);
            std::memcpy(out + n0 * classes, logits, sizeof(float) * n * classes);
            block_loss[b] = loss_block_sum(loss, ws.grad_a.data(), logits, labels + n0, n, classes, N, smoothing);
            ws.g = ws.grad_a.data();
            backward_range(ws, xb, n, params, grads_of(b), mode_of(b), tail, L, false);
        });
        for (size_t k = coupled_.size(); k-- > 0;) {
            const size_t c = coupled_[k];
            const Layer& C = layers_[c];
            const float* state = states_.data() + state_offsets_[k];
            run([&](int64_t b, int t) {
                Workspace& ws = ws_of(b, t);
                C.desc.kind->backward_stats(C, zeroed(stats_of(b, k), C), act(ws, x + n0_of(b) * in_size, c),
                                            ws.g, n_of(b), state);
            });
            once([&] {  // the whole batch's weight gradients, into block 0's buffer
                C.desc.kind->backward_combine(C, total_of(k), N, state,
                                              C.weight >= 0 ? grads_of(0) + param_offsets_[size_t(C.weight)] : nullptr,
                                              C.bias >= 0 ? grads_of(0) + param_offsets_[size_t(C.bias)] : nullptr);
            });
            const size_t lo = k > 0 ? coupled_[k - 1] + 1 : 0;
            run([&](int64_t b, int t) {
                backward_range(ws_of(b, t), x + n0_of(b) * in_size, n_of(b), params, grads_of(b), mode_of(b),
                               lo, c + 1, false);
            });
        }
        // The block gradients summed in block order; threads own disjoint parameter ranges.
        split([&](int t, int T) {
            const int64_t lo = P * t / T, hi = P * (t + 1) / T;
            for (size_t p = 0; p < param_offsets_.size(); p++) {
                const int64_t off = param_offsets_[p], size = numel(param_shapes_[p]);
                const int64_t a = std::max(lo, off), e = std::min(hi, off + size);
                if (a < e) sum_blocks(grads[p] + (a - off), grad_blocks_.data() + a, P, nblocks, e - a);
            }
        });
    });
    return mean_loss(block_loss, nblocks, N, loss);
}

double Net::mean_loss(const double* losses, int64_t nblocks, int64_t N, const LossKindInfo& loss) const {
    double total = 0.0;
    for (int64_t b = 0; b < nblocks; b++) total += losses[b];
    return total / loss.mean_count(N, out_features_);
}

int64_t Net::gradient_size() const {
    int64_t size = 0;
    for (const Shape& s : param_shapes_) size += numel(s);
    return size;
}

void Net::check_block_gradients(const Shape& xs, const Shape& ls, const int64_t* labels, int64_t N,
                                int64_t b0, int64_t b1) const {
    const char* op = "Net.block_gradients";
    if (batch_coupled())
        throw std::invalid_argument(std::string(op) + ": layer " + std::to_string(coupled_[0]) + " (" +
                                    layers_[coupled_[0]].desc.kind->class_name +
                                    ") needs the whole batch, so its blocks cannot be computed apart");
    check_at_least(op, "N (the whole batch)", N, 1);
    const int64_t nb = batch_blocks(N);
    if (b0 < 0 || b0 > b1 || b1 > nb)
        throw std::invalid_argument(std::string(op) + ": blocks [" + std::to_string(b0) + ", " +
                                    std::to_string(b1) + ") must lie in [0, " + std::to_string(nb) +
                                    "] (a batch of " + std::to_string(N) + " has " +
                                    std::to_string(nb) + " blocks)");
    check_input(xs);
    const int64_t n = block_begin(N, nb, b1) - block_begin(N, nb, b0);
    if (xs[0] != n)
        throw std::invalid_argument(std::string(op) + ": x must hold the " + std::to_string(n) +
                                    " samples of blocks [" + std::to_string(b0) + ", " +
                                    std::to_string(b1) + ") of a batch of " + std::to_string(N) +
                                    ", got " + std::to_string(xs[0]));
    if (ls != Shape{n})
        throw std::invalid_argument(std::string(op) + ": labels must have shape (" +
                                    std::to_string(n) + ",), got " + shape_str(ls));
    check_indices(op, "labels", labels, n, out_features_);
}

void Net::block_gradients(float* out, float* grads, double* losses, const float* x,
                          const int64_t* labels, int64_t N, int64_t b0, int64_t b1,
                          const float* const* params, const LossKindInfo& loss, const StepNoise& noise,
                          float smoothing) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t nblocks = batch_blocks(N), count = b1 - b0;
    if (count <= 0) return;
    const int nt = int(std::min<int64_t>(get_num_threads(), count));
    prepare((N + nblocks - 1) / nblocks, nt, count);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_, P = total_params_;
    const int64_t G = gradient_size(), first = block_begin(N, nblocks, b0);
    // Block b0 + i exactly as train_step runs block b, then its gradient unpadded into row i.
    in_phases(count, nt, [&](auto run, auto, auto) {
        run([&](int64_t i, int t) {
            Workspace& ws = workspaces_[size_t(t)];
            const int64_t b = b0 + i;
            const int64_t n0 = block_begin(N, nblocks, b) - first;
            const int64_t n = block_begin(N, nblocks, b + 1) - block_begin(N, nblocks, b);
            Mode m;
            m.training = m.keep = true;
            m.noise = &noise;
            m.batch = N;
            m.first = block_begin(N, nblocks, b);
            const float* xb = x + n0 * in_size;
            float* gb = grad_blocks_.data() + i * P;
            std::memset(gb, 0, sizeof(float) * size_t(P));
            forward_range(ws, xb, n, params, m, 0, layers_.size());
            const float* logits = act(ws, xb, layers_.size());
            std::memcpy(out + n0 * classes, logits, sizeof(float) * n * classes);
            losses[i] = loss_block_sum(loss, ws.grad_a.data(), logits, labels + n0, n, classes, N, smoothing);
            ws.g = ws.grad_a.data();
            backward_range(ws, xb, n, params, gb, m, 0, layers_.size(), false);
            float* row = grads + i * G;
            for (size_t p = 0; p < param_shapes_.size(); p++) {
                const int64_t size = numel(param_shapes_[p]);
                std::memcpy(row, gb + param_offsets_[p], sizeof(float) * size_t(size));
                row += size;
            }
        });
    });
}

void Net::input_gradient(float* dx, const float* x, const float* dout, int64_t N,
                         const float* const* params, const float* const* buffers) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (N <= 0) return;
    const int64_t nblocks = batch_blocks(N);
    const int nt = int(std::min<int64_t>(get_num_threads(), nblocks));
    prepare((N + nblocks - 1) / nblocks, nt, nblocks);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_, P = total_params_;
    Mode m;  // evaluation, with the argmax kept for the backward
    m.keep = true;
    m.batch = N;
    m.buffers = const_cast<float* const*>(buffers);
    in_phases(nblocks, nt, [&](auto run, auto, auto) {
        run([&](int64_t b, int t) {
            Workspace& ws = workspaces_[size_t(t)];
            const int64_t n0 = block_begin(N, nblocks, b), n = block_begin(N, nblocks, b + 1) - n0;
            const float* xb = x + n0 * in_size;
            float* scratch_grads = grad_blocks_.data() + b * P;  // weight gradients, dropped
            std::memset(scratch_grads, 0, sizeof(float) * size_t(P));
            forward_range(ws, xb, n, params, m, 0, layers_.size());
            std::memcpy(ws.grad_a.data(), dout + n0 * classes, sizeof(float) * n * classes);
            ws.g = ws.grad_a.data();
            backward_range(ws, xb, n, params, scratch_grads, m, 0, layers_.size(), true);
            std::memcpy(dx + n0 * in_size, ws.g, sizeof(float) * n * in_size);
        });
    });
}

}  // namespace pylenet
