// The one definition of every layer and loss kind the fused network runs. An entry says what
// the kind is called (in the core, in pylenet.layers, in torch.nn and in ONNX), its attributes
// with their types, defaults and valid ranges (checked here, in the core), its parameters and
// buffers, its shape rule, and how it runs forward and backward on a block of samples. Net
// (net.h) and the GPU network (cuda/net_impl.h, by `family`) run the entries; Python reads
// them through pylenet._core.layer_kinds(): the layer classes' checks and output_shape,
// serialization, ONNX export and the torch mapping all come from here.
//
// The entries live beside their glue code, one file per family (net/kinds_*.cpp); an
// element-wise kind is a formula in ops/elementwise.h plus its entry in
// net/kinds_elementwise.cpp (and its class in pylenet/layers.py).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/checks.h"
#include "base/params.h"
#include "ops/elementwise.h"
#include "ops/loss_rows.h"

namespace pylenet {

// ------------------------------------------------------------------------- attributes
enum class AttrType : int {
    kInt,     // a whole number (Python int)
    kBool,    // True/False (for "bias": whether the layer has one)
    kFloat,   // a real number
    kTable,   // a fixed table of 0/1 rows (MaskedConv2d's connections): the layer's constant
    kMatrix,  // a fixed table of real rows (RBF's centres): the layer's constant
};

// One attribute of a kind: the layer attribute and constructor argument of that name (PyTorch's
// name where PyTorch has the layer), its type, default and valid range.
struct AttrInfo {
    std::string name;
    AttrType type = AttrType::kInt;
    bool required = true;          // no default: the constructor must give it
    double fallback = 0.0;         // the default, when not required and default_from is empty
    std::string default_from;      // the default is this other attribute's value (a pool's stride)
    double lo = -1e300, hi = 1e300;  // valid range of kInt and kFloat values
    bool lo_open = false, hi_open = false;
    std::string onnx;              // its ONNX attribute name, when export writes it as one
};

struct LayerKindInfo;

// One layer of a chain, as Python describes it: its kind and one value per attribute of the
// kind (in the kind's order; bools as 0/1), and the kind's table attribute when it has one.
struct LayerDesc {
    const LayerKindInfo* kind = nullptr;
    std::vector<double> values;
    Shape const_shape;            // the table's shape, empty when the kind has none
    std::vector<float> constant;  // its values, row-major

    int64_t i(size_t k) const { return int64_t(values[k]); }
    bool b(size_t k) const { return values[k] != 0.0; }
    float f(size_t k) const { return float(values[k]); }
};

// A layer placed in a network: its description, per-sample shapes and op parameters.
struct NetLayer {
    LayerDesc desc;
    size_t index = 0;             // its position in the chain
    Shape in_shape, out_shape;
    int64_t in_size = 0, out_size = 0;
    int weight = -1, bias = -1;   // indices into the network's parameter list (-1: none)
    int buffer = -1;              // index of its first buffer in the network's buffer list
    Conv2dParams conv;
    Pool2dParams pool;
    LinearParams linear;
};

// What a forward or backward call on a block of n samples gets besides its activations.
struct BlockArgs {
    int64_t n = 0;
    int64_t batch = 0;             // samples in the whole batch (n of them in this block)
    const float* w = nullptr;      // the layer's weight and bias (null when it has none)
    const float* b = nullptr;
    float* scratch = nullptr;      // workspace(layer, n) floats
    int32_t* argmax = nullptr;     // keeps_argmax kinds: out_size ints per sample (null: inference)
    bool training = false;         // batch statistics and dropout (false: evaluation)
    const float* state = nullptr;  // batch-coupled kinds: the batch state their combine wrote
    const double* batch_sums = nullptr;  // and the backward's sums over the batch
    float* const* buffers = nullptr;  // the layer's buffers (running statistics), in order
    uint64_t noise = 0;            // the layer's noise key this step (ops/noise.h)
    int64_t sample0 = 0;           // index in the epoch of the block's first sample
};

// How a kind runs on the GPU: the GPU network switches on this (no names compared there).
enum class Family : int {
    kConv, kMaxPool, kAvgPool, kSubsample, kGlobalAvgPool, kElementwise, kFlatten, kLinear, kRbf,
    kBatchNorm, kDropout,
};

struct LayerKindInfo {
    std::string name;        // "conv2d": the key the bindings and Python use
    std::string class_name;  // "Conv2d": its class in pylenet.layers
    std::string torch;       // "Conv2d": the torch.nn class to_torch builds ("" when none)
    std::string onnx;        // "Conv": the ONNX operator export writes ("" when none)
    std::vector<AttrInfo> attrs;
    std::vector<std::string> params;   // parameter names in order ("weight", "bias")
    std::vector<std::string> buffers;  // buffer names in order ("running_mean", "running_var")
    Family family = Family::kElementwise;
    Unary unary = Unary::kRelu;  // element-wise kinds: the formula (ops/elementwise.h)
    bool fuses_relu = false;     // forward can apply a following ReLU as it writes
    bool in_place = false;       // output is the input's memory; backward passes dy through
    bool keeps_argmax = false;   // forward records out_size int32 indices per sample
    bool penalty_output = false;  // outputs are penalties, the smallest the likeliest (RBF)
    // Validates L (attributes already in range) for the per-sample input L.in_shape ("Net:
    // <where> ..." messages), fills its op parameters and returns the output shape, appending
    // the shapes of its parameters to `params` and of its buffers to `buffers`.
    Shape (*setup)(NetLayer& L, const std::string& where, std::vector<Shape>& params,
                   std::vector<Shape>& buffers) = nullptr;
    // Scratch floats for blocks of up to `cap` samples.
    int64_t (*workspace)(const NetLayer& L, int64_t cap) = nullptr;
    // out (n, out_shape) from in (n, in_shape); with relu, out = relu(layer(in)).
    void (*forward)(const NetLayer& L, float* out, const float* in, const BlockArgs& a,
                    bool relu) = nullptr;
    // dx (n, in_shape) from dy (n, out_shape), overwritten unless null; ADDS into dw, db.
    void (*backward)(const NetLayer& L, float* dx, float* dw, float* db, const float* in,
                     const float* out, const float* dy, const BlockArgs& a) = nullptr;

    // Batch-coupled kinds (BatchNorm in training): their forward and backward need sums over
    // the whole batch. Before the layer's training forward runs on any block, the network runs
    // `stat_passes` passes: every block's forward_stats into a buffer of its own, then the
    // buffers added in block order into forward_combine, which writes the batch state (and
    // the running statistics). Backward likewise, one pass: backward_stats, backward_combine
    // (which writes the whole batch's weight gradients). Results do not depend on threads.
    int stat_passes = 0;
    int64_t (*stat_size)(const NetLayer& L) = nullptr;   // doubles per block and pass
    int64_t (*state_size)(const NetLayer& L) = nullptr;  // floats of the batch state
    void (*forward_stats)(const NetLayer& L, int pass, double* s, const float* in, int64_t n,
                          const float* state) = nullptr;
    void (*forward_combine)(const NetLayer& L, int pass, const double* total, int64_t N,
                            float* state, float* const* buffers, const float* w,
                            const float* b) = nullptr;
    void (*backward_stats)(const NetLayer& L, double* s, const float* in, const float* dy,
                           int64_t n, const float* state) = nullptr;
    void (*backward_combine)(const NetLayer& L, const double* total, int64_t N,
                             const float* state, float* dw, float* db) = nullptr;

    bool is_relu() const { return family == Family::kElementwise && unary == Unary::kRelu; }
    bool coupled() const { return stat_passes > 0; }
    // The position of attribute `name` (std::invalid_argument when the kind has none).
    size_t attr(const std::string& name) const;
};

// Every layer kind, in a fixed order.
const std::vector<LayerKindInfo>& layer_kinds();
// The kind called `name`; std::invalid_argument listing the known names otherwise.
const LayerKindInfo& layer_kind(const std::string& name);
// A description of a layer of kind `kind` from attribute values by name; the others take their
// defaults (std::invalid_argument for an unknown name or a missing required one). A table
// attribute is set afterwards through const_shape and constant. For C++ callers (the tests
// and benchmarks); Python goes through the bindings, which check types too.
LayerDesc make_layer(const std::string& kind,
                     const std::vector<std::pair<std::string, double>>& values = {});
// Checks each of d.values against its attribute's type and range, and a table attribute's
// shape against the others ("Conv2d: kernel_size must be >= 1, got 0"); std::invalid_argument.
void check_attrs(const LayerDesc& d);
// The output shape of one layer for a per-sample input shape (the kind's shape rule, with its
// messages), without building a network.
Shape layer_output_shape(const LayerDesc& d, const Shape& in_shape);

// ------------------------------------------------------------------------- losses
struct LossKindInfo {
    std::string name;  // "cross_entropy", "mse", "rbf_map"
    LossKind kind;     // the row formula (ops/loss_rows.h), on the CPU and the GPU
    bool takes_smoothing;  // label smoothing applies (cross-entropy); the others refuse one
    // The gradient scale of the batch mean for N rows of C (1/N, or 2/(N C) for mse) and what
    // the summed loss of N rows of C is divided by for the mean (N, or N C).
    float (*scale)(int64_t N, int64_t C);
    double (*mean_count)(int64_t N, int64_t C);
};

// Every loss kind the fused network runs, and the one called `name` (std::invalid_argument).
const std::vector<LossKindInfo>& loss_kinds();
const LossKindInfo& loss_kind(const std::string& name);
// The SUM of the n rows' losses of out (n, C); overwrites dout (n, C) with the rows' gradient
// of the mean loss over a batch of N rows (smoothing: the label smoothing of cross-entropy).
double loss_block_sum(const LossKindInfo& loss, float* dout, const float* out,
                      const int64_t* labels, int64_t n, int64_t C, int64_t N, float smoothing = 0.0f);
// Validates a label smoothing for `loss`: in [0, 1], and 0 unless the loss takes one.
void check_loss_smoothing(const char* op, const LossKindInfo& loss, double smoothing);

}  // namespace pylenet
