// A whole feed-forward network run by the core in one call: the Python side assembles the
// layer list (LeNet-5 or any chain of the kinds in registry.h) and hands it over, and the core
// runs forward, loss and backward for a batch with the GIL released, reusing its workspaces.
//
// Training splits the batch into batch_blocks(N) blocks (parallel.h: a function of N alone,
// never of the thread count); each block's weight gradients are summed in a buffer of its
// own, and the buffers are added in block order (sum_blocks), so the results are
// bit-identical for any number of threads and to the per-op functions, which split alike.
// Layers that need the whole batch (BatchNorm in training) split the step into phases: every
// block runs up to such a layer, the blocks' sums are added in block order, and only then does
// any block go on (registry.h, batch-coupled kinds).
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/aligned.h"
#include "base/checks.h"
#include "base/params.h"
#include "net/registry.h"

namespace pylenet {

// What a training step's randomness (Dropout) is drawn from: the run's seed, the epoch, and
// the index in the epoch of the batch's first sample (ops/noise.h).
struct StepNoise {
    uint64_t seed = 0, epoch = 0;
    int64_t first = 0;
};

// Calls on one Net are serialised by a mutex; separate Nets run concurrently.
class Net {
public:
    // Validates the chain for inputs (C, H, W) and a 1-D output; throws std::invalid_argument.
    Net(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W);

    // Shapes of the parameter tensors in order: each layer's, in its kind's param order.
    const std::vector<Shape>& param_shapes() const { return param_shapes_; }
    // Shapes of the buffers (BatchNorm's running statistics) in order.
    const std::vector<Shape>& buffer_shapes() const { return buffer_shapes_; }
    // The validated layers, their shapes and op parameters (what the GPU network is built from).
    const std::vector<NetLayer>& layers() const { return layers_; }
    // Shape of one sample's input (C, H, W) and the output feature count.
    Shape input_shape() const { return {C_, H_, W_}; }
    int64_t out_features() const { return out_features_; }
    // Whether a layer couples the samples of a batch (BatchNorm): a training step's blocks
    // then wait for one another at that layer.
    bool batch_coupled() const { return !coupled_.empty(); }

    // The checks of the calls below (std::invalid_argument with received and expected):
    // x (N, C, H, W) of this input; `what` arrays ("parameter", "gradient") of param_shapes;
    // buffers of buffer_shapes; train_step's batch (at least 1 sample, 2 with BatchNorm) and
    // labels (N,) in [0, classes); predict_u8's images (N, h, w) that fit the input once
    // padded, and a lut of 256 floats.
    void check_input(const Shape& x) const;
    void check_params(const char* what, const std::vector<Shape>& shapes) const;
    void check_buffers(const std::vector<Shape>& shapes) const;
    void check_train_step(const Shape& x, const Shape& labels_shape, const int64_t* labels) const;
    // A training batch of N samples: not empty, and more than one value per channel for a
    // BatchNorm (PyTorch's rule).
    void check_batch(int64_t N) const;
    void check_predict_u8(const Shape& images, int64_t pad, int64_t lut_size) const;

    // out (N, classes) = the network applied to x (N, C, H, W) in evaluation mode (running
    // statistics, no dropout). params in param_shapes order, buffers in buffer_shapes order.
    void forward(float* out, const float* x, int64_t N, const float* const* params,
                 const float* const* buffers);
    // Whether the last layer outputs penalties (the RBF): class scores are then -outputs.
    bool penalty_output() const { return layers_.back().desc.kind->penalty_output; }
    // probs (N, classes) = softmax of the class scores (the outputs, or minus the penalties)
    // of the network applied, in evaluation mode, to uint8 images (N, h, w) that are
    // zero-padded by `pad` and mapped through lut (256 floats) first: inference from raw
    // pixels in one call. Needs C == 1 and (h + 2 pad, w + 2 pad) == (H, W).
    void predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                    int64_t pad, const float* lut, const float* const* params,
                    const float* const* buffers);
    // Forward (training mode), loss (mean over the batch; cross-entropy against label-smoothed
    // targets when smoothing > 0) and backward. Overwrites every
    // grads[i] and out (N, classes) with the outputs, moves the running statistics in buffers
    // (BatchNorm) and returns the loss. Labels must be in [0, classes).
    double train_step(float* out, float* const* grads, const float* x, const int64_t* labels,
                      int64_t N, const float* const* params, float* const* buffers,
                      const LossKindInfo& loss, const StepNoise& noise, float smoothing = 0.0f);
    // dx (N, C, H, W) = the gradient of sum(dout * outputs) with respect to x, the network in
    // evaluation mode (what it computes for one class score: saliency), through the same
    // per-layer backward as training; nothing else changes. Bit-identical for any threads.
    void input_gradient(float* dx, const float* x, const float* dout, int64_t N,
                        const float* const* params, const float* const* buffers);

    // Data-parallel training: train_step's work for the whole blocks [b0, b1) of a batch of N
    // (split as train_step splits it, batch_blocks(N) blocks), so that workers can share a
    // batch by blocks. x (n, C, H, W) and labels (n,) hold only those blocks' samples, n =
    // block_begin(N, nb, b1) - block_begin(N, nb, b0). Overwrites out (n, classes) with the
    // outputs, grads (b1 - b0, gradient_size()) with one row per block (each parameter's
    // gradient flattened, in param_shapes order) and losses (b1 - b0) with each block's loss
    // SUM. sum_blocks over all nb rows in block order gives train_step's gradients, and
    // mean_loss over all nb sums its loss, bit for bit (any thread count, any split of the
    // blocks between callers). noise: train_step's, for the whole batch. A batch-coupled net
    // (BatchNorm) cannot split its batch: check_block_gradients refuses it.
    void block_gradients(float* out, float* grads, double* losses, const float* x,
                         const int64_t* labels, int64_t N, int64_t b0, int64_t b1,
                         const float* const* params, const LossKindInfo& loss, const StepNoise& noise,
                         float smoothing = 0.0f);
    // block_gradients' checks: x and labels of blocks [b0, b1) of a batch of N, 0 <= b0 <= b1 <= nb.
    void check_block_gradients(const Shape& x, const Shape& labels_shape, const int64_t* labels,
                               int64_t N, int64_t b0, int64_t b1) const;
    // Floats in one block's gradient row: the parameters' sizes added up (no padding).
    int64_t gradient_size() const;
    // The batch's mean loss from its nblocks blocks' loss sums, added in block order and divided
    // by the loss's mean count, as train_step does.
    double mean_loss(const double* losses, int64_t nblocks, int64_t N, const LossKindInfo& loss) const;

private:
    using Layer = NetLayer;
    // The buffers of one block of samples (training: one per block, so that a block can wait
    // at a batch-coupled layer and go on; inference: one per thread).
    struct Workspace {
        AlignedFloats acts;           // every layer's input/output for the block
        std::vector<int32_t> argmax;  // max-pool indices
        AlignedFloats input;          // predict_u8's prepared images
        AlignedFloats grad_a, grad_b, scratch;  // gradient ping-pong; conv/linear scratch
        float* g = nullptr;           // where the block's current gradient lies (grad_a or grad_b)
    };
    // How one block runs: training (batch statistics, dropout) and whether the argmax is kept.
    struct Mode {
        bool training = false, keep = false;
        const StepNoise* noise = nullptr;
        int64_t batch = 0, first = 0;  // the batch's size and the block's first sample in it
        float* const* buffers = nullptr;  // the network's buffers (evaluation only reads them)
    };

    // Sizes the workspaces for blocks of `cap` samples, `count` workspaces and the gradients
    // of `grad_blocks` blocks; grows only, so steady-state steps allocate nothing.
    void prepare(int64_t cap, int count, int64_t grad_blocks);
    float* act(Workspace& ws, const float* x, size_t slot) const;
    template <class Body>
    void for_chunks(int64_t N, Body&& body);
    BlockArgs args(const Layer& L, Workspace& ws, int64_t n, const float* const* params,
                   const Mode& m) const;
    // Forward of layers [l0, l1) on the block's n samples at x (a ReLU after a kind that
    // fuses_relu is applied by that layer as it writes, into the ReLU's slot).
    void forward_range(Workspace& ws, const float* x, int64_t n, const float* const* params,
                       const Mode& m, size_t l0, size_t l1);
    // Backward of layers [l0, l1) from the block's current gradient ws.g (the gradient of
    // layer l1 - 1's output), ADDING weight gradients into `grads` (one flat block); leaves
    // ws.g at layer l0's input gradient (none for l0 == 0 unless input_grad).
    void backward_range(Workspace& ws, const float* x, int64_t n, const float* const* params,
                        float* grads, const Mode& m, size_t l0, size_t l1, bool input_grad);
    // Runs `body(run)` with run(f) calling f(b) for every block b in [0, nblocks) on nt threads,
    // once(f) calling f() on one thread after every block's work (a barrier on each side).
    template <class Body>
    void in_phases(int64_t nblocks, int nt, Body&& body);

    std::vector<Layer> layers_;
    std::vector<Shape> param_shapes_, buffer_shapes_;
    std::vector<int64_t> param_offsets_;  // into one flat gradient block (64-byte aligned)
    std::vector<int64_t> act_offsets_, argmax_offsets_;
    std::vector<size_t> coupled_;         // indices of the batch-coupled layers
    std::vector<int64_t> stat_offsets_, state_offsets_;  // per coupled layer (doubles, floats)
    int64_t stat_width_ = 0, state_width_ = 0;
    int64_t C_, H_, W_, out_features_ = 0, total_params_ = 0;  // total_params_: the padded block
    int64_t max_act_ = 0;
    int64_t block_cap_ = 0;  // samples the workspaces are sized for
    std::vector<Workspace> workspaces_;
    AlignedFloats grad_blocks_;       // nblocks * total_params_
    std::vector<double> stats_, totals_;  // per block, and added, sums of the coupled layers
    std::vector<float> states_;           // the coupled layers' batch states
    std::mutex mutex_;                // one call at a time per Net (shared workspaces)
};

}  // namespace pylenet
