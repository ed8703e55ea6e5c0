// Registry entries of the element-wise kinds. Each runs its formula from ops/elementwise.h
// (the GPU runs the same one); its float attributes, in order, are the formula's a and b.
#include "net/kinds.h"

namespace pylenet {

namespace {

// The formula's a and b: the kind's first two attributes (0 when it has fewer).
float attr_a(const NetLayer& L) { return L.desc.values.size() > 0 ? L.desc.f(0) : 0.0f; }
float attr_b(const NetLayer& L) { return L.desc.values.size() > 1 ? L.desc.f(1) : 0.0f; }

template <class T>
void forward(const NetLayer& L, float* out, const float* in, const BlockArgs& a, bool) {
    elementwise_forward<T>(out, in, a.n * L.in_size, attr_a(L), attr_b(L));
}
// A from_output kind reads only y (its input slot may be unwritten: a ReLU fused into the
// layer before it); the others read x too.
template <class T>
void backward(const NetLayer& L, float* dx, float*, float*, const float* in, const float* out,
              const float* dy, const BlockArgs& a) {
    if (dx) elementwise_backward<T>(dx, T::from_output ? out : in, out, dy, a.n * L.in_size, attr_a(L), attr_b(L));
}

// An element-wise entry running formula T.
template <class T>
Kind unary(const char* name, const char* class_name, Unary u) {
    Kind k(name, class_name);
    k.family(Family::kElementwise).unary(u).runs(same_shape, no_workspace, forward<T>, backward<T>);
    return k;
}

}  // namespace

std::vector<LayerKindInfo> elementwise_kinds() {
    using namespace elementwise;
    return {
        unary<Relu>("relu", "ReLU", Unary::kRelu).torch("ReLU").onnx("Relu").build(),
        unary<Sigmoid>("sigmoid", "Sigmoid", Unary::kSigmoid).torch("Sigmoid").onnx("Sigmoid").build(),
        unary<Tanh>("tanh", "Tanh", Unary::kTanh).torch("Tanh").onnx("Tanh").build(),
        // LeNet5(variant="lecun98")'s squashing function 1.7159 tanh(2x/3).
        unary<ScaledTanh>("scaled_tanh", "ScaledTanh", Unary::kScaledTanh).build(),
        // lecun98's fixed input mapping y = scale x + shift.
        unary<Rescale>("rescale", "Rescale", Unary::kRescale).real("scale").real("shift").build(),
        unary<LeakyRelu>("leaky_relu", "LeakyReLU", Unary::kLeakyRelu).torch("LeakyReLU").onnx("LeakyRelu")
            .real("negative_slope", -1e300, 1e300, false, false, 0.01).onnx_attr("alpha").build(),
    };
}

}  // namespace pylenet
