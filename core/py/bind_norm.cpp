// Bindings of the ops that behave differently in training and evaluation (BatchNorm, Dropout)
// and of global average pooling, for the layer-by-layer path; the fused network runs the same
// per-block pieces (net/kinds_norm.cpp, net/kinds_pool.cpp).
#include <optional>
#include <string>

#include "ops/batchnorm.h"
#include "ops/dropout.h"
#include "ops/noise.h"
#include "ops/pool2d.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

namespace {

// An optional (C,) float array: None, or checked to have C values.
std::optional<FArr> per_channel(const char* op, const char* arg, const py::object& o, int64_t C) {
    if (o.is_none()) return std::nullopt;
    FArr a = as_float(op, arg, o);
    if (shape_of(a) != Shape{C})
        throw py::value_error(std::string(op) + ": " + arg + " must have shape (" + std::to_string(C) +
                              ",), got " + shape_str(shape_of(a)));
    return a;
}
const float* ptr(const std::optional<FArr>& a) { return a ? a->data() : nullptr; }
py::object copy_or_none(const std::optional<FArr>& a) {
    if (!a) return py::none();
    FArr c = new_float(shape_of(*a));
    std::copy(a->data(), a->data() + a->size(), c.mutable_data());
    return std::move(c);
}

py::tuple py_batchnorm_forward_train(const py::object& xo, const py::object& wo, const py::object& bo,
                                     const py::object& rmo, const py::object& rvo, double momentum,
                                     double eps) {
    const char* op = "batchnorm_forward_train";
    FArr x = as_float(op, "x", xo);
    const Shape xs = shape_of(x);
    if (xs.size() < 2) throw py::value_error(std::string(op) + ": x must be (N, C) or (N, C, H, W), got " + shape_str(xs));
    const BatchNormParams p = check_batchnorm(op, xs, xs[1], eps, momentum, true);
    auto w = per_channel(op, "weight", wo, p.C), b = per_channel(op, "bias", bo, p.C);
    auto rm = per_channel(op, "running_mean", rmo, p.C), rv = per_channel(op, "running_var", rvo, p.C);
    if (bool(rm) != bool(rv)) throw py::value_error(std::string(op) + ": give both running statistics or neither");
    FArr y = new_float(xs), mean = new_float({p.C}), invstd = new_float({p.C});
    py::object new_rm = copy_or_none(rm), new_rv = copy_or_none(rv);
    float* rmp = rm ? static_cast<float*>(new_rm.cast<py::array>().mutable_data()) : nullptr;
    float* rvp = rv ? static_cast<float*>(new_rv.cast<py::array>().mutable_data()) : nullptr;
    float *yp = y.mutable_data(), *mp = mean.mutable_data(), *ip = invstd.mutable_data();
    {
        py::gil_scoped_release nogil;
        batchnorm_forward_train(yp, mp, ip, rmp, rvp, x.data(), ptr(w), ptr(b), p);
    }
    return py::make_tuple(y, mean, invstd, new_rm, new_rv);
}

FArr py_batchnorm_forward_eval(const py::object& xo, const py::object& wo, const py::object& bo,
                               const py::object& rmo, const py::object& rvo, double eps) {
    const char* op = "batchnorm_forward_eval";
    FArr x = as_float(op, "x", xo);
    const Shape xs = shape_of(x);
    if (xs.size() < 2) throw py::value_error(std::string(op) + ": x must be (N, C) or (N, C, H, W), got " + shape_str(xs));
    const BatchNormParams p = check_batchnorm(op, xs, xs[1], eps, 0.1, false);
    auto w = per_channel(op, "weight", wo, p.C), b = per_channel(op, "bias", bo, p.C);
    auto rm = per_channel(op, "running_mean", rmo, p.C), rv = per_channel(op, "running_var", rvo, p.C);
    if (!rm || !rv) throw py::value_error(std::string(op) + ": evaluation needs the running statistics");
    FArr y = new_float(xs);
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    batchnorm_forward_eval(yp, x.data(), rm->data(), rv->data(), ptr(w), ptr(b), p);
    return y;
}

py::tuple py_batchnorm_backward(const py::object& xo, const py::object& dyo, const py::object& meano,
                                const py::object& invstdo, const py::object& wo, double eps) {
    const char* op = "batchnorm_backward";
    FArr x = as_float(op, "x", xo), dy = as_float(op, "dy", dyo);
    const Shape xs = shape_of(x);
    check_same_shape(op, "dy", shape_of(dy), "x", xs);
    if (xs.size() < 2) throw py::value_error(std::string(op) + ": x must be (N, C) or (N, C, H, W), got " + shape_str(xs));
    const BatchNormParams p = check_batchnorm(op, xs, xs[1], eps, 0.1, true);
    auto mean = per_channel(op, "mean", meano, p.C), invstd = per_channel(op, "invstd", invstdo, p.C);
    if (!mean || !invstd) throw py::value_error(std::string(op) + ": needs the forward's mean and invstd");
    auto w = per_channel(op, "weight", wo, p.C);
    FArr dx = new_float(xs), dw = new_float({p.C}), db = new_float({p.C});
    float *dxp = dx.mutable_data(), *dwp = dw.mutable_data(), *dbp = db.mutable_data();
    {
        py::gil_scoped_release nogil;
        batchnorm_backward_train(dxp, dwp, dbp, x.data(), dy.data(), mean->data(), invstd->data(), ptr(w), p);
    }
    return py::make_tuple(dx, w ? py::object(dw) : py::object(py::none()), w ? py::object(db) : py::object(py::none()));
}

// Dropout over x (N, ...): sample i is sample first + i of the epoch; the layer's key is
// noise_key(seed, epoch, layer).
FArr py_dropout(const char* op, const py::object& xo, double p, uint64_t seed, uint64_t epoch,
                uint64_t layer, int64_t first, bool backward) {
    check_dropout(op, p);
    check_at_least(op, "first", first, 0);
    FArr x = as_float(op, backward ? "dy" : "x", xo);
    const Shape xs = shape_of(x);
    if (xs.empty()) throw py::value_error(std::string(op) + ": x must have a batch dimension");
    const int64_t N = xs[0], F = N ? x.size() / N : 0;
    FArr y = new_float(xs);
    float* yp = y.mutable_data();
    const uint64_t key = noise_key(seed, epoch, layer);
    py::gil_scoped_release nogil;
    if (backward)
        dropout_backward(yp, x.data(), N, F, p, key, first);
    else
        dropout_forward(yp, x.data(), N, F, p, key, first);
    return y;
}

FArr py_global_avgpool2d_forward(const py::object& xo) {
    const char* op = "global_avgpool2d_forward";
    FArr x = as_float(op, "x", xo);
    const Shape xs = shape_of(x);
    check_ndim(op, "x", xs, 4, "(N, C, H, W)");
    check_at_least(op, "H * W", xs[2] * xs[3], 1);
    FArr y = new_float({xs[0], xs[1], 1, 1});
    float* yp = y.mutable_data();
    py::gil_scoped_release nogil;
    global_avgpool2d_forward(yp, x.data(), xs[0], xs[1], xs[2] * xs[3]);
    return y;
}

FArr py_global_avgpool2d_backward(const py::object& dyo, const py::object& shape) {
    const char* op = "global_avgpool2d_backward";
    const Shape xs = as_shape4(op, shape);
    check_shape_arg(op, "x_shape", xs, 4, "(N, C, H, W)");
    FArr dy = as_float(op, "dy", dyo);
    if (dy.size() != xs[0] * xs[1])
        throw py::value_error(std::string(op) + ": dy must hold N * C = " + std::to_string(xs[0] * xs[1]) +
                              " values, got shape " + shape_str(shape_of(dy)));
    FArr dx = new_float(xs);
    float* dxp = dx.mutable_data();
    py::gil_scoped_release nogil;
    global_avgpool2d_backward(dxp, dy.data(), xs[0], xs[1], xs[2] * xs[3]);
    return dx;
}

}  // namespace

void bind_norm(py::module_& m) {
    m.def("batchnorm_forward_train", &py_batchnorm_forward_train, py::arg("x"), py::arg("weight"),
          py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("momentum") = 0.1,
          py::arg("eps") = 1e-5,
          "(y, mean, invstd, running_mean, running_var): batch normalisation of x (N, C[, H, W]) by the "
          "batch's statistics; fresh running statistics moved by momentum (None when not given).");
    m.def("batchnorm_forward_eval", &py_batchnorm_forward_eval, py::arg("x"), py::arg("weight"),
          py::arg("bias"), py::arg("running_mean"), py::arg("running_var"), py::arg("eps") = 1e-5,
          "y: batch normalisation of x by the running statistics.");
    m.def("batchnorm_backward", &py_batchnorm_backward, py::arg("x"), py::arg("dy"), py::arg("mean"),
          py::arg("invstd"), py::arg("weight"), py::arg("eps") = 1e-5,
          "(dx, dweight, dbias) of a training-mode batchnorm_forward_train (dweight, dbias None "
          "without weight).");
    m.def("dropout_forward",
          [](const py::object& x, double p, uint64_t seed, uint64_t epoch, uint64_t layer, int64_t first) {
              return py_dropout("dropout_forward", x, p, seed, epoch, layer, first, false);
          },
          py::arg("x"), py::arg("p"), py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("layer") = 0,
          py::arg("first") = 0,
          "Training dropout of x (N, ...): kept elements scaled by 1/(1-p), the mask drawn from "
          "(seed, epoch, layer, first + sample index).");
    m.def("dropout_backward",
          [](const py::object& dy, double p, uint64_t seed, uint64_t epoch, uint64_t layer, int64_t first) {
              return py_dropout("dropout_backward", dy, p, seed, epoch, layer, first, true);
          },
          py::arg("dy"), py::arg("p"), py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("layer") = 0,
          py::arg("first") = 0, "dx of dropout_forward with the same mask.");
    m.def("global_avgpool2d_forward", &py_global_avgpool2d_forward, py::arg("x"),
          "y (N, C, 1, 1): the mean of each (H, W) plane (AdaptiveAvgPool2d(1)).");
    m.def("global_avgpool2d_backward", &py_global_avgpool2d_backward, py::arg("dy"), py::arg("x_shape"),
          "dx (x_shape): dy spread evenly over each plane.");
}

}  // namespace py_bind
}  // namespace pylenet
