// Bindings of the fused network (Net) and the registry of layer and loss kinds.
#include <memory>
#include <string>

#include "net/net.h"
#include "net/registry.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

// Layer tuples from Python: (kind, in, out, kernel, stride, pad, bias[, const]); const is
// None or an array-like of numbers (copied as float32 with its shape).
std::vector<LayerDesc> net_descs(const py::list& layers) {
    std::vector<LayerDesc> descs;
    for (auto item : layers) {
        auto t = item.cast<py::tuple>();
        if (t.size() != 7 && t.size() != 8)
            throw py::value_error("Net: each layer must be (kind, in, out, kernel, stride, pad, bias[, const])");
        LayerDesc d;
        d.kind = &layer_kind(t[0].cast<std::string>());
        d.in = t[1].cast<int64_t>(), d.out = t[2].cast<int64_t>(), d.kernel = t[3].cast<int64_t>();
        d.stride = t[4].cast<int64_t>(), d.pad = t[5].cast<int64_t>(), d.bias = t[6].cast<bool>();
        if (t.size() == 8 && !t[7].is_none()) {
            FArr c = as_float("Net", "const", py::object(t[7]));
            d.const_shape = shape_of(c);
            if (d.const_shape.empty()) d.const_shape = {1};  // a scalar is one value
            d.constant.assign(c.data(), c.data() + c.size());
        }
        descs.push_back(d);
    }
    return descs;
}

Shape net_input_shape(const py::tuple& input_shape) {
    if (input_shape.size() != 3) throw py::value_error("Net: input_shape must be (C, H, W)");
    return {input_shape[0].cast<int64_t>(), input_shape[1].cast<int64_t>(), input_shape[2].cast<int64_t>()};
}

namespace {

// ----------------------------------------------------------------------------- fused network

std::unique_ptr<Net> make_net(const py::list& layers, const py::tuple& input_shape) {
    const Shape s = net_input_shape(input_shape);
    return std::make_unique<Net>(net_descs(layers), s[0], s[1], s[2]);
}

// Parameter arrays as float32 (copies only when needed), checked by the net.
std::vector<FArr> net_params(const Net& net, const py::sequence& params) {
    std::vector<FArr> out;
    std::vector<Shape> shapes;
    out.reserve(net.param_shapes().size());
    shapes.reserve(net.param_shapes().size());
    for (auto item : params) {
        out.push_back(as_float("Net", "params", item));
        shapes.push_back(shape_of(out.back()));
    }
    net.check_params("parameter", shapes);
    return out;
}

FArr net_input(const Net& net, const py::object& xo) {
    FArr x = as_float("Net", "x", xo);
    net.check_input(shape_of(x));
    return x;
}

FArr py_net_forward(Net& net, const py::object& xo, const py::sequence& params) {
    FArr x = net_input(net, xo);
    std::vector<FArr> ps = net_params(net, params);
    std::vector<const float*> pp;
    for (auto& a : ps) pp.push_back(a.data());
    const int64_t N = x.shape(0);
    FArr out = new_float({N, net.out_features()});
    float* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.forward(op, x.data(), N, pp.data());
    }
    return out;
}

FArr py_net_predict_u8(Net& net, const py::array& images, const py::object& luto, int64_t pad,
                       const py::sequence& params) {
    const char* op = "Net.predict_u8";
    U8Arr img = as_u8(op, images);
    const Shape is = shape_of(img);
    FArr lut = as_float(op, "lut", luto);
    net.check_predict_u8(is, pad, lut.size());
    std::vector<FArr> ps = net_params(net, params);
    std::vector<const float*> pp;
    for (auto& a : ps) pp.push_back(a.data());
    FArr probs = new_float({is[0], net.out_features()});
    float* out = probs.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.predict_u8(out, img.data(), is[0], is[1], is[2], pad, lut.data(), pp.data());
    }
    return probs;
}

py::tuple py_net_train_step(Net& net, const py::object& xo, const py::object& labo,
                            const py::sequence& params, const py::sequence& grads,
                            const std::string& loss) {
    const char* op = "Net.train_step";
    FArr x = as_float("Net", "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_train_step(shape_of(x), shape_of(labels), labels.data());
    const int64_t N = x.shape(0), classes = net.out_features();
    const LossKindInfo& kind = loss_kind(loss);
    std::vector<FArr> ps = net_params(net, params);
    std::vector<const float*> pp;
    for (auto& a : ps) pp.push_back(a.data());
    // Gradients are written into the caller's arrays (the one binding that does so): they
    // must already be float32, C-contiguous, writeable and of the parameter's shape.
    std::vector<py::array> gs;
    std::vector<float*> gp;
    std::vector<Shape> gshapes;
    for (auto item : grads) {
        py::array g = py::array::ensure(item);
        if (!g || !py::isinstance<py::array_t<float>>(g) ||
            !(g.flags() & py::array::c_style) || !g.writeable())
            throw py::type_error("Net.train_step: gradient " + std::to_string(gs.size()) +
                                 " must be a writeable C-contiguous float32 array");
        gp.push_back(static_cast<float*>(g.mutable_data()));
        gshapes.push_back(shape_of(g));
        gs.push_back(g);
    }
    net.check_params("gradient", gshapes);
    FArr out = new_float({N, classes});
    float* outp = out.mutable_data();
    double value;
    {
        py::gil_scoped_release nogil;
        value = net.train_step(outp, gp.data(), x.data(), labels.data(), N, pp.data(), kind);
    }
    return py::make_tuple(value, out);
}



// The layer registry: kind name -> {LayerDesc slot: the layer attribute it comes from}.
py::dict py_layer_kinds() {
    py::dict out;
    for (const LayerKindInfo& k : layer_kinds()) {
        py::dict fields;
        for (int s = 0; s < kNumSlots; s++)
            if (k.fields[s]) fields[kSlotNames[s]] = k.fields[s];
        out[k.name] = fields;
    }
    return out;
}

py::tuple py_penalty_kinds() {
    py::list out;
    for (const LayerKindInfo& k : layer_kinds())
        if (k.penalty_output) out.append(k.name);
    return py::tuple(out);
}

py::tuple py_loss_kinds() {
    py::list out;
    for (const LossKindInfo& k : loss_kinds()) out.append(k.name);
    return py::tuple(out);
}

}  // namespace

void bind_net(py::module_& m) {
    py::class_<Net>(m, "Net",
                    "A layer chain run by the core in one call per "
                    "batch. layers: list of (kind, in, out, kernel, stride, pad, bias) tuples, "
                    "kind one of layer_kinds(); const (optional) is the layer's fixed array or None.")
        .def(py::init(&make_net), py::arg("layers"), py::arg("input_shape"))
        .def("forward", &py_net_forward, py::arg("x"), py::arg("params"),
             "Outputs (N, features) for x (N, C, H, W).")
        .def("predict_u8", &py_net_predict_u8, py::arg("images"), py::arg("lut"), py::arg("pad"),
             py::arg("params"),
             "Softmax of the class scores for raw uint8 images (N, h, w), padded and normalised in the core.")
        .def("train_step", &py_net_train_step, py::arg("x"), py::arg("labels"), py::arg("params"),
             py::arg("grads"), py::arg("loss") = "cross_entropy",
             "(loss, out): forward, mean loss and backward; overwrites the arrays in grads.")
        .def_property_readonly("param_shapes", [](const Net& n) {
            py::list out;
            for (const auto& s : n.param_shapes()) out.append(py::tuple(py::cast(s)));
            return out;
        }, "Parameter shapes, in the order params and grads are given.");
    m.def("layer_kinds", &py_layer_kinds,
          "The layer kinds the core runs: name -> {Net tuple slot: layer attribute it comes from}.");
    m.def("loss_kinds", &py_loss_kinds, "The loss names Net.train_step takes.");
    m.def("penalty_kinds", &py_penalty_kinds,
          "The layer kinds whose outputs are penalties (class scores = -outputs, e.g. rbf).");
}

}  // namespace py_bind
}  // namespace pylenet
