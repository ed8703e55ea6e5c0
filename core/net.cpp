// The fused network: validation of the layer chain, block-parallel forward/backward over a
// batch, and the in-order reduction of the per-block weight gradients.
#include "net.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "losses.h"
#include "parallel.h"
#include "preprocess.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pylenet {

namespace {
std::string layer_name(size_t i) { return "layer " + std::to_string(i); }
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
        L.in_shape = shape;
        if (!L.desc.kind) throw std::invalid_argument("Net: " + layer_name(i) + " has no kind");
        shape = L.desc.kind->setup(L, layer_name(i), param_shapes_);
        L.out_shape = shape;
        L.in_size = numel(L.in_shape);
        L.out_size = numel(L.out_shape);
        layers_.push_back(L);
    }
    if (shape.size() != 1)
        throw std::invalid_argument("Net: the last layer must output (features,), got " +
                                    shape_str(shape));
    out_features_ = shape[0];
    for (const Shape& s : param_shapes_) {
        param_offsets_.push_back(total_params_);
        total_params_ += (numel(s) + 15) / 16 * 16;  // each gradient on a 64-byte boundary
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
            offset += (L.out_size + 15) / 16 * 16;  // each slot starts on a 64-byte boundary
        }
        argmax_offsets_.push_back(arg_offset);
        if (L.desc.kind->keeps_argmax) arg_offset += L.out_size;
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

void Net::check_train_step(const Shape& xs, const Shape& ls, const int64_t* labels) const {
    check_input(xs);
    const int64_t N = xs[0];
    if (N < 1) throw std::invalid_argument("Net.train_step: the batch is empty");
    if (ls != Shape{N})
        throw std::invalid_argument("Net.train_step: labels must have shape (" + std::to_string(N) +
                                    ",), got " + shape_str(ls));
    check_indices("Net.train_step", "labels", labels, N, out_features_);
}

void Net::check_loss_smoothing(const LossKindInfo& loss, double smoothing) {
    check_label_smoothing("Net.train_step", smoothing);
    if (smoothing != 0.0 && !loss.takes_smoothing)
        throw std::invalid_argument("Net.train_step: label smoothing applies to cross_entropy, not to the loss '" +
                                    std::string(loss.name) + "' (got smoothing " + std::to_string(smoothing) + ")");
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

void Net::prepare(int64_t cap, int threads, int64_t grad_blocks) {
    if (cap > block_cap_ || int(workspaces_.size()) < threads) {
        block_cap_ = std::max(block_cap_, cap);
        workspaces_.resize(std::max<size_t>(workspaces_.size(), size_t(threads)));
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
}

float* Net::act(Workspace& ws, const float* x, size_t slot) const {
    return act_offsets_[slot] < 0 ? const_cast<float*>(x)
                                  : ws.acts.data() + act_offsets_[slot] * block_cap_;
}

// Runs the n samples at x through every layer, leaving each layer's output in ws.acts. A
// ReLU right after a kind that fuses_relu (conv, linear) is applied by that layer as it writes
// its output (the ReLU's slot; the layer's own slot stays unwritten, and the ReLU's backward
// reads only its output). Max-pool indices are kept for training only.
void Net::forward_block(Workspace& ws, const float* x, int64_t n, const float* const* params,
                        bool training) {
    for (size_t l = 0; l < layers_.size(); l++) {
        const Layer& L = layers_[l];
        const LayerKindInfo& kind = *L.desc.kind;
        const bool fuse_relu = kind.fuses_relu && l + 1 < layers_.size() && layers_[l + 1].desc.kind->is_relu;
        BlockArgs a;
        a.n = n;
        a.w = L.weight >= 0 ? params[L.weight] : nullptr;
        a.b = L.bias >= 0 ? params[L.bias] : nullptr;
        a.scratch = ws.scratch.data();
        a.argmax = kind.keeps_argmax && training ? ws.argmax.data() + argmax_offsets_[l] * block_cap_ : nullptr;
        kind.forward(L, act(ws, x, fuse_relu ? l + 2 : l + 1), act(ws, x, l), a, fuse_relu);
        if (fuse_relu) l++;
    }
}

// Backpropagates ws.grad_a (the loss gradient of the block's outputs) through every layer,
// ADDING weight gradients into `grads` (one flat block of total_params_ floats).
void Net::backward_block(Workspace& ws, const float* x, int64_t n, const float* const* params,
                         float* grads) {
    float* g = ws.grad_a.data();
    float* gnext = ws.grad_b.data();
    for (size_t l = layers_.size(); l-- > 0;) {
        const Layer& L = layers_[l];
        const LayerKindInfo& kind = *L.desc.kind;
        if (kind.in_place) continue;  // same memory, same gradient
        BlockArgs a;
        a.n = n;
        a.w = L.weight >= 0 ? params[L.weight] : nullptr;
        a.b = L.bias >= 0 ? params[L.bias] : nullptr;
        a.scratch = ws.scratch.data();
        a.argmax = kind.keeps_argmax ? ws.argmax.data() + argmax_offsets_[l] * block_cap_ : nullptr;
        float* dw = L.weight >= 0 ? grads + param_offsets_[size_t(L.weight)] : nullptr;
        float* db = L.bias >= 0 ? grads + param_offsets_[size_t(L.bias)] : nullptr;
        // nobody needs the gradient of the network's input
        kind.backward(L, l > 0 ? gnext : nullptr, dw, db, act(ws, x, l), act(ws, x, l + 1), g, a);
        std::swap(g, gnext);
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
    if (nt == 1) {  // no OpenMP region: entering one costs a team allocation per call
        SerialScope serial;
        for (int64_t c = 0; c < nchunks; c++) body(workspaces_[0], c * chunk, std::min(chunk, N - c * chunk));
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c = 0; c < nchunks; c++) {
#ifdef _OPENMP
        Workspace& ws = workspaces_[size_t(omp_get_thread_num())];
#else
        Workspace& ws = workspaces_[0];
#endif
        body(ws, c * chunk, std::min(chunk, N - c * chunk));
    }
}

void Net::forward(float* out, const float* x, int64_t N, const float* const* params) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_;
    for_chunks(N, [&](Workspace& ws, int64_t n0, int64_t n) {
        const float* xb = x + n0 * in_size;
        forward_block(ws, xb, n, params, false);
        std::memcpy(out + n0 * classes, act(ws, xb, layers_.size()), sizeof(float) * n * classes);
    });
}

void Net::predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                     int64_t pad, const float* lut, const float* const* params) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t classes = out_features_;
    for_chunks(N, [&](Workspace& ws, int64_t n0, int64_t n) {
        gather_pad_normalize(ws.input.data(), images + n0 * h * w, nullptr, n, h, w, pad, lut);
        forward_block(ws, ws.input.data(), n, params, false);
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
                       int64_t N, const float* const* params, const LossKindInfo& loss,
                       float smoothing) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t nblocks = batch_blocks(N);  // the split the per-op functions use
    const int nt = int(std::min<int64_t>(get_num_threads(), nblocks));
    prepare((N + nblocks - 1) / nblocks, nt, nblocks);
    const int64_t in_size = C_ * H_ * W_, classes = out_features_, P = total_params_;
    double block_loss[kMaxBatchBlocks] = {0};
    // Block b: forward, loss and backward of its samples into its own gradient block.
    auto run_block = [&](Workspace& ws, int64_t b) {
        const int64_t n0 = block_begin(N, nblocks, b), n = block_begin(N, nblocks, b + 1) - n0;
        const float* xb = x + n0 * in_size;
        float* gb = grad_blocks_.data() + b * P;
        std::memset(gb, 0, sizeof(float) * P);
        forward_block(ws, xb, n, params, true);
        const float* logits = act(ws, xb, layers_.size());
        std::memcpy(out + n0 * classes, logits, sizeof(float) * n * classes);
        block_loss[b] = loss.block_sum(ws.grad_a.data(), logits, labels + n0, n, classes, N, smoothing);
        backward_block(ws, xb, n, params, gb);
    };
    // The block gradients summed in block order over the flat range [lo, hi).
    auto reduce = [&](int64_t lo, int64_t hi) {
        for (size_t p = 0; p < param_offsets_.size(); p++) {
            const int64_t off = param_offsets_[p], size = numel(param_shapes_[p]);
            const int64_t a = std::max(lo, off), e = std::min(hi, off + size);
            if (a >= e) continue;
            sum_blocks(grads[p] + (a - off), grad_blocks_.data() + a, P, nblocks, e - a);
        }
    };
    if (nt == 1) {  // no OpenMP region: entering one costs a team allocation per call
        SerialScope serial;
        for (int64_t b = 0; b < nblocks; b++) run_block(workspaces_[0], b);
        reduce(0, P);
    } else {
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            const int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
            const int t = 0, T = 1;
#endif
#pragma omp for schedule(static)
            for (int64_t b = 0; b < nblocks; b++) run_block(workspaces_[size_t(t)], b);
            reduce(P * t / T, P * (t + 1) / T);  // threads own disjoint parameter ranges
        }
    }
    double total = 0.0;
    for (int64_t b = 0; b < nblocks; b++) total += block_loss[b];
    return total / loss.mean_count(N, classes);
}

}  // namespace pylenet
