// Bindings of the GPU part: cuda_info and GpuNet (the fused network on a CUDA device, or
// emulated on the host).
#include <memory>
#include <string>

#include "cuda/gpu.h"
#include "net/net.h"
#include "net/registry.h"
#include "py/convert.h"

namespace pylenet {
namespace py_bind {

// A CUDA version number (13000) as "13.0", or None for 0 (no runtime or driver).
py::object cuda_version(int v) {
    if (v <= 0) return py::none();
    return py::str(std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10));
}

namespace {

// ----------------------------------------------------------------------------- GPU network

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

// Fresh arrays of the parameter shapes, and pointers to write them.
std::vector<FArr> fresh_params(const GpuNet& net, std::vector<float*>& ptrs) {
    std::vector<FArr> out;
    for (const Shape& s : net.param_shapes()) {
        out.push_back(new_float(s));
        ptrs.push_back(out.back().mutable_data());
    }
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
    net.check_predict_u8(is, pad, lut.size());
    FArr probs = new_float({is[0], net.out_features()});
    float* out = probs.mutable_data();
    py::gil_scoped_release nogil;
    net.predict_u8(out, img.data(), is[0], is[1], is[2], pad, lut.data());
    return probs;
}

py::tuple py_gpu_train_step(GpuNet& net, const py::object& xo, const py::object& labo, double lr,
                            const std::string& loss, uint64_t seed, uint64_t epoch, int64_t first,
                            double smoothing) {
    const char* op = "GpuNet.train_step";
    FArr x = as_float(op, "x", xo);
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    net.check_train_step(shape_of(x), shape_of(labels), labels.data());
    loss_kind(loss);
    const int64_t N = x.shape(0);
    FArr out = new_float({N, net.out_features()});
    float* outp = out.mutable_data();
    gpu::StepResult r;
    {
        py::gil_scoped_release nogil;
        r = net.train_step(outp, x.data(), labels.data(), N, float(lr), loss, StepNoise{seed, epoch, first},
                           float(smoothing));
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
    net.check_predict_u8(is, pad, lut.size());
    I64Arr labels = as_int<I64Arr>(op, "labels", labo);
    check_ndim(op, "labels", shape_of(labels), 1, "(N,)");
    check_equal(op, "labels length", labels.shape(0), "images", is[0]);
    check_indices(op, "labels", labels.data(), is[0], net.out_features());
    py::gil_scoped_release nogil;
    net.set_dataset(img.data(), labels.data(), is[0], is[1], is[2], pad, lut.data());
}

py::tuple py_gpu_train_indices(GpuNet& net, const py::object& idxo, int64_t batch, const py::object& lrso,
                               const std::string& loss, bool stop_on_nonfinite, uint64_t seed,
                               uint64_t epoch, int64_t first, double smoothing) {
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
        r = net.train_indices(idx.data(), count, batch, lrs.data(), loss, stop_on_nonfinite,
                              StepNoise{seed, epoch, first}, float(smoothing));
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

}  // namespace

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
        .def_property_readonly("buffer_shapes", [](const GpuNet& n) {
            py::list out;
            for (const auto& s : n.buffer_shapes()) out.append(py::tuple(py::cast(s)));
            return out;
        }, "Buffer shapes (running statistics), in the order set_buffers takes them.")
        .def("set_buffers", [](GpuNet& n, const py::sequence& buffers) {
            std::vector<FArr> bs;
            std::vector<Shape> shapes;
            for (auto item : buffers) {
                bs.push_back(as_float("GpuNet.set_buffers", "buffers", item));
                shapes.push_back(shape_of(bs.back()));
            }
            n.check_buffers(shapes);
            std::vector<const float*> bp = data_of(bs);
            py::gil_scoped_release nogil;
            n.set_buffers(bp);
        }, py::arg("buffers"), "Uploads the buffers (running statistics).")
        .def("get_buffers", [](GpuNet& n) {
            std::vector<FArr> out;
            std::vector<float*> ptrs;
            for (const Shape& s : n.buffer_shapes()) {
                out.push_back(new_float(s));
                ptrs.push_back(out.back().mutable_data());
            }
            {
                py::gil_scoped_release nogil;
                n.get_buffers(ptrs);
            }
            return to_list(out);
        }, "The device buffers, as fresh arrays.")
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
             py::arg("loss") = "cross_entropy", py::arg("seed") = 0, py::arg("epoch") = 0, py::arg("first") = 0,
             py::arg("smoothing") = 0.0,
             "(loss, out, applied): forward, loss, backward and the update at rate lr (skipped when the "
             "loss is not finite).")
        .def("backward", &py_gpu_backward, py::arg("x"), py::arg("dy"),
             "(dx, grads) from the output gradient dy, without an update (a test hook).")
        .def("loss", &py_gpu_loss, py::arg("out"), py::arg("labels"), py::arg("loss") = "cross_entropy",
             "(mean loss, dout) of the loss kind on the device.")
        .def("set_dataset", &py_gpu_set_dataset, py::arg("images"), py::arg("labels"), py::arg("lut"),
             py::arg("pad"), "Keeps uint8 images (N, h, w) and labels on the device for train_indices.")
        .def("train_indices", &py_gpu_train_indices, py::arg("indices"), py::arg("batch"), py::arg("lrs"),
             py::arg("loss") = "cross_entropy", py::arg("stop_on_nonfinite") = false, py::arg("seed") = 0,
             py::arg("epoch") = 0, py::arg("first") = 0, py::arg("smoothing") = 0.0,
             "(losses, correct, applied) per step over the device dataset: step s trains on "
             "indices[s*batch:(s+1)*batch] at rate lrs[s].");
}

}  // namespace py_bind
}  // namespace pylenet
