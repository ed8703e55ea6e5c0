// Bindings of the layer ops: conv, pooling, linear, the lecun98 layers and the activations;
// each checks its inputs with the op's check_*, allocates fresh outputs and runs with the GIL
// released.
#include <optional>
#include <string>

#include "ops/activations.h"
#include "ops/conv2d.h"
#include "ops/linear.h"
#include "ops/masked_conv2d.h"
#include "ops/pool2d.h"
#include "ops/rbf.h"
#include "ops/subsample2d.h"
#include "net/registry.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

namespace {

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

using UnaryFn = void (*)(float*, const float*, int64_t);
using BinaryFn = void (*)(float*, const float*, const float*, int64_t);

FArr run_unary(const char* op, UnaryFn f, const py::object& xo) {
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

FArr run_binary(const char* op, const char* first, BinaryFn f, const py::object& ao,
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

// The element-wise kind called `kind` (ValueError for another kind or an unknown name).
Unary elementwise_kind(const char* op, const std::string& kind) {
    const LayerKindInfo& k = layer_kind(kind);
    if (k.family != Family::kElementwise)
        throw py::value_error(std::string(op) + ": " + kind + " is not an element-wise kind");
    return k.unary;
}

FArr py_elementwise_forward(const std::string& kind, const py::object& xo, double a, double b) {
    const Unary u = elementwise_kind("elementwise_forward", kind);
    FArr x = as_float("elementwise_forward", "x", xo);
    FArr y = new_float(shape_of(x));
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    unary_forward(u, yp, x.data(), x.size(), float(a), float(b));
    return y;
}

FArr py_elementwise_backward(const std::string& kind, const py::object& xo, const py::object& yo,
                             const py::object& dyo, double a, double b) {
    const char* op = "elementwise_backward";
    const Unary u = elementwise_kind(op, kind);
    FArr x = as_float(op, "x", xo), y = as_float(op, "y", yo), dy = as_float(op, "dy", dyo);
    check_same_shape(op, "y", shape_of(y), "x", shape_of(x));
    check_same_shape(op, "dy", shape_of(dy), "x", shape_of(x));
    FArr dx = new_float(shape_of(x));
    float* dxp = dx.mutable_data();
    py::gil_scoped_release nogil;
    unary_backward(u, dxp, x.data(), y.data(), dy.data(), x.size(), float(a), float(b));
    return dx;
}

}  // namespace

void bind_ops(py::module_& m) {
    m.def("elementwise_forward", &py_elementwise_forward, py::arg("kind"), py::arg("x"), py::arg("a") = 0.0,
          py::arg("b") = 0.0,
          "y = f(x) for the element-wise kind `kind` (a registry name), a and b its float attributes.");
    m.def("elementwise_backward", &py_elementwise_backward, py::arg("kind"), py::arg("x"), py::arg("y"),
          py::arg("dy"), py::arg("a") = 0.0, py::arg("b") = 0.0,
          "dx = f'(x) dy for the element-wise kind `kind`, from its forward input x and output y.");
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
}

}  // namespace py_bind
}  // namespace pylenet
