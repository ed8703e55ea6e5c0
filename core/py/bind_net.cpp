// Bindings of the fused network (Net) and of the registry: the layer and loss kinds as
// Python reads them (layer_kinds), a layer's attribute check (check_layer) and shape rule
// (layer_output_shape).
#include <cmath>
#include <memory>
#include <string>

#include "net/net.h"
#include "base/parallel.h"
#include "net/registry.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

namespace {

const char* type_word(AttrType t) {
    switch (t) {
        case AttrType::kInt: return "int";
        case AttrType::kBool: return "bool";
        case AttrType::kFloat: return "float";
        case AttrType::kTable: return "table";
        case AttrType::kMatrix: return "matrix";
    }
    return "?";
}

bool is_bool(const py::handle& v) {
    return py::isinstance<py::bool_>(v) || py::str(py::type::of(v).attr("__name__")).cast<std::string>() == "bool_";
}
// Python ints and numpy integers (they have __index__; floats do not), not bools.
bool is_int(const py::handle& v) { return !is_bool(v) && py::hasattr(v, "__index__"); }
bool is_real(const py::handle& v) { return !is_bool(v) && py::hasattr(v, "__float__") && !py::isinstance<py::str>(v); }

}  // namespace

// One layer from Python: (kind, {attribute: value}). A value left out (or None) takes the
// attribute's default; types are checked here (TypeError), ranges by the core (ValueError).
LayerDesc layer_desc(const std::string& kind_name, const py::dict& attrs) {
    LayerDesc d;
    d.kind = &layer_kind(kind_name);
    const LayerKindInfo& k = *d.kind;
    for (auto item : attrs) {
        const std::string key = py::str(item.first).cast<std::string>();
        bool known = false;
        for (const AttrInfo& a : k.attrs) known |= a.name == key;
        if (!known) {
            std::string names;
            for (const AttrInfo& a : k.attrs) names += (names.empty() ? "" : ", ") + a.name;
            throw py::value_error(k.class_name + " has no attribute '" + key + "' (it has: " +
                                  (names.empty() ? std::string("none") : names) + ")");
        }
    }
    d.values.assign(k.attrs.size(), 0.0);
    for (size_t i = 0; i < k.attrs.size(); i++) {
        const AttrInfo& a = k.attrs[i];
        const std::string what = k.class_name + ": " + a.name;
        py::object v = attrs.contains(a.name.c_str()) ? py::object(attrs[a.name.c_str()]) : py::none();
        if (v.is_none()) {
            if (!a.default_from.empty()) {
                d.values[i] = d.values[k.attr(a.default_from)];
                continue;
            }
            if (a.required) throw py::type_error(what + " is required");
            d.values[i] = a.fallback;
            continue;
        }
        switch (a.type) {
            case AttrType::kInt:
                if (!is_int(v))
                    throw py::type_error(what + " must be an int, got " + type_name(v) + " " +
                                         py::repr(v).cast<std::string>());
                d.values[i] = double(v.cast<int64_t>());
                break;
            case AttrType::kBool:
                if (!is_bool(v))
                    throw py::type_error(what + " must be True or False, got " + type_name(v) + " " +
                                         py::repr(v).cast<std::string>());
                d.values[i] = v.cast<bool>() ? 1.0 : 0.0;
                break;
            case AttrType::kFloat:
                if (!is_real(v))
                    throw py::type_error(what + " must be a number, got " + type_name(v) + " " +
                                         py::repr(v).cast<std::string>());
                d.values[i] = v.cast<double>();
                break;
            case AttrType::kTable:
            case AttrType::kMatrix: {
                FArr c = as_float(k.class_name.c_str(), a.name.c_str(), v);
                d.const_shape = shape_of(c);
                if (d.const_shape.size() != 2)
                    throw py::value_error(what + " must be a table of rows, got shape " + shape_str(d.const_shape));
                d.constant.assign(c.data(), c.data() + c.size());
                d.values[i] = std::nan("");
                break;
            }
        }
    }
    return d;
}

std::vector<LayerDesc> net_descs(const py::list& layers) {
    std::vector<LayerDesc> descs;
    for (auto item : layers) {
        if (!py::isinstance<py::tuple>(item) || py::len(item) != 2)
            throw py::type_error("Net: each layer must be a (kind, {attribute: value}) pair");
        auto t = item.cast<py::tuple>();
        descs.push_back(layer_desc(t[0].cast<std::string>(), t[1].cast<py::dict>()));
    }
    return descs;
}

Shape net_input_shape(const py::tuple& input_shape) {
    if (input_shape.size() != 3) throw py::value_error("Net: input_shape must be (C, H, W)");
    return {input_shape[0].cast<int64_t>(), input_shape[1].cast<int64_t>(), input_shape[2].cast<int64_t>()};
}

namespace {

// ----------------------------------------------------------------------------- registry

// The attribute values of a description as Python values (tables as tuples of rows).
py::dict attr_values(const LayerDesc& d) {
    py::dict out;
    const LayerKindInfo& k = *d.kind;
    for (size_t i = 0; i < k.attrs.size(); i++) {
        const AttrInfo& a = k.attrs[i];
        switch (a.type) {
            case AttrType::kInt: out[a.name.c_str()] = py::int_(d.i(i)); break;
            case AttrType::kBool: out[a.name.c_str()] = py::bool_(d.b(i)); break;
            case AttrType::kFloat: out[a.name.c_str()] = py::float_(d.values[i]); break;
            case AttrType::kTable:
            case AttrType::kMatrix: {
                py::list rows;
                const int64_t R = d.const_shape[0], C = d.const_shape[1];
                for (int64_t r = 0; r < R; r++) {
                    py::list row;
                    for (int64_t c = 0; c < C; c++) {
                        const float v = d.constant[size_t(r * C + c)];
                        if (a.type == AttrType::kTable)
                            row.append(py::int_(int(v)));
                        else
                            row.append(py::float_(v));
                    }
                    rows.append(py::tuple(row));
                }
                out[a.name.c_str()] = py::tuple(rows);
                break;
            }
        }
    }
    return out;
}

py::dict py_check_layer(const std::string& kind, const py::dict& attrs) {
    LayerDesc d = layer_desc(kind, attrs);
    check_attrs(d);
    return attr_values(d);
}

py::tuple py_layer_output_shape(const std::string& kind, const py::dict& attrs, const py::sequence& in) {
    Shape s;
    for (auto v : in) s.push_back(v.cast<int64_t>());
    return py::tuple(py::cast(layer_output_shape(layer_desc(kind, attrs), s)));
}

py::object str_or_none(const std::string& s) { return s.empty() ? py::object(py::none()) : py::object(py::str(s)); }

// The registry as Python reads it: kind name -> what the entry says.
py::dict py_layer_kinds() {
    py::dict out;
    for (const LayerKindInfo& k : layer_kinds()) {
        py::list attrs;
        for (const AttrInfo& a : k.attrs) {
            py::dict ad;
            ad["name"] = a.name;
            ad["type"] = type_word(a.type);
            ad["required"] = a.required && a.default_from.empty();
            if (a.type == AttrType::kBool)
                ad["default"] = py::bool_(a.fallback != 0.0);
            else if (a.type == AttrType::kInt)
                ad["default"] = a.required || !a.default_from.empty() ? py::object(py::none()) : py::object(py::int_(int64_t(a.fallback)));
            else if (a.type == AttrType::kFloat)
                ad["default"] = a.required ? py::object(py::none()) : py::object(py::float_(a.fallback));
            else
                ad["default"] = py::none();
            ad["default_from"] = str_or_none(a.default_from);
            ad["onnx"] = str_or_none(a.onnx);
            attrs.append(ad);
        }
        py::dict kd;
        kd["class"] = k.class_name;
        kd["torch"] = str_or_none(k.torch);
        kd["onnx"] = str_or_none(k.onnx);
        kd["attrs"] = attrs;
        kd["params"] = py::cast(k.params);
        kd["buffers"] = py::cast(k.buffers);
        kd["elementwise"] = k.family == Family::kElementwise;
        kd["penalty_output"] = k.penalty_output;
        kd["batch_coupled"] = k.coupled();
        out[k.name.c_str()] = kd;
    }
    return out;
}

py::tuple py_loss_kinds() {
    py::list out;
    for (const LossKindInfo& k : loss_kinds()) out.append(k.name);
    return py::tuple(out);
}

// ----------------------------------------------------------------------------- fused network

std::unique_ptr<Net> make_net(const py::list& layers, const py::tuple& input_shape) {
    const Shape s = net_input_shape(input_shape);
    return std::make_unique<Net>(net_descs(layers), s[0], s[1], s[2]);
}

// Arrays as float32 (copies only when needed); their shapes go to `check`.
template <class Check>
std::vector<FArr> float_arrays(const char* what, const py::sequence& arrays, Check&& check) {
    std::vector<FArr> out;
    std::vector<Shape> shapes;
    for (auto item : arrays) {
        out.push_back(as_float("Net", what, item));
        shapes.push_back(shape_of(out.back()));
    }
    check(shapes);
    return out;
}

std::vector<FArr> net_params(const Net& net, const py::sequence& params) {
    return float_arrays("params", params, [&](const std::vector<Shape>& s) { net.check_params("parameter", s); });
}
std::vector<FArr> net_buffers(const Net& net, const py::sequence& buffers) {
    return float_arrays("buffers", buffers, [&](const std::vector<Shape>& s) { net.check_buffers(s); });
}

// Arrays the step writes into in place (gradients, running statistics): each must already be
// float32, C-contiguous and writeable; their shapes go to `check`.
template <class Check>
std::vector<float*> writable_arrays(const char* what, const py::sequence& arrays, Check&& check) {
    std::vector<float*> out;
    std::vector<Shape> shapes;
    for (auto item : arrays) {
        py::array g = py::array::ensure(item);
        if (!g || !py::isinstance<py::array_t<float>>(g) || !(g.flags() & py::array::c_style) || !g.writeable())
            throw py::type_error("Net.train_step: " + std::string(what) + " " + std::to_string(out.size()) +
                                 " must be a writeable C-contiguous float32 array");
        out.push_back(static_cast<float*>(g.mutable_data()));
        shapes.push_back(shape_of(g));
    }
    check(shapes);
    return out;
}

FArr net_input(const Net& net, const py::object& xo) {
    FArr x = as_float("Net", "x", xo);
    net.check_input(shape_of(x));
    return x;
}

FArr py_net_forward(Net& net, const py::object& xo, const py::sequence& params, const py::sequence& buffers) {
    FArr x = net_input(net, xo);
    std::vector<FArr> ps = net_params(net, params), bs = net_buffers(net, buffers);
    std::vector<const float*> pp = data_of(ps), bp = data_of(bs);
    const int64_t N = x.shape(0);
    FArr out = new_float({N, net.out_features()});
    float* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.forward(op, x.data(), N, pp.data(), bp.data());
    }
    return out;
}

FArr py_net_predict_u8(Net& net, const py::array& images, const py::object& luto, int64_t pad,
                       const py::sequence& params, const py::sequence& buffers) {
    const char* op = "Net.predict_u8";
    U8Arr img = as_u8(op, images);
    const Shape is = shape_of(img);
    FArr lut = as_float(op, "lut", luto);
    net.check_predict_u8(is, pad, lut.size());
    std::vector<FArr> ps = net_params(net, params), bs = net_buffers(net, buffers);
    std::vector<const float*> pp = data_of(ps), bp = data_of(bs);
    FArr probs = new_float({is[0], net.out_features()});
    float* out = probs.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.predict_u8(out, img.data(), is[0], is[1], is[2], pad, lut.data(), pp.data(), bp.data());
    }
    return probs;
}

py::tuple py_net_train_step(Net& net, const py::object& xo, const py::object& labo,
                            const py::sequence& params, const py::sequence& grads,
                            const std::string& loss, const py::sequence& buffers, uint64_t seed,
                            uint64_t epoch, int64_t first, double smoothing) {
    const char* op = "Net.train_step";
    FArr x = as_float("Net", "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_train_step(shape_of(x), shape_of(labels), labels.data());
    check_at_least(op, "first", first, 0);
    const int64_t N = x.shape(0), classes = net.out_features();
    const LossKindInfo& kind = loss_kind(loss);
    check_loss_smoothing(op, kind, smoothing);
    std::vector<FArr> ps = net_params(net, params);
    std::vector<const float*> pp = data_of(ps);
    // Gradients and running statistics are written into the caller's arrays.
    std::vector<float*> gp = writable_arrays("gradient", grads, [&](const std::vector<Shape>& s) {
        net.check_params("gradient", s);
    });
    std::vector<float*> bp = writable_arrays("buffer", buffers, [&](const std::vector<Shape>& s) {
        net.check_buffers(s);
    });
    FArr out = new_float({N, classes});
    float* outp = out.mutable_data();
    const StepNoise noise{seed, epoch, first};
    double value;
    {
        py::gil_scoped_release nogil;
        value = net.train_step(outp, gp.data(), x.data(), labels.data(), N, pp.data(), bp.data(), kind, noise,
                               float(smoothing));
    }
    return py::make_tuple(value, out);
}

FArr py_net_input_gradient(Net& net, const py::object& xo, const py::object& douto,
                           const py::sequence& params, const py::sequence& buffers) {
    const char* op = "Net.input_gradient";
    FArr x = net_input(net, xo);
    const int64_t N = x.shape(0);
    FArr dout = as_float(op, "dout", douto);
    if (shape_of(dout) != Shape{N, net.out_features()})
        throw py::value_error(std::string(op) + ": dout must have shape " + shape_str({N, net.out_features()}) +
                              ", got " + shape_str(shape_of(dout)));
    std::vector<FArr> ps = net_params(net, params), bs = net_buffers(net, buffers);
    std::vector<const float*> pp = data_of(ps), bp = data_of(bs);
    FArr dx = new_float(shape_of(x));
    float* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.input_gradient(dxp, x.data(), dout.data(), N, pp.data(), bp.data());
    }
    return dx;
}

// (grads (b1 - b0, G), losses (b1 - b0,) float64, out (n, classes)): Net::block_gradients.
py::tuple py_net_block_gradients(Net& net, const py::object& xo, const py::object& labo, int64_t N,
                                 int64_t b0, int64_t b1, const py::sequence& params,
                                 const std::string& loss, uint64_t seed, uint64_t epoch, int64_t first,
                                 double smoothing) {
    const char* op = "Net.block_gradients";
    FArr x = as_float(op, "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_block_gradients(shape_of(x), shape_of(labels), labels.data(), N, b0, b1);
    check_at_least(op, "first", first, 0);
    const LossKindInfo& kind = loss_kind(loss);
    check_loss_smoothing(op, kind, smoothing);
    std::vector<FArr> ps = net_params(net, params);
    std::vector<const float*> pp = data_of(ps);
    const int64_t n = x.shape(0), count = b1 - b0;
    FArr grads = new_float({count, net.gradient_size()});
    FArr out = new_float({n, net.out_features()});
    py::array_t<double> losses(std::vector<py::ssize_t>{py::ssize_t(count)});
    float* gp = grads.mutable_data();
    float* op_ = out.mutable_data();
    double* lp = losses.mutable_data();
    const StepNoise noise{seed, epoch, first};
    {
        py::gil_scoped_release nogil;
        net.block_gradients(op_, gp, lp, x.data(), labels.data(), N, b0, b1, pp.data(), kind, noise,
                            float(smoothing));
    }
    return py::make_tuple(grads, losses, out);
}

// A batch's mean loss from all its blocks' loss sums (Net::mean_loss).
double py_net_mean_loss(const Net& net, const py::object& losses_o, int64_t N, const std::string& loss) {
    using DArr = py::array_t<double, py::array::c_style | py::array::forcecast>;
    DArr losses = DArr::ensure(losses_o);
    if (!losses || losses.ndim() != 1)
        throw py::type_error("Net.mean_loss: losses must be a 1-D array of the blocks' loss sums");
    check_at_least("Net.mean_loss", "N", N, 1);
    if (losses.shape(0) != batch_blocks(N))
        throw py::value_error("Net.mean_loss: a batch of " + std::to_string(N) + " has " +
                              std::to_string(batch_blocks(N)) + " blocks, got " +
                              std::to_string(losses.shape(0)) + " loss sums");
    return net.mean_loss(losses.data(), losses.shape(0), N, loss_kind(loss));
}

// (n,) = rows of parts (nblocks, n) added in order, the first copied (sum_blocks).
FArr py_sum_blocks(const py::object& parts_o) {
    FArr parts = as_float("sum_blocks", "parts", parts_o);
    if (parts.ndim() != 2 || parts.shape(0) < 1)
        throw py::value_error("sum_blocks: parts must be (nblocks >= 1, n), got " + shape_str(shape_of(parts)));
    const int64_t nb = parts.shape(0), n = parts.shape(1);
    FArr out = new_float({n});
    float* op = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        sum_blocks(op, parts.data(), n, nb, n);
    }
    return out;
}

py::list shapes_list(const std::vector<Shape>& shapes) {
    py::list out;
    for (const auto& s : shapes) out.append(py::tuple(py::cast(s)));
    return out;
}

}  // namespace

void bind_net(py::module_& m) {
    py::class_<Net>(m, "Net",
                    "A layer chain run by the core in one call per batch. layers: a list of "
                    "(kind, {attribute: value}) pairs, kind one of layer_kinds().")
        .def(py::init(&make_net), py::arg("layers"), py::arg("input_shape"))
        .def("forward", &py_net_forward, py::arg("x"), py::arg("params"), py::arg("buffers") = py::tuple(),
             "Outputs (N, features) for x (N, C, H, W), in evaluation mode.")
        .def("predict_u8", &py_net_predict_u8, py::arg("images"), py::arg("lut"), py::arg("pad"),
             py::arg("params"), py::arg("buffers") = py::tuple(),
             "Softmax of the class scores for raw uint8 images (N, h, w), padded and normalised in the core.")
        .def("train_step", &py_net_train_step, py::arg("x"), py::arg("labels"), py::arg("params"),
             py::arg("grads"), py::arg("loss") = "cross_entropy", py::arg("buffers") = py::tuple(),
             py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("first") = 0, py::arg("smoothing") = 0.0,
             "(loss, out): forward (training mode), mean loss and backward; overwrites the arrays in "
             "grads and moves the running statistics in buffers. Dropout draws from (seed, epoch, "
             "first + sample index); smoothing: cross_entropy's label smoothing.")
        .def("input_gradient", &py_net_input_gradient, py::arg("x"), py::arg("dout"), py::arg("params"),
             py::arg("buffers") = py::tuple(),
             "dx (N, C, H, W): the gradient of sum(dout * outputs) with respect to x, in evaluation mode.")
        .def_property_readonly("param_shapes", [](const Net& n) { return shapes_list(n.param_shapes()); },
                               "Parameter shapes, in the order params and grads are given.")
        .def_property_readonly("buffer_shapes", [](const Net& n) { return shapes_list(n.buffer_shapes()); },
                               "Buffer shapes (running statistics), in the order buffers are given.")
        .def_property_readonly("batch_coupled", &Net::batch_coupled,
                               "Whether a layer needs the whole batch in training (BatchNorm).")
        .def("block_gradients", &py_net_block_gradients, py::arg("x"), py::arg("labels"), py::arg("N"),
             py::arg("b0"), py::arg("b1"), py::arg("params"), py::arg("loss") = "cross_entropy",
             py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("first") = 0, py::arg("smoothing") = 0.0,
             "(grads (b1-b0, gradient_size), losses (b1-b0,) float64, out (n, classes)): train_step's "
             "per-block gradient rows and loss sums for blocks [b0, b1) of a batch of N, x and labels "
             "holding only their samples (data-parallel training).")
        .def("mean_loss", &py_net_mean_loss, py::arg("losses"), py::arg("N"), py::arg("loss") = "cross_entropy",
             "The mean loss of a batch of N from all its blocks' loss sums, as train_step computes it.")
        .def_property_readonly("out_features", &Net::out_features,
                               "Features of the last layer's output (the classes).")
        .def_property_readonly("gradient_size", &Net::gradient_size,
                               "Floats in one block_gradients row (all parameters, flattened).");
    m.def("sum_blocks", &py_sum_blocks, py::arg("parts"),
          "(n,) float32: the rows of parts (nblocks, n) added in row order, the first copied: "
          "how train_step adds its blocks' gradients.");
    m.def("batch_blocks", &batch_blocks, py::arg("N"),
          "The number of blocks training splits a batch of N into (a function of N alone).");
    m.def("layer_kinds", &py_layer_kinds,
          "The registry: kind name -> {class, torch, onnx, attrs [{name, type, required, default, "
          "default_from}], params, buffers, elementwise, penalty_output, batch_coupled}.");
    m.def("check_layer", &py_check_layer, py::arg("kind"), py::arg("attrs"),
          "The attributes of a layer of `kind` with the defaults filled in; TypeError/ValueError "
          "naming a bad one.");
    m.def("layer_output_shape", &py_layer_output_shape, py::arg("kind"), py::arg("attrs"), py::arg("in_shape"),
          "One sample's output shape for one sample's input shape (the kind's shape rule).");
    m.def("loss_kinds", &py_loss_kinds, "The loss names Net.train_step takes.");
}

}  // namespace py_bind
}  // namespace pylenet
