// Bindings of what training needs besides the layers: losses, softmax, the data pipeline
// (padding, normalising and distorting uint8 digits in the core) and the optimiser steps.
#include <string>

#include "ops/augment.h"
#include "ops/losses.h"
#include "ops/optim.h"
#include "ops/preprocess.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

namespace {

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
    check_label_smoothing(op, smoothing);
    FArr logits = as_float(op, "logits", lo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    const Shape ls = shape_of(logits);
    check_softmax_cross_entropy(ls, shape_of(labels), labels.data());
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

}  // namespace

void bind_train(py::module_& m) {
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
}

}  // namespace py_bind
}  // namespace pylenet
