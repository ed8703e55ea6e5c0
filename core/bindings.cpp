// The only pybind11 file: converts Python inputs, validates them with the core's check_*
// functions, allocates fresh outputs, and runs each kernel with the GIL released.
//
// Conversion policy: every float input is converted to a C-contiguous float32 array (a copy
// when the input is anything else); the copy is never written back and the caller's arrays
// are never modified. Labels and argmax must have an integer dtype.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "activations.h"
#include "augment.h"
#include "build_info.h"
#include "conv2d.h"
#include "gpu.h"
#include "linear.h"
#include "losses.h"
#include "masked_conv2d.h"
#include "net.h"
#include "optim.h"
#include "parallel.h"
#include "pool2d.h"
#include "preprocess.h"
#include "rbf.h"
#include "simd.h"
#include "subsample2d.h"

namespace py = pybind11;
using namespace pylenet;

namespace {

using FArr = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32Arr = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using I64Arr = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::string type_name(const py::handle& obj) {
    return py::str(py::type::of(obj).attr("__name__")).cast<std::string>();
}

// Any array-like of numbers -> C-contiguous float32 (TypeError naming the argument otherwise).
FArr as_float(const char* op, const char* arg, const py::handle& obj) {
    if (FArr::check_(obj)) return py::reinterpret_borrow<FArr>(obj);  // already as needed
    if (obj.is_none())
        throw py::type_error(std::string(op) + ": " + arg + " must be an array, got None");
    py::array arr = py::array::ensure(obj);
    if (!arr) {
        PyErr_Clear();
        throw py::type_error(std::string(op) + ": " + arg +
                             " must be an array-like of numbers, got " + type_name(obj));
    }
    const char kind = arr.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
        throw py::type_error(std::string(op) + ": " + arg +
                             " must have a real numeric dtype, got " +
                             py::str(arr.dtype()).cast<std::string>());
    // Before any copy: a broadcast view can pose as a huge array while holding a few bytes.
    check_output_size((std::string(op) + " (" + arg + ")").c_str(), double(arr.size()));
    FArr out = FArr::ensure(arr);
    // ensure() returns null (and clears numpy's error) when the converted copy cannot be
    // allocated: pybind11 turns bad_alloc into MemoryError.
    if (!out) throw std::bad_alloc();
    return out;
}

// An integer array-like (any signed/unsigned width) -> C-contiguous array of T.
template <class Arr>
Arr as_int(const char* op, const char* arg, const py::handle& obj) {
    py::array arr = py::array::ensure(obj);
    if (!arr) {
        PyErr_Clear();
        throw py::type_error(std::string(op) + ": " + arg + " must be an integer array, got " +
                             type_name(obj));
    }
    const char kind = arr.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(op) + ": " + arg +
                             " must have an integer dtype, got " +
                             py::str(arr.dtype()).cast<std::string>());
    check_output_size((std::string(op) + " (" + arg + ")").c_str(), double(arr.size()));
    Arr out = Arr::ensure(arr);
    // ensure() returns null (and clears numpy's error) when the converted copy cannot be
    // allocated: pybind11 turns bad_alloc into MemoryError.
    if (!out) throw std::bad_alloc();
    // uint64 values above INT64_MAX wrapped negative in the int64 copy: refused, as written.
    if (kind == 'u' && arr.itemsize() == 8 && sizeof(*out.data()) == 8)
        for (py::ssize_t i = 0; i < out.size(); i++)
            if (out.data()[i] < 0)
                throw py::value_error(std::string(op) + ": " + arg + "[" + std::to_string(i) + "] = " +
                                      std::to_string(uint64_t(out.data()[i])) + " does not fit int64");
    return out;
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

FArr new_float(const Shape& s) { return FArr(std::vector<py::ssize_t>(s.begin(), s.end())); }

// A shape from a sequence of ints (TypeError otherwise).
Shape as_shape4(const char* op, const py::handle& obj) {
    Shape s;
    try {
        for (auto item : py::iter(obj)) s.push_back(item.cast<int64_t>());
    } catch (const py::error_already_set&) {
        throw py::type_error(std::string(op) + ": x_shape must be a sequence of 4 ints, got " +
                             type_name(obj));
    } catch (const py::cast_error&) {
        throw py::type_error(std::string(op) + ": x_shape must be a sequence of 4 ints, got " +
                             py::repr(obj).cast<std::string>());
    }
    return s;  // its values are checked by the op's check_* function
}


// ----------------------------------------------------------------------------- conv2d

FArr py_conv2d_forward(const py::object& xo, const py::object& wo, const py::object& bo,
                       int64_t stride, int64_t padding) {
    FArr x = as_float("conv2d", "x", xo), w = as_float("conv2d", "w", wo);
    FArr b;
    std::optional<Shape> bs;
    if (!bo.is_none()) {
        b = as_float("conv2d", "b", bo);
        bs = shape_of(b);
    }
    const Conv2dParams p = check_conv2d(shape_of(x), shape_of(w), bs, stride, padding);
    FArr y = new_float({p.N, p.K, p.out_h(), p.out_w()});
    const float* bp = bo.is_none() ? nullptr : b.data();
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    conv2d_forward(yp, x.data(), w.data(), bp, p);
    return y;
}

py::tuple py_conv2d_backward(const py::object& xo, const py::object& wo, const py::object& dyo,
                             int64_t stride, int64_t padding) {
    FArr x = as_float("conv2d_backward", "x", xo), w = as_float("conv2d_backward", "w", wo);
    FArr dy = as_float("conv2d_backward", "dy", dyo);
    const Shape dys = shape_of(dy);
    const Conv2dParams p = check_conv2d(shape_of(x), shape_of(w), std::nullopt, stride, padding, &dys);
    FArr dx = new_float(shape_of(x)), dw = new_float(shape_of(w)), db = new_float({p.K});
    float *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        conv2d_backward(dxp, dwp, dbp, x.data(), w.data(), dy.data(), p);
    }
    return py::make_tuple(dx, dw, db);
}

// ----------------------------------------------------------------------------- masked conv2d

FArr py_masked_conv2d_forward(const py::object& xo, const py::object& wo, const py::object& mo,
                              const py::object& bo, int64_t stride, int64_t padding) {
    const char* op = "masked_conv2d";
    FArr x = as_float(op, "x", xo), w = as_float(op, "w", wo), mask = as_float(op, "mask", mo);
    FArr b;
    std::optional<Shape> bs;
    if (!bo.is_none()) {
        b = as_float(op, "b", bo);
        bs = shape_of(b);
    }
    const Conv2dParams p = check_masked_conv2d(shape_of(x), shape_of(w), shape_of(mask), mask.data(),
                                               bs, stride, padding);
    FArr y = new_float({p.N, p.K, p.out_h(), p.out_w()});
    const float* bp = bo.is_none() ? nullptr : b.data();
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    masked_conv2d_forward(yp, x.data(), w.data(), mask.data(), bp, p);
    return y;
}

py::tuple py_masked_conv2d_backward(const py::object& xo, const py::object& wo, const py::object& mo,
                                    const py::object& dyo, int64_t stride, int64_t padding) {
    const char* op = "masked_conv2d_backward";
    FArr x = as_float(op, "x", xo), w = as_float(op, "w", wo), mask = as_float(op, "mask", mo);
    FArr dy = as_float(op, "dy", dyo);
    const Shape dys = shape_of(dy);
    const Conv2dParams p = check_masked_conv2d(shape_of(x), shape_of(w), shape_of(mask), mask.data(),
                                               std::nullopt, stride, padding, &dys);
    FArr dx = new_float(shape_of(x)), dw = new_float(shape_of(w)), db = new_float({p.K});
    float *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        masked_conv2d_backward(dxp, dwp, dbp, x.data(), w.data(), mask.data(), dy.data(), p);
    }
    return py::make_tuple(dx, dw, db);
}

// ----------------------------------------------------------------------------- subsampling

FArr py_subsample2d_forward(const py::object& xo, const py::object& wo, const py::object& bo,
                            int64_t kernel, int64_t stride) {
    const char* op = "subsample2d";
    FArr x = as_float(op, "x", xo), w = as_float(op, "w", wo);
    FArr b;
    std::optional<Shape> bs;
    if (!bo.is_none()) {
        b = as_float(op, "b", bo);
        bs = shape_of(b);
    }
    const Pool2dParams p = check_subsample2d(shape_of(x), shape_of(w), bs, kernel, stride);
    FArr y = new_float({p.N, p.C, p.out_h(), p.out_w()});
    const float* bp = bo.is_none() ? nullptr : b.data();
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    subsample2d_forward(yp, x.data(), w.data(), bp, p);
    return y;
}

py::tuple py_subsample2d_backward(const py::object& xo, const py::object& wo, const py::object& dyo,
                                  int64_t kernel, int64_t stride) {
    const char* op = "subsample2d_backward";
    FArr x = as_float(op, "x", xo), w = as_float(op, "w", wo), dy = as_float(op, "dy", dyo);
    const Shape dys = shape_of(dy);
    const Pool2dParams p = check_subsample2d(shape_of(x), shape_of(w), std::nullopt, kernel, stride, &dys);
    FArr dx = new_float(shape_of(x)), dw = new_float({p.C}), db = new_float({p.C});
    float *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        subsample2d_backward(dxp, dwp, dbp, x.data(), w.data(), dy.data(), p);
    }
    return py::make_tuple(dx, dw, db);
}

// ----------------------------------------------------------------------------- RBF

FArr py_rbf_forward(const py::object& xo, const py::object& co) {
    FArr x = as_float("rbf", "x", xo), c = as_float("rbf", "centres", co);
    const LinearParams p = check_rbf(shape_of(x), shape_of(c));
    FArr y = new_float({p.N, p.O});
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    rbf_forward(yp, x.data(), c.data(), p);
    return y;
}

FArr py_rbf_backward(const py::object& xo, const py::object& co, const py::object& dyo) {
    const char* op = "rbf_backward";
    FArr x = as_float(op, "x", xo), c = as_float(op, "centres", co), dy = as_float(op, "dy", dyo);
    const Shape dys = shape_of(dy);
    const LinearParams p = check_rbf(shape_of(x), shape_of(c), &dys);
    FArr dx = new_float(shape_of(x));
    float* dxp = dx.mutable_data();
    py::gil_scoped_release nogil;
    rbf_backward(dxp, x.data(), c.data(), dy.data(), p);
    return dx;
}

// ----------------------------------------------------------------------------- pooling

py::tuple py_maxpool2d_forward(const py::object& xo, int64_t kernel, int64_t stride) {
    FArr x = as_float("maxpool2d", "x", xo);
    const Pool2dParams p = check_pool2d("maxpool2d", shape_of(x), kernel, stride, nullptr, true);
    const Shape ys = {p.N, p.C, p.out_h(), p.out_w()};
    FArr y = new_float(ys);
    I32Arr argmax(std::vector<py::ssize_t>(ys.begin(), ys.end()));
    float* yp = y.mutable_data();
    int32_t* ap = argmax.mutable_data();
    {
        py::gil_scoped_release nogil;
        maxpool2d_forward(yp, ap, x.data(), p);
    }
    return py::make_tuple(y, argmax);
}

FArr py_maxpool2d_backward(const py::object& dyo, const py::object& argmaxo,
                           const py::object& x_shape) {
    const char* op = "maxpool2d_backward";
    FArr dy = as_float(op, "dy", dyo);
    // Range-checked as int64 first, so that wide values cannot wrap into range as int32.
    I64Arr argmax = as_int<I64Arr>(op, "argmax", argmaxo);
    const Shape xs = as_shape4(op, x_shape), dys = shape_of(dy);
    check_maxpool2d_backward(xs, dys, shape_of(argmax), argmax.data());
    const int64_t count = numel(dys);
    std::vector<int32_t> idx(static_cast<size_t>(count));  // in range, so narrowing is exact
    for (int64_t i = 0; i < count; i++) idx[size_t(i)] = int32_t(argmax.data()[i]);
    const int32_t* ap = idx.data();
    FArr dx = new_float(xs);
    float* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        maxpool2d_backward(dxp, dy.data(), ap, xs[0], xs[1], xs[2], xs[3], dys[2], dys[3]);
    }
    return dx;
}

FArr py_avgpool2d_forward(const py::object& xo, int64_t kernel, int64_t stride) {
    FArr x = as_float("avgpool2d", "x", xo);
    const Pool2dParams p = check_pool2d("avgpool2d", shape_of(x), kernel, stride);
    FArr y = new_float({p.N, p.C, p.out_h(), p.out_w()});
    float* yp = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        avgpool2d_forward(yp, x.data(), p);
    }
    return y;
}

FArr py_avgpool2d_backward(const py::object& dyo, const py::object& x_shape, int64_t kernel,
                           int64_t stride) {
    const char* op = "avgpool2d_backward";
    FArr dy = as_float(op, "dy", dyo);
    const Shape xs = as_shape4(op, x_shape), dys = shape_of(dy);
    const Pool2dParams p = check_pool2d(op, xs, kernel, stride, &dys);
    FArr dx = new_float(xs);
    float* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        avgpool2d_backward(dxp, dy.data(), p);
    }
    return dx;
}

// ----------------------------------------------------------------------------- linear

FArr py_linear_forward(const py::object& xo, const py::object& wo, const py::object& bo) {
    FArr x = as_float("linear", "x", xo), w = as_float("linear", "w", wo);
    FArr b;
    std::optional<Shape> bs;
    if (!bo.is_none()) {
        b = as_float("linear", "b", bo);
        bs = shape_of(b);
    }
    const LinearParams p = check_linear(shape_of(x), shape_of(w), bs);
    FArr y = new_float({p.N, p.O});
    const float* bp = bo.is_none() ? nullptr : b.data();
    float* yp = y.mutable_data();
    {
        py::gil_scoped_release nogil;
        linear_forward(yp, x.data(), w.data(), bp, p);
    }
    return y;
}

py::tuple py_linear_backward(const py::object& xo, const py::object& wo, const py::object& dyo) {
    FArr x = as_float("linear_backward", "x", xo), w = as_float("linear_backward", "w", wo);
    FArr dy = as_float("linear_backward", "dy", dyo);
    const Shape dys = shape_of(dy);
    const LinearParams p = check_linear(shape_of(x), shape_of(w), std::nullopt, &dys);
    FArr dx = new_float(shape_of(x)), dw = new_float(shape_of(w)), db = new_float({p.O});
    float *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        linear_backward(dxp, dwp, dbp, x.data(), w.data(), dy.data(), p);
    }
    return py::make_tuple(dx, dw, db);
}

// ----------------------------------------------------------------------------- activations

using Unary = void (*)(float*, const float*, int64_t);
using Binary = void (*)(float*, const float*, const float*, int64_t);

FArr run_unary(const char* op, Unary f, const py::object& xo) {
    FArr x = as_float(op, "x", xo);
    FArr y = new_float(shape_of(x));
    float* yp = y.mutable_data();
    const int64_t n = x.size();
    {
        py::gil_scoped_release nogil;
        f(yp, x.data(), n);
    }
    return y;
}

FArr run_binary(const char* op, const char* first, Binary f, const py::object& ao,
                const py::object& dyo) {
    FArr a = as_float(op, first, ao), dy = as_float(op, "dy", dyo);
    check_same_shape(op, "dy", shape_of(dy), first, shape_of(a));
    FArr dx = new_float(shape_of(a));
    float* dxp = dx.mutable_data();
    const int64_t n = a.size();
    {
        py::gil_scoped_release nogil;
        f(dxp, a.data(), dy.data(), n);
    }
    return dx;
}

// ----------------------------------------------------------------------------- losses

FArr py_softmax(const py::object& xo) {
    FArr x = as_float("softmax", "x", xo);
    const Shape xs = shape_of(x);
    check_softmax(xs);
    FArr p = new_float(xs);
    float* pp = p.mutable_data();
    {
        py::gil_scoped_release nogil;
        softmax(pp, x.data(), xs[0], xs[1]);
    }
    return p;
}

py::tuple py_softmax_cross_entropy(const py::object& lo, const py::object& labo, double smoothing) {
    const char* op = "softmax_cross_entropy";
    FArr logits = as_float(op, "logits", lo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    const Shape ls = shape_of(logits);
    check_softmax_cross_entropy(ls, shape_of(labels), labels.data());
    check_label_smoothing(op, smoothing);
    FArr d = new_float(ls);
    float* dp = d.mutable_data();
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = softmax_cross_entropy(dp, logits.data(), labels.data(), ls[0], ls[1], float(smoothing));
    }
    return py::make_tuple(loss, d);
}

py::tuple py_mse_loss(const py::object& po, const py::object& to) {
    FArr pred = as_float("mse_loss", "pred", po), target = as_float("mse_loss", "target", to);
    check_mse_loss(shape_of(pred), shape_of(target));
    FArr d = new_float(shape_of(pred));
    float* dp = d.mutable_data();
    const int64_t n = pred.size();
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = mse_loss(dp, pred.data(), target.data(), n);
    }
    return py::make_tuple(loss, d);
}


py::tuple py_rbf_map_loss(const py::object& yo, const py::object& labo) {
    const char* op = "rbf_map_loss";
    FArr y = as_float(op, "y", yo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    const Shape ys = shape_of(y);
    check_rbf_map_loss(ys, shape_of(labels), labels.data());
    FArr d = new_float(ys);
    float* dp = d.mutable_data();
    double loss;
    {
        py::gil_scoped_release nogil;
        loss = rbf_map_loss(dp, y.data(), labels.data(), ys[0], ys[1]);
    }
    return py::make_tuple(loss, d);
}

// ----------------------------------------------------------------------------- fused network

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
    using U8Arr = py::array_t<uint8_t, py::array::c_style>;
    U8Arr img = U8Arr::check_(images) ? py::reinterpret_borrow<U8Arr>(images) : U8Arr::ensure(images);
    if (!img || images.dtype().kind() != 'u' || images.itemsize() != 1)
        throw py::type_error(std::string(op) + ": images must be a uint8 array");
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
                            const std::string& loss, double smoothing) {
    const char* op = "Net.train_step";
    FArr x = as_float("Net", "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_train_step(shape_of(x), shape_of(labels), labels.data());
    const int64_t N = x.shape(0), classes = net.out_features();
    const LossKindInfo& kind = loss_kind(loss);
    Net::check_loss_smoothing(kind, smoothing);
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
        value = net.train_step(outp, gp.data(), x.data(), labels.data(), N, pp.data(), kind,
                               float(smoothing));
    }
    return py::make_tuple(value, out);
}



// ----------------------------------------------------------------------------- GPU network

// A CUDA version number (13000) as "13.0", or None for 0 (no runtime or driver).
py::object cuda_version(int v) {
    if (v <= 0) return py::none();
    return py::str(std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10));
}

py::dict py_cuda_info() {
    const gpu::DeviceInfo info = gpu::device_info();
    py::dict d;
    d["compiled"] = info.compiled;
    d["usable"] = info.usable;
    d["reason"] = info.reason;
    d["device_count"] = info.device_count;
    d["name"] = info.usable ? py::object(py::str(info.name)) : py::object(py::none());
    d["capability"] = info.usable ? py::object(py::str(std::to_string(info.cc_major) + "." +
                                                       std::to_string(info.cc_minor)))
                                  : py::object(py::none());
    d["total_memory"] = info.usable ? py::object(py::int_(info.total_memory)) : py::object(py::none());
    d["runtime_version"] = cuda_version(info.runtime_version);
    d["driver_version"] = cuda_version(info.driver_version);
    d["archs"] = py::cast(info.archs);
    return d;
}

using gpu::GpuNet;
using U8Arr = py::array_t<uint8_t, py::array::c_style>;

U8Arr as_u8(const char* op, const py::array& images) {
    U8Arr img = U8Arr::check_(images) ? py::reinterpret_borrow<U8Arr>(images) : U8Arr::ensure(images);
    if (!img || images.dtype().kind() != 'u' || images.itemsize() != 1)
        throw py::type_error(std::string(op) + ": images must be a uint8 array");
    return img;
}

// Arrays of the net's parameter shapes as float32, checked by the net (`what` names them).
std::vector<FArr> gpu_arrays(const GpuNet& net, const char* op, const char* what,
                             const py::sequence& arrays) {
    std::vector<FArr> out;
    std::vector<Shape> shapes;
    for (auto item : arrays) {
        out.push_back(as_float(op, what, item));
        shapes.push_back(shape_of(out.back()));
    }
    net.check_params(what, shapes);
    return out;
}

std::vector<const float*> data_of(const std::vector<FArr>& arrays) {
    std::vector<const float*> out;
    for (const FArr& a : arrays) out.push_back(a.data());
    return out;
}

// Fresh arrays of the parameter shapes, and pointers to write them.
std::vector<FArr> fresh_params(const GpuNet& net, std::vector<float*>& ptrs) {
    std::vector<FArr> out;
    for (const Shape& s : net.param_shapes()) {
        out.push_back(new_float(s));
        ptrs.push_back(out.back().mutable_data());
    }
    return out;
}

py::list to_list(const std::vector<FArr>& arrays) {
    py::list out;
    for (const FArr& a : arrays) out.append(a);
    return out;
}

std::unique_ptr<GpuNet> make_gpu_net(const py::list& layers, const py::tuple& input_shape, bool emulate) {
    const Shape s = net_input_shape(input_shape);
    std::vector<LayerDesc> descs = net_descs(layers);
    py::gil_scoped_release nogil;  // device set-up can take a while
    return std::make_unique<GpuNet>(std::move(descs), s[0], s[1], s[2], emulate);
}

FArr gpu_input(const GpuNet& net, const char* op, const py::object& xo) {
    FArr x = as_float(op, "x", xo);
    net.check_input(shape_of(x));
    return x;
}

void py_gpu_set_optimizer(GpuNet& net, const std::string& kind, double momentum, double weight_decay,
                          bool nesterov, const py::sequence& betas, double eps) {
    gpu::OptimConfig c;
    if (kind == "sgd") {
        c.kind = gpu::OptimConfig::kSgd;
    } else if (kind == "adam") {
        c.kind = gpu::OptimConfig::kAdam;
    } else {
        throw py::value_error("GpuNet.set_optimizer: kind must be 'sgd' or 'adam', got '" + kind + "'");
    }
    if (py::len(betas) != 2) throw py::value_error("GpuNet.set_optimizer: betas must be two numbers");
    if (momentum < 0 || weight_decay < 0 || eps < 0)
        throw py::value_error("GpuNet.set_optimizer: momentum, weight_decay and eps must be >= 0");
    c.momentum = float(momentum);
    c.weight_decay = float(weight_decay);
    c.nesterov = nesterov;
    c.beta1 = betas[0].cast<double>();
    c.beta2 = betas[1].cast<double>();
    c.eps = float(eps);
    net.set_optimizer(c);
}

void py_gpu_set_state(GpuNet& net, const py::object& state, int64_t steps) {
    const char* op = "GpuNet.set_optimizer_state";
    std::vector<std::vector<FArr>> keep;
    std::vector<std::vector<const float*>> ptrs;
    const bool has = !state.is_none();
    if (has) {
        py::sequence slots = state.cast<py::sequence>();
        if (int(py::len(slots)) != net.state_slots())
            throw py::value_error(std::string(op) + ": the optimizer keeps " + std::to_string(net.state_slots()) +
                                  " state lists, got " + std::to_string(py::len(slots)));
        for (auto slot : slots) {
            keep.push_back(gpu_arrays(net, op, "state", slot.cast<py::sequence>()));
            ptrs.push_back(data_of(keep.back()));
        }
    }
    py::gil_scoped_release nogil;
    net.set_optimizer_state(ptrs, has, steps);
}

py::list py_gpu_get_state(GpuNet& net) {
    std::vector<std::vector<FArr>> arrays;
    std::vector<std::vector<float*>> ptrs;
    for (int s = 0; s < net.state_slots(); s++) {
        ptrs.emplace_back();
        arrays.push_back(fresh_params(net, ptrs.back()));
    }
    {
        py::gil_scoped_release nogil;
        net.get_optimizer_state(ptrs);
    }
    py::list out;
    for (const auto& a : arrays) out.append(to_list(a));
    return out;
}

FArr py_gpu_forward(GpuNet& net, const py::object& xo) {
    FArr x = gpu_input(net, "GpuNet.forward", xo);
    const int64_t N = x.shape(0);
    FArr out = new_float({N, net.out_features()});
    float* op = out.mutable_data();
    py::gil_scoped_release nogil;
    net.forward(op, x.data(), N);
    return out;
}

FArr py_gpu_predict_u8(GpuNet& net, const py::array& images, const py::object& luto, int64_t pad) {
    const char* op = "GpuNet.predict_u8";
    U8Arr img = as_u8(op, images);
    const Shape is = shape_of(img);
    FArr lut = as_float(op, "lut", luto);
    net.check_u8(is, pad, lut.size());
    FArr probs = new_float({is[0], net.out_features()});
    float* out = probs.mutable_data();
    py::gil_scoped_release nogil;
    net.predict_u8(out, img.data(), is[0], is[1], is[2], pad, lut.data());
    return probs;
}

py::tuple py_gpu_train_step(GpuNet& net, const py::object& xo, const py::object& labo, double lr,
                            const std::string& loss) {
    const char* op = "GpuNet.train_step";
    FArr x = as_float(op, "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_train(shape_of(x), shape_of(labels), labels.data());
    loss_kind(loss);
    const int64_t N = x.shape(0);
    FArr out = new_float({N, net.out_features()});
    float* outp = out.mutable_data();
    gpu::StepResult r;
    {
        py::gil_scoped_release nogil;
        r = net.train_step(outp, x.data(), labels.data(), N, float(lr), loss);
    }
    return py::make_tuple(r.loss, out, r.applied);
}

py::tuple py_gpu_backward(GpuNet& net, const py::object& xo, const py::object& dyo) {
    const char* op = "GpuNet.backward";
    FArr x = gpu_input(net, op, xo);
    const int64_t N = x.shape(0);
    FArr dy = as_float(op, "dy", dyo);
    if (shape_of(dy) != Shape{N, net.out_features()})
        throw py::value_error(std::string(op) + ": dy must have shape " + shape_str({N, net.out_features()}) +
                              ", got " + shape_str(shape_of(dy)));
    FArr dx = new_float(shape_of(x));
    std::vector<float*> gp;
    std::vector<FArr> grads = fresh_params(net, gp);
    float* dxp = dx.mutable_data();
    {
        py::gil_scoped_release nogil;
        net.backward(dxp, gp, x.data(), dy.data(), N);
    }
    return py::make_tuple(dx, to_list(grads));
}

py::tuple py_gpu_loss(GpuNet& net, const py::object& outo, const py::object& labo, const std::string& loss) {
    const char* op = "GpuNet.loss";
    FArr out = as_float(op, "out", outo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    check_ndim(op, "out", shape_of(out), 2, "(N, classes)");
    check_ndim(op, "labels", shape_of(labels), 1, "(N,)");
    check_at_least(op, "batch size out.shape[0]", out.shape(0), 1);
    check_equal(op, "labels length", labels.shape(0), "out rows out.shape[0]", out.shape(0));
    check_indices(op, "labels", labels.data(), labels.shape(0), net.out_features());
    if (out.shape(1) != net.out_features())
        throw py::value_error(std::string(op) + ": out must have " + std::to_string(net.out_features()) +
                              " columns, got " + std::to_string(out.shape(1)));
    loss_kind(loss);
    const int64_t N = out.shape(0);
    FArr dout = new_float({N, net.out_features()});
    float* dp = dout.mutable_data();
    double value;
    {
        py::gil_scoped_release nogil;
        value = net.loss(dp, out.data(), labels.data(), N, loss);
    }
    return py::make_tuple(value, dout);
}

void py_gpu_set_dataset(GpuNet& net, const py::array& images, const py::object& labo,
                        const py::object& luto, int64_t pad) {
    const char* op = "GpuNet.set_dataset";
    U8Arr img = as_u8(op, images);
    const Shape is = shape_of(img);
    FArr lut = as_float(op, "lut", luto);
    net.check_u8(is, pad, lut.size());
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    check_ndim(op, "labels", shape_of(labels), 1, "(N,)");
    check_equal(op, "labels length", labels.shape(0), "images", is[0]);
    check_indices(op, "labels", labels.data(), is[0], net.out_features());
    py::gil_scoped_release nogil;
    net.set_dataset(img.data(), labels.data(), is[0], is[1], is[2], pad, lut.data());
}

py::tuple py_gpu_train_indices(GpuNet& net, const py::object& idxo, int64_t batch, const py::object& lrso,
                               const std::string& loss, bool stop_on_nonfinite) {
    const char* op = "GpuNet.train_indices";
    I64Arr idx = as_int<I64Arr>(op, "indices", idxo);
    check_ndim(op, "indices", shape_of(idx), 1, "(count,)");
    check_at_least(op, "batch", batch, 1);
    const int64_t count = idx.shape(0), steps = (count + batch - 1) / batch;
    FArr lrs = as_float(op, "lrs", lrso);
    check_ndim(op, "lrs", shape_of(lrs), 1, "(steps,)");
    check_equal(op, "lrs length", lrs.shape(0), "steps ceil(count / batch)", steps);
    loss_kind(loss);
    std::vector<gpu::StepResult> r;
    {
        py::gil_scoped_release nogil;
        r = net.train_indices(idx.data(), count, batch, lrs.data(), loss, stop_on_nonfinite);
    }
    py::array_t<double> losses(steps);
    I64Arr correct(steps);
    py::array_t<bool> applied(steps);
    for (int64_t s = 0; s < steps; s++) {
        losses.mutable_at(s) = r[size_t(s)].loss;
        correct.mutable_at(s) = r[size_t(s)].correct;
        applied.mutable_at(s) = r[size_t(s)].applied;
    }
    return py::make_tuple(losses, correct, applied);
}

void bind_gpu(py::module_& m) {
    m.def("cuda_info", &py_cuda_info,
          "What the CUDA part sees: compiled, usable, reason (why not), device_count, name, capability, "
          "total_memory, runtime_version, driver_version, archs.");
    py::class_<GpuNet>(m, "GpuNet",
                       "The fused network on a CUDA device (weights, optimiser state and a dataset kept "
                       "there). emulate=True runs the same kernels on the host: a test aid.")
        .def(py::init(&make_gpu_net), py::arg("layers"), py::arg("input_shape"), py::arg("emulate") = false)
        .def_property_readonly("param_shapes", [](const GpuNet& n) {
            py::list out;
            for (const auto& s : n.param_shapes()) out.append(py::tuple(py::cast(s)));
            return out;
        }, "Parameter shapes, in the order set_params takes them.")
        .def_property_readonly("input_shape", [](const GpuNet& n) { return py::tuple(py::cast(n.input_shape())); })
        .def_property_readonly("out_features", &GpuNet::out_features)
        .def_property_readonly("emulated", &GpuNet::emulated)
        .def_property_readonly("penalty_output", &GpuNet::penalty_output)
        .def_property_readonly("state_slots", &GpuNet::state_slots,
                               "Optimizer state arrays per parameter: SGD with momentum 1, Adam 2, else 0.")
        .def_property_readonly("optimizer_steps", &GpuNet::optimizer_steps, "Updates applied so far.")
        .def_property_readonly("dataset_size", &GpuNet::dataset_size)
        .def("set_params", [](GpuNet& n, const py::sequence& params) {
            std::vector<FArr> ps = gpu_arrays(n, "GpuNet.set_params", "parameter", params);
            std::vector<const float*> pp = data_of(ps);
            py::gil_scoped_release nogil;
            n.set_params(pp);
        }, py::arg("params"), "Uploads the parameters that changed since the last upload or download.")
        .def("get_params", [](GpuNet& n) {
            std::vector<float*> ptrs;
            std::vector<FArr> out = fresh_params(n, ptrs);
            {
                py::gil_scoped_release nogil;
                n.get_params(ptrs);
            }
            return to_list(out);
        }, "The device parameters, as fresh arrays.")
        .def("set_optimizer", &py_gpu_set_optimizer, py::arg("kind"), py::kw_only(), py::arg("momentum") = 0.0,
             py::arg("weight_decay") = 0.0, py::arg("nesterov") = false,
             py::arg("betas") = py::make_tuple(0.9, 0.999), py::arg("eps") = 1e-8,
             "The update rule ('sgd' or 'adam', pylenet.optim's rules); resets the state.")
        .def("set_optimizer_state", &py_gpu_set_state, py::arg("state"), py::arg("steps"),
             "state None (fresh) or state_slots lists of per-parameter arrays; steps = updates done.")
        .def("get_optimizer_state", &py_gpu_get_state, "state_slots lists of per-parameter arrays.")
        .def("forward", &py_gpu_forward, py::arg("x"), "Outputs (N, features) for x (N, C, H, W).")
        .def("predict_u8", &py_gpu_predict_u8, py::arg("images"), py::arg("lut"), py::arg("pad"),
             "Softmax of the class scores for raw uint8 images (N, h, w), as Net.predict_u8.")
        .def("train_step", &py_gpu_train_step, py::arg("x"), py::arg("labels"), py::arg("lr"),
             py::arg("loss") = "cross_entropy",
             "(loss, out, applied): forward, loss, backward and the update at rate lr (skipped when the "
             "loss is not finite).")
        .def("backward", &py_gpu_backward, py::arg("x"), py::arg("dy"),
             "(dx, grads) from the output gradient dy, without an update (a test hook).")
        .def("loss", &py_gpu_loss, py::arg("out"), py::arg("labels"), py::arg("loss") = "cross_entropy",
             "(mean loss, dout) of the loss kind on the device.")
        .def("set_dataset", &py_gpu_set_dataset, py::arg("images"), py::arg("labels"), py::arg("lut"),
             py::arg("pad"), "Keeps uint8 images (N, h, w) and labels on the device for train_indices.")
        .def("train_indices", &py_gpu_train_indices, py::arg("indices"), py::arg("batch"), py::arg("lrs"),
             py::arg("loss") = "cross_entropy", py::arg("stop_on_nonfinite") = false,
             "(losses, correct, applied) per step over the device dataset: step s trains on "
             "indices[s*batch:(s+1)*batch] at rate lrs[s].");
}

// ----------------------------------------------------------------------------- data

// The inputs of the batch-preparation ops: uint8 images, an optional index array, a lut.
struct GatherArgs {
    py::array_t<uint8_t, py::array::c_style> img;
    Shape is, idx_shape;
    FArr lut;
    I64Arr idx;
    int64_t n = 0;
    bool has_idx = false;
    const int64_t* idx_data() const { return has_idx ? idx.data() : nullptr; }
    const Shape* idx_shape_ptr() const { return has_idx ? &idx_shape : nullptr; }
};

GatherArgs gather_args(const char* op, const py::array& images, const py::object& idxo,
                       const py::object& luto) {
    GatherArgs a;
    a.img = py::array_t<uint8_t, py::array::c_style>::ensure(images);
    if (!a.img || images.dtype().kind() != 'u' || images.itemsize() != 1)
        throw py::type_error(std::string(op) + ": images must be a uint8 array");
    a.is = shape_of(a.img);
    a.lut = as_float(op, "lut", luto);
    a.n = a.is.size() == 3 ? a.is[0] : 0;
    if (!idxo.is_none()) {
        a.has_idx = true;
        a.idx = as_int<I64Arr>(op, "idx", idxo);
        a.idx_shape = shape_of(a.idx);
        a.n = a.idx_shape.empty() ? 0 : a.idx_shape[0];
    }
    return a;
}

FArr py_gather_pad_normalize(const py::array& images, const py::object& idxo, int64_t pad,
                             const py::object& luto) {
    GatherArgs a = gather_args("gather_pad_normalize", images, idxo, luto);
    check_gather_pad_normalize(a.is, pad, a.lut.size(), a.idx_shape_ptr(), a.idx_data());
    FArr out = new_float({a.n, 1, a.is[1] + 2 * pad, a.is[2] + 2 * pad});
    float* op_ = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        gather_pad_normalize(op_, a.img.data(), a.idx_data(), a.n, a.is[1], a.is[2], pad, a.lut.data());
    }
    return out;
}

FArr py_augment_batch(const py::array& images, const py::object& idxo, int64_t pad,
                      const py::object& luto, int64_t seed, int64_t epoch, double shift,
                      double rotate, double scale, double shear, double alpha, double sigma) {
    GatherArgs a = gather_args("augment_batch", images, idxo, luto);
    AugmentParams p;
    p.shift = shift;
    p.rotate = rotate;
    p.scale = scale;
    p.shear = shear;
    p.alpha = alpha;
    p.sigma = sigma;
    check_gather_augment(a.is, pad, a.lut.size(), a.idx_shape_ptr(), a.idx_data(), seed, epoch, p);
    FArr out = new_float({a.n, 1, a.is[1] + 2 * pad, a.is[2] + 2 * pad});
    float* op_ = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        gather_augment(op_, a.img.data(), a.idx_data(), a.n, a.is[1], a.is[2], pad, a.lut.data(), p,
                       uint64_t(seed), uint64_t(epoch));
    }
    return out;
}

FArr py_warp_affine(const py::array& images, const py::object& thetao, int64_t pad,
                    const py::object& luto) {
    GatherArgs a = gather_args("warp_affine", images, py::none(), luto);
    FArr theta = as_float("warp_affine", "theta", thetao);
    check_warp_affine(a.is, shape_of(theta), theta.data(), pad, a.lut.size());
    FArr out = new_float({a.n, 1, a.is[1] + 2 * pad, a.is[2] + 2 * pad});
    float* op_ = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        warp_affine(op_, a.img.data(), a.n, a.is[1], a.is[2], pad, a.lut.data(), theta.data());
    }
    return out;
}


// ----------------------------------------------------------------------------- optimisers

// A writeable C-contiguous float32 array of `n` elements, or TypeError: the optimisers update
// the caller's parameter and state arrays in place (the one other binding that writes).
float* inplace(const char* op, const char* arg, const py::handle& obj, int64_t n) {
    py::array a = py::array::ensure(obj);
    if (!a || !py::isinstance<py::array_t<float>>(a) || !(a.flags() & py::array::c_style) ||
        !a.writeable() || a.size() != n)
        throw py::type_error(std::string(op) + ": " + arg +
                             " must be a writeable C-contiguous float32 array of " +
                             std::to_string(n) + " elements");
    return static_cast<float*>(a.mutable_data());
}

void py_sgd_update(const py::array& p, const py::object& buf, const py::array& g, double lr,
                   double momentum, double weight_decay, bool nesterov, bool first) {
    const int64_t n = p.size();
    float* pp = inplace("sgd_update", "p", p, n);
    float* bp = momentum != 0.0 ? inplace("sgd_update", "buf", buf, n) : nullptr;
    FArr gg = as_float("sgd_update", "g", g);
    check_update("sgd_update", n, gg.size());
    const float* gp = gg.data();
    py::gil_scoped_release nogil;
    sgd_update(pp, bp, gp, n, float(lr), float(momentum), float(weight_decay), nesterov, first);
}

void py_adam_update(const py::array& p, const py::array& m, const py::array& v, const py::array& g,
                    double lr, double b1, double b2, double eps, double weight_decay, double c1,
                    double c2) {
    const int64_t n = p.size();
    float* pp = inplace("adam_update", "p", p, n);
    float* mp = inplace("adam_update", "m", m, n);
    float* vp = inplace("adam_update", "v", v, n);
    FArr gg = as_float("adam_update", "g", g);
    check_update("adam_update", n, gg.size());
    const float* gp = gg.data();
    py::gil_scoped_release nogil;
    adam_update(pp, mp, vp, gp, n, float(lr), float(b1), float(b2), float(eps),
                float(weight_decay), float(c1), float(c2));
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

py::dict py_build_info() {
    const BuildInfo info = build_info();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["openmp"] = info.openmp;
    d["max_threads"] = info.max_threads;
    d["num_threads"] = get_num_threads();
    d["simd_compiled"] = py::cast(info.simd_compiled);
    d["simd_supported"] = py::cast(info.simd_supported);
    d["simd_used"] = info.simd_used;
    const gpu::DeviceInfo gi = gpu::device_info();
    d["cuda"] = gi.compiled;
    d["cuda_version"] = cuda_version(gi.runtime_version);
    d["cuda_archs"] = py::cast(gi.archs);
    if (gi.usable) {
        py::dict dev;
        dev["name"] = gi.name;
        dev["capability"] = std::to_string(gi.cc_major) + "." + std::to_string(gi.cc_minor);
        dev["total_memory"] = gi.total_memory;
        d["cuda_device"] = dev;
    } else {
        d["cuda_device"] = py::none();
    }
    return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pylenet's C++ compute core (float32, NCHW). Use it through pylenet.ops.";
    // A PYLENET_SIMD this CPU cannot run (or a typo) fails the import with its reason.
    simd_level();
    // pybind11 writes each function's signature; the docs below are one line each.

    m.def("conv2d_forward", &py_conv2d_forward, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
          py::arg("stride") = 1, py::arg("padding") = 0,
          "Cross-correlation of x (N,C,H,W) with w (K,C,R,S) plus bias b (K,) or None; "
          "y is (N,K,P,Q).");
    m.def("conv2d_backward", &py_conv2d_backward, py::arg("x"), py::arg("w"), py::arg("dy"),
          py::arg("stride") = 1, py::arg("padding") = 0,
          "Gradients (dx, dw, db) of conv2d_forward given dy (N,K,P,Q).");
    m.def("maxpool2d_forward", &py_maxpool2d_forward, py::arg("x"), py::arg("kernel") = 2,
          py::arg("stride") = 2,
          "(y, argmax): window maxima of x (N,C,H,W); argmax (int32) holds each maximum's flat index in its "
          "H*W plane (the first one on ties; NaN wins, as in PyTorch).");
    m.def("maxpool2d_backward", &py_maxpool2d_backward, py::arg("dy"), py::arg("argmax"),
          py::arg("x_shape"),
          "Routes dy to the input pixels argmax points at; dx has shape x_shape.");
    m.def("avgpool2d_forward", &py_avgpool2d_forward, py::arg("x"), py::arg("kernel") = 2,
          py::arg("stride") = 2,
          "Window means of x (N,C,H,W).");
    m.def("avgpool2d_backward", &py_avgpool2d_backward, py::arg("dy"), py::arg("x_shape"),
          py::arg("kernel") = 2, py::arg("stride") = 2,
          "Spreads each dy evenly over its window.");
    m.def("linear_forward", &py_linear_forward, py::arg("x"), py::arg("w"), py::arg("b") = py::none(),
          "y (N,O) = x (N,I) w (O,I)^T + b (O,).");
    m.def("linear_backward", &py_linear_backward, py::arg("x"), py::arg("w"), py::arg("dy"),
          "Gradients (dx, dw, db) of linear_forward.");
    m.def("sigmoid_forward", [](const py::object& x) { return run_unary("sigmoid", sigmoid_forward, x); },
          py::arg("x"), "y = 1 / (1 + exp(-x)).");
    m.def("sigmoid_backward",
          [](const py::object& y, const py::object& dy) {
              return run_binary("sigmoid_backward", "y", sigmoid_backward, y, dy);
          },
          py::arg("y"), py::arg("dy"),
          "dx = dy * y * (1 - y), from the forward output y.");
    m.def("tanh_forward", [](const py::object& x) { return run_unary("tanh", tanh_forward, x); },
          py::arg("x"), "y = tanh(x).");
    m.def("tanh_backward",
          [](const py::object& y, const py::object& dy) {
              return run_binary("tanh_backward", "y", tanh_backward, y, dy);
          },
          py::arg("y"), py::arg("dy"),
          "dx = dy * (1 - y^2), from the forward output y.");
    m.def("relu_forward", [](const py::object& x) { return run_unary("relu", relu_forward, x); },
          py::arg("x"), "y = max(x, 0); NaN propagates.");
    m.def("relu_backward",
          [](const py::object& x, const py::object& dy) {
              return run_binary("relu_backward", "x", relu_backward, x, dy);
          },
          py::arg("x"), py::arg("dy"),
          "dx = dy where x > 0, else 0; from the forward input x.");
    m.def("scaled_tanh_forward",
          [](const py::object& x) { return run_unary("scaled_tanh", scaled_tanh_forward, x); },
          py::arg("x"), "y = 1.7159 tanh(2 x / 3) (LeCun 1998's squashing function).");
    m.def("scaled_tanh_backward",
          [](const py::object& y, const py::object& dy) {
              return run_binary("scaled_tanh_backward", "y", scaled_tanh_backward, y, dy);
          },
          py::arg("y"), py::arg("dy"),
          "dx = dy * (2/3) (1.7159 - y^2 / 1.7159), from the forward output y.");
    m.def("rescale_forward",
          [](const py::object& xo, float scale, float shift) {
              FArr x = as_float("rescale", "x", xo);
              FArr y = new_float(shape_of(x));
              float* yp = y.mutable_data();
              py::gil_scoped_release nogil;
              rescale_forward(yp, x.data(), x.size(), scale, shift);
              return y;
          },
          py::arg("x"), py::arg("scale"), py::arg("shift"), "y = scale x + shift.");
    m.def("rescale_backward",
          [](const py::object& dyo, float scale) {
              FArr dy = as_float("rescale_backward", "dy", dyo);
              FArr dx = new_float(shape_of(dy));
              float* dxp = dx.mutable_data();
              py::gil_scoped_release nogil;
              rescale_backward(dxp, dy.data(), dy.size(), scale);
              return dx;
          },
          py::arg("dy"), py::arg("scale"), "dx = scale dy.");
    m.def("masked_conv2d_forward", &py_masked_conv2d_forward, py::arg("x"), py::arg("w"),
          py::arg("mask"), py::arg("b") = py::none(), py::arg("stride") = 1, py::arg("padding") = 0,
          "conv2d_forward with the weight w (K,C,R,S) times the 0/1 connection mask (K,C).");
    m.def("masked_conv2d_backward", &py_masked_conv2d_backward, py::arg("x"), py::arg("w"),
          py::arg("mask"), py::arg("dy"), py::arg("stride") = 1, py::arg("padding") = 0,
          "Gradients (dx, dw, db) of masked_conv2d_forward; dw is masked (0 where mask is 0).");
    m.def("subsample2d_forward", &py_subsample2d_forward, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none(), py::arg("kernel") = 2, py::arg("stride") = 2,
          "y (N,C,P,Q) = w[c] * window sum of x (N,C,H,W) + b[c] (trainable subsampling).");
    m.def("subsample2d_backward", &py_subsample2d_backward, py::arg("x"), py::arg("w"), py::arg("dy"),
          py::arg("kernel") = 2, py::arg("stride") = 2,
          "Gradients (dx, dw, db) of subsample2d_forward.");
    m.def("rbf_forward", &py_rbf_forward, py::arg("x"), py::arg("centres"),
          "y (N,O) = sum_j (x[n,j] - centres[i,j])^2: penalties, the smallest the likeliest.");
    m.def("rbf_backward", &py_rbf_backward, py::arg("x"), py::arg("centres"), py::arg("dy"),
          "dx (N,I) of rbf_forward given dy (N,O); the fixed centres get no gradient.");
    m.def("rbf_map_loss", &py_rbf_map_loss, py::arg("y"), py::arg("labels"),
          "(loss, dy): mean over rows of y[label] + log(exp(-0.1) + sum_i exp(-y_i)) (LeCun 1998, eq. 9).");
    m.def("softmax", &py_softmax, py::arg("x"),
          "Row-wise softmax of x (N,C); rows of p sum to 1.");
    m.def("softmax_cross_entropy", &py_softmax_cross_entropy, py::arg("logits"), py::arg("labels"),
          py::arg("smoothing") = 0.0,
          "(loss, dlogits): mean cross-entropy of softmax(logits) (N,C) against integer labels (N,) in [0, C), "
          "the target t = (1 - smoothing) onehot + smoothing / C; dlogits = (softmax - t) / N.");
    m.def("mse_loss", &py_mse_loss, py::arg("pred"), py::arg("target"),
          "(loss, dpred): mean of (pred - target)^2 over all elements; dpred = 2 (pred - target) / numel.");
    m.def("set_num_threads",
          [](int n) {
              if (n < 1)
                  throw py::value_error("set_num_threads: n must be >= 1, got " + std::to_string(n));
              set_num_threads(n);
          },
          py::arg("n"), "Threads the core uses from now on (n >= 1).");
    m.def("get_num_threads", &get_num_threads,
          "Threads the core uses (1 without OpenMP).");

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
             py::arg("grads"), py::arg("loss") = "cross_entropy", py::arg("smoothing") = 0.0,
             "(loss, out): forward, mean loss and backward; overwrites the arrays in grads. "
             "smoothing: label smoothing of cross_entropy (target (1 - s) onehot + s / C).")
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
    m.def("gather_pad_normalize", &py_gather_pad_normalize, py::arg("images"), py::arg("idx"),
          py::arg("pad"), py::arg("lut"),
          "x (n,1,H+2pad,W+2pad) = lut[images[idx]] with lut[0] in the padding (data pipeline).");
    m.def("augment_batch", &py_augment_batch, py::arg("images"), py::arg("idx"), py::arg("pad"),
          py::arg("lut"), py::arg("seed"), py::arg("epoch"), py::arg("shift") = 0.0,
          py::arg("rotate") = 0.0, py::arg("scale") = 0.0, py::arg("shear") = 0.0,
          py::arg("alpha") = 0.0, py::arg("sigma") = 4.0,
          "gather_pad_normalize with a random affine map (shift px, rotate deg, scale, shear) and "
          "elastic field (alpha, sigma px) per image, drawn from (seed, epoch, idx[i]).");
    m.def("warp_affine", &py_warp_affine, py::arg("images"), py::arg("theta"), py::arg("pad"),
          py::arg("lut"),
          "images (n,H,W) uint8 -> (n,1,H+2pad,W+2pad): output pixel (h,w) samples the padded image "
          "bilinearly at theta[i] (w-cx, h-cy, 1) + (cx, cy), theta (n,2,3); lut[0] outside.");
    m.def("sgd_update", &py_sgd_update, py::arg("p"), py::arg("buf"), py::arg("g"), py::arg("lr"),
          py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("first"),
          "In-place SGD step on p and its momentum buffer (used by pylenet.optim.SGD).");
    m.def("adam_update", &py_adam_update, py::arg("p"), py::arg("m"), py::arg("v"), py::arg("g"),
          py::arg("lr"), py::arg("b1"), py::arg("b2"), py::arg("eps"), py::arg("weight_decay"),
          py::arg("c1"), py::arg("c2"),
          "In-place Adam step on p and its moments (used by pylenet.optim.Adam).");
    m.def("simd_level", &simd_level,
          "The SIMD level the kernels run: avx512, avx2, sse2, neon or scalar.");
    m.def("set_simd_level", &simd_set_level, py::arg("level"),
          "Runs the kernels at `level` from now on (process-wide; 'auto' = "
          "the best this CPU runs). ValueError for a level that is unknown, not compiled, or not "
          "runnable here.");
    bind_gpu(m);
    m.def("build_info", &py_build_info,
          "Version, compiler, OpenMP, threads, SIMD levels and CUDA.");
}
