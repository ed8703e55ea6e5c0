// The one list of the layer and loss kinds the fused network runs. Each entry says once what
// the kind is called, which LayerDesc fields it reads (and the layer attribute each comes
// from), its shape rule and parameters, and how it runs forward and backward on a block of
// samples; Net (net.h), the bindings (layer_kinds() in Python) and the Python layer classes
// (their `core_kind`) are derived from it. A new kind is one entry here plus its kernels.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "params.h"

namespace pylenet {

struct LayerKindInfo;

// One layer of the chain, as the Python side describes it; which fields a kind reads is in
// its registry entry (unused ones keep these defaults).
struct LayerDesc {
    const LayerKindInfo* kind = nullptr;
    int64_t in = 0, out = 0, kernel = 0, stride = 1, pad = 0;
    bool bias = true;
    // A fixed, untrained array of the layer (the masked conv's 0/1 connection table, the RBF
    // centres, the rescale's (scale, shift)): its shape, empty when the layer has none, and
    // its values, row-major.
    Shape const_shape;
    std::vector<float> constant;
};

// A layer placed in a network: its description, per-sample shapes and op parameters (N = 1).
struct NetLayer {
    LayerDesc desc;
    Shape in_shape, out_shape;
    int64_t in_size = 0, out_size = 0;
    int weight = -1, bias = -1;  // indices into the network's parameter list
    Conv2dParams conv;
    Pool2dParams pool;
    LinearParams linear;
};

// What a forward or backward call on a block of n samples gets besides its activations.
struct BlockArgs {
    int64_t n = 0;
    const float* w = nullptr;  // the layer's weight and bias (null when it has none)
    const float* b = nullptr;
    float* scratch = nullptr;  // workspace(layer, n) floats
    int32_t* argmax = nullptr;  // keeps_argmax kinds: out_size ints per sample (null: inference)
};

// LayerDesc slots, in the order of the Python tuple (kind, in, out, kernel, stride, pad, bias,
// const); a 7-tuple leaves out the constant.
enum LayerSlot { kSlotIn, kSlotOut, kSlotKernel, kSlotStride, kSlotPad, kSlotBias, kSlotConst, kNumSlots };
extern const char* const kSlotNames[kNumSlots];  // "in", "out", ..., "bias", "const"

struct LayerKindInfo {
    const char* name;                // "conv2d": the key the Python classes and bindings use
    const char* fields[kNumSlots];   // per slot, the layer attribute it comes from (null: unused)
    bool fuses_relu;    // forward can apply a following ReLU as it writes (conv, linear)
    bool is_relu;       // the ReLU itself: its backward reads only its output (out > 0 iff in > 0)
    bool in_place;      // output is the input's memory and backward passes dy through (flatten)
    bool keeps_argmax;  // forward records out_size int32 indices per sample for backward
    // Validates L.desc for the per-sample input L.in_shape ("Net: <where> ..." messages),
    // fills L's op parameters and returns the output shape, appending the shapes of its
    // parameters (weight, then bias) to `params`.
    Shape (*setup)(NetLayer& L, const std::string& where, std::vector<Shape>& params);
    // Scratch floats for blocks of up to `cap` samples.
    int64_t (*workspace)(const NetLayer& L, int64_t cap);
    // out (n, out_shape) from in (n, in_shape); with relu, out = relu(layer(in)).
    void (*forward)(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool relu);
    // dx (n, in_shape) from dy (n, out_shape), overwritten unless null; ADDS into dw, db.
    void (*backward)(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                     const float* out, const float* dy, const BlockArgs& a);
    // Its outputs are penalties, the smallest the likeliest (the RBF): as the last layer, the
    // class scores are minus the outputs (Net::predict_u8's softmax, pylenet's argmax).
    bool penalty_output = false;
};

// Every layer kind, in a fixed order.
const std::vector<LayerKindInfo>& layer_kinds();
// The kind called `name`; std::invalid_argument listing the known names otherwise.
const LayerKindInfo& layer_kind(const std::string& name);

struct LossKindInfo {
    const char* name;  // "cross_entropy", "mse"
    // The SUM of the n rows' losses; overwrites dout (n, C) with the rows' gradient of the
    // mean loss over a batch of N rows. `smoothing` is the label smoothing of a kind that
    // takes it (0 for the others: Net's callers check it).
    double (*block_sum)(float* dout, const float* out, const int64_t* labels, int64_t n,
                        int64_t C, int64_t N, float smoothing);
    // What the summed loss of N rows of C is divided by for the mean.
    double (*mean_count)(int64_t N, int64_t C);
    // Whether the kind takes label smoothing (its target (1 - s) onehot + s / C).
    bool takes_smoothing = false;
};

// Every loss kind the fused network runs, and the one called `name` (std::invalid_argument).
const std::vector<LossKindInfo>& loss_kinds();
const LossKindInfo& loss_kind(const std::string& name);

}  // namespace pylenet
