// A whole feed-forward network run by the core in one call: the Python side assembles the
// layer list (LeNet-5 or any chain of the kinds in registry.h) and hands it over, and the core
// runs forward, loss and backward for a batch with the GIL released, reusing its workspaces.
//
// Training splits the batch into batch_blocks(N) blocks (parallel.h: a function of N alone,
// never of the thread count); each block's weight gradients are summed in a buffer of its
// own, and the buffers are added in block order (sum_blocks), so the results are
// bit-identical for any number of threads and to the per-op functions, which split alike.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "aligned.h"
#include "checks.h"
#include "params.h"
#include "registry.h"

namespace pylenet {

// Calls on one Net are serialised by a mutex; separate Nets run concurrently.
class Net {
public:
    // Validates the chain for inputs (C, H, W) and a 1-D output; throws std::invalid_argument.
    Net(std::vector<LayerDesc> layers, int64_t C, int64_t H, int64_t W);

    // Shapes of the parameter tensors in order: weight then bias (if any) per conv/linear.
    const std::vector<Shape>& param_shapes() const { return param_shapes_; }
    // The validated layers, their shapes and op parameters (what the GPU network is built from).
    const std::vector<NetLayer>& layers() const { return layers_; }
    // Shape of one sample's input (C, H, W) and the output feature count.
    Shape input_shape() const { return {C_, H_, W_}; }
    int64_t out_features() const { return out_features_; }

    // The checks of the three calls below (std::invalid_argument with received and expected):
    // x (N, C, H, W) of this input; `what` arrays ("parameter", "gradient") of param_shapes;
    // train_step's non-empty batch and labels (N,) in [0, classes); predict_u8's images
    // (N, h, w) that fit the input once padded, and a lut of 256 floats.
    void check_input(const Shape& x) const;
    void check_params(const char* what, const std::vector<Shape>& shapes) const;
    void check_train_step(const Shape& x, const Shape& labels_shape, const int64_t* labels) const;
    void check_predict_u8(const Shape& images, int64_t pad, int64_t lut_size) const;
    // train_step's label smoothing: in [0, 1], and 0 unless the loss kind takes it.
    static void check_loss_smoothing(const LossKindInfo& loss, double smoothing);

    // out (N, classes) = the network applied to x (N, C, H, W). params in param_shapes order.
    void forward(float* out, const float* x, int64_t N, const float* const* params);
    // Whether the last layer outputs penalties (the RBF): class scores are then -outputs.
    bool penalty_output() const { return layers_.back().desc.kind->penalty_output; }
    // probs (N, classes) = softmax of the class scores (the outputs, or minus the penalties)
    // of the network applied to uint8 images (N, h, w) that are
    // zero-padded by `pad` and mapped through lut (256 floats) first: inference from raw
    // pixels in one call. Needs C == 1 and (h + 2 pad, w + 2 pad) == (H, W).
    void predict_u8(float* probs, const uint8_t* images, int64_t N, int64_t h, int64_t w,
                    int64_t pad, const float* lut, const float* const* params);
    // Forward, loss (mean over the batch) and backward. Overwrites every grads[i] and
    // out (N, classes) with the outputs; returns the loss. Labels must be in [0, classes).
    // smoothing: the loss's label smoothing (only a kind with takes_smoothing; checked by
    // check_loss_smoothing).
    double train_step(float* out, float* const* grads, const float* x, const int64_t* labels,
                      int64_t N, const float* const* params, const LossKindInfo& loss,
                      float smoothing = 0.0f);

private:
    using Layer = NetLayer;
    // Per-thread buffers for one block of samples.
    struct Workspace {
        AlignedFloats acts;           // every layer's input/output for the block
        std::vector<int32_t> argmax;  // max-pool indices
        AlignedFloats input;          // predict_u8's prepared images
        AlignedFloats grad_a, grad_b, scratch;  // gradient ping-pong; conv/linear scratch
    };

    // Sizes the workspaces for blocks of `cap` samples, `threads` threads and the gradients
    // of `grad_blocks` blocks; grows only, so steady-state steps allocate nothing.
    void prepare(int64_t cap, int threads, int64_t grad_blocks);
    float* act(Workspace& ws, const float* x, size_t slot) const;
    template <class Body>
    void for_chunks(int64_t N, Body&& body);
    void forward_block(Workspace& ws, const float* x, int64_t n, const float* const* params,
                       bool training);
    void backward_block(Workspace& ws, const float* x, int64_t n, const float* const* params,
                        float* grads);

    std::vector<Layer> layers_;
    std::vector<Shape> param_shapes_;
    std::vector<int64_t> param_offsets_;  // into one flat gradient block (64-byte aligned)
    std::vector<int64_t> act_offsets_, argmax_offsets_;
    int64_t C_, H_, W_, out_features_ = 0, total_params_ = 0;  // total_params_: the padded block
    int64_t max_act_ = 0;
    int64_t block_cap_ = 0;  // samples the workspaces are sized for
    std::vector<Workspace> workspaces_;
    AlignedFloats grad_blocks_;       // nblocks * total_params_
    std::mutex mutex_;                // one call at a time per Net (shared workspaces)
};

}  // namespace pylenet
