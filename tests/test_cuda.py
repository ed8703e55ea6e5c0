"""The GPU network (pylenet._core.GpuNet) and the Python GPU path against the CPU core and PyTorch.

Each test runs on two backends: "emulated", the GPU network's kernels run as loops over their
launch grids on the host (PYLENET_CUDA_EMULATE=1, any machine), and "gpu", the device itself,
which skips with CUDA's reason where there is no usable GPU. The GPU-only tests at the end
(PyTorch on the GPU, a real-MNIST epoch, determinism on the device) skip the same way.

Tolerances are float32's: the GPU sums in its own fixed order, so it is close to the CPU, not
bit-identical; every GPU backend is bit-identical to itself run after run.
"""
import gc
import json
import math
import weakref

import numpy as np
import pytest

import pylenet
from pylenet import (RBF, AvgPool2d, Conv2d, Flatten, LeNet5, Linear, MaskedConv2d, MaxPool2d,
                     ReLU, Rescale, ScaledTanh, Sequential, Sigmoid, Subsample2d, Tanh, Trainer,
                     TrainingDiverged, _core, evaluate, fit, predict)
from pylenet import train as train_module
from pylenet.checkpoint import load_checkpoint
from pylenet.data import DataLoader, pad_and_normalize
from pylenet.device import EMULATE_ENV, cuda_info
from pylenet.engine import LOSS_KINDS, buffer_slots, cpu_net_for, describe
from pylenet.gpu import GpuNet, gpu_net_for
from pylenet.losses import CrossEntropyLoss, get_loss
from pylenet.optim import SGD, Adam, WarmupCosineLR

INFO = cuda_info()
pytestmark = pytest.mark.skipif(not hasattr(_core, "GpuNet"), reason="this build has no _core.GpuNet")
ON_GPU = pytest.mark.skipif(not INFO["usable"], reason=f"no usable GPU: {INFO['reason']}")
BACKENDS = ["emulated", pytest.param("gpu", marks=ON_GPU)]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """"emulated" (PYLENET_CUDA_EMULATE=1) or "gpu" (the device): what device="cuda" runs on."""
    if request.param == "emulated":
        monkeypatch.setenv(EMULATE_ENV, "1")
    else:
        monkeypatch.delenv(EMULATE_ENV, raising=False)
    return request.param


def gpu_net(model, input_shape, backend):
    """A GpuNet of `model` holding its parameters and buffers."""
    net = _core.GpuNet([describe(layer) for _, layer in model.layers], tuple(input_shape),
                       emulate=backend == "emulated")
    net.set_params([p.data for p in model.parameters()])
    if net.buffer_shapes:
        net.set_buffers(buffers_of(model))
    return net


def buffers_of(model):
    """The model's buffers in the core's order (running statistics)."""
    return [getattr(layer, name) for layer, name in buffer_slots(model)]


def assert_close(actual, expected, what="", rtol=1e-5):
    """float32 agreement: relative, with an absolute floor scaled by the largest expected value."""
    expected = np.asarray(expected)
    assert np.shape(actual) == expected.shape, (what, np.shape(actual), expected.shape)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def layer_backward(model, x, dy):
    """dx and every parameter's gradient from the Python layers (the CPU core, op by op)."""
    model.train()
    model.forward(x)
    dx = model.backward(dy)
    return dx, [p.grad.copy() for p in model.parameters()]


def check_op(model, x, backend, seed=0):
    """GpuNet forward (against _core.Net and the layers) and backward (dx and the parameter
    gradients against the layers) of a small chain, from a random output gradient."""
    net = gpu_net(model, x.shape[1:], backend)
    cpu = _core.Net([describe(layer) for _, layer in model.layers], x.shape[1:])
    params = [p.data for p in model.parameters()]
    out = net.forward(x)
    assert_close(out, cpu.forward(x, params, buffers_of(model)), "forward vs Net")
    assert_close(out, model.eval().forward(x), "forward vs layers")
    dy = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    dx, grads = net.backward(x, dy)
    ref_dx, ref_grads = layer_backward(model, x, dy)
    assert_close(dx, ref_dx, "dx", rtol=1e-4)
    assert len(grads) == len(ref_grads)
    for (name, _), g, ref in zip(model.named_parameters(), grads, ref_grads):
        assert_close(g, ref, f"d{name}", rtol=1e-4)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------ ops, one by one

# (N, C, H, W, K, R, stride, pad): odd sizes, 1x1, strides, paddings larger than the kernel's half
CONV = [(1, 1, 5, 5, 1, 1, 1, 0), (3, 3, 17, 17, 4, 3, 1, 1), (2, 2, 9, 7, 3, 3, 2, 0),
        (17, 1, 8, 8, 3, 5, 1, 2), (3, 3, 11, 13, 5, 3, 3, 1), (1, 4, 6, 6, 2, 2, 2, 3)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV, ids=lambda c: "x".join(map(str, c)))
def test_conv2d(case, bias, backend):
    n, c, h, w, k, r, stride, pad = case
    rng = np.random.default_rng(sum(case))
    model = Sequential(Conv2d(c, k, r, stride=stride, padding=pad, bias=bias, rng=rng), Flatten())
    check_op(model, randn(n, c, h, w, seed=n), backend)


@pytest.mark.parametrize("pool", [MaxPool2d, AvgPool2d])
@pytest.mark.parametrize("case", [(1, 1, 2, 2, 2, 2), (3, 3, 17, 17, 3, 2), (2, 4, 9, 7, 2, 3),
                                  (17, 2, 5, 5, 1, 1), (1, 1, 17, 3, 3, 1)],
                         ids=lambda c: "x".join(map(str, c)))
def test_pooling(case, pool, backend):
    n, c, h, w, k, s = case
    check_op(Sequential(pool(k, s), Flatten()), randn(n, c, h, w, seed=h), backend)


@pytest.mark.parametrize("act", [ReLU, Sigmoid, Tanh, ScaledTanh])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 2, 5, 7), (17, 3, 4, 4)])
def test_activations(act, shape, backend):
    x = 3 * randn(*shape, seed=shape[0])
    check_op(Sequential(act(), Flatten()), x, backend)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", [(1, 1, 1), (3, 17, 3), (17, 5, 17), (4, 400, 120)],
                         ids=lambda c: "x".join(map(str, c)))
def test_linear(case, bias, backend):
    n, i, o = case
    model = Sequential(Flatten(), Linear(i, o, bias=bias, rng=np.random.default_rng(i)))
    check_op(model, randn(n, i, 1, 1, seed=o), backend)


def test_the_1998_layers(backend):
    rng = np.random.default_rng(5)
    table = [[1, 0, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]]
    model = Sequential(Rescale(1.5, -0.25), MaskedConv2d(3, 4, 3, connections=table, padding=1, rng=rng),
                       ScaledTanh(), Subsample2d(4, 2, rng=rng), Flatten(),
                       RBF(4 * 3 * 3, 5, centres=rng.choice([-1.0, 1.0], (5, 36))))
    check_op(model, randn(3, 3, 7, 7, seed=1), backend)


def test_batchnorm_dropout_global_pooling_and_leaky_relu(backend):
    """The layers that train differently from how they evaluate, in training mode on both sides:
    the batch's statistics (the layer path's are over the whole batch too), the same dropout
    masks (the hash of seed, epoch, layer and sample), the running statistics moved alike."""
    rng = np.random.default_rng(8)
    model = Sequential(Conv2d(2, 4, 3, padding=1, rng=rng), pylenet.BatchNorm2d(4), ReLU(), MaxPool2d(2),
                       Conv2d(4, 6, 3, rng=rng), pylenet.layers.LeakyReLU(0.1), pylenet.Dropout(0.3),
                       pylenet.AdaptiveAvgPool2d(1), Flatten(), Linear(6, 8, rng=rng),
                       pylenet.BatchNorm1d(8), Tanh(), pylenet.Dropout(0.5), Linear(8, 3, rng=rng))
    for layer in (model.layers[1][1], model.layers[10][1]):  # running statistics away from 0 and 1
        layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
        layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
    x = randn(9, 2, 10, 10, seed=3)
    net = gpu_net(model, x.shape[1:], backend)
    check_op(model, x, backend)  # evaluation forward; training backward, dropout and statistics
    dx, _ = net.backward(x, randn(9, 3, seed=4))  # a training forward moves the running statistics
    for got, want in zip(net.get_buffers(), buffers_of(model)):
        assert_close(got, want, "running statistics", rtol=1e-4)


def test_dropout_masks_follow_the_samples_index_in_the_epoch_as_on_the_cpu(backend):
    """A sample's mask comes from its index in the epoch (the step's or the run's first sample
    plus its place), on every device path: a train_step at first=k, and step s of a
    train_indices run started at k, mask as the CPU's step at k (+ s * batch) does."""
    rng = np.random.default_rng(14)
    model = Sequential(Flatten(), Linear(64, 32, rng=rng), pylenet.Dropout(0.5), Linear(32, 3, rng=rng))
    images, labels = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), rng.integers(0, 3, 12)
    x = pad_and_normalize(images, pad=0)
    cpu = cpu_net_for(model, (1, 8, 8))

    def cpu_step(rows, first):
        return cpu.train_step(x[rows], labels[rows], "cross_entropy", (3, 1, first))

    outs = []
    for first in (0, 40):
        net = gpu_net(model, (1, 8, 8), backend)
        net.set_optimizer("sgd")
        _, out, _ = net.train_step(x[:6], labels[:6], 0.0, "cross_entropy", 3, 1, first)
        assert_close(out, cpu_step(slice(0, 6), first)[1], f"train_step at first={first}")
        outs.append(out)
    assert not np.allclose(outs[0], outs[1])  # the precondition: the masks moved with the index
    net = gpu_net(model, (1, 8, 8), backend)
    net.set_optimizer("sgd")
    net.set_dataset(images, labels, pylenet.train._LUT, 0)
    losses, _, _ = net.train_indices(np.arange(12), 6, np.zeros(2, np.float32), "cross_entropy",
                                     seed=3, epoch=1, first=40)
    for s in range(2):
        assert losses[s] == pytest.approx(cpu_step(slice(6 * s, 6 * s + 6), 40 + 6 * s)[0], rel=1e-5), s


def test_fit_with_batchnorm_and_dropout_on_cuda_tracks_the_cpu(backend):
    def make():
        rng = np.random.default_rng(0)
        return Sequential(Conv2d(1, 4, 5, rng=rng), pylenet.BatchNorm2d(4), ReLU(), MaxPool2d(2), Flatten(),
                          Linear(4 * 14 * 14, 16, rng=rng), pylenet.Dropout(0.25), ReLU(), Linear(16, 10, rng=rng))
    images = np.random.default_rng(1).integers(0, 256, (96, 28, 28), dtype=np.uint8)
    labels = np.random.default_rng(2).integers(0, 10, 96)
    cpu, gpu = make(), make()
    fit(cpu, (images, labels), epochs=2, batch_size=32, progress=False, device="cpu")
    fit(gpu, (images, labels), epochs=2, batch_size=32, progress=False, device="cuda")
    for (name, a), (_, b) in zip(cpu.state_dict().items(), gpu.state_dict().items()):
        if a.dtype.kind == "f":
            assert_close(b, a, name, rtol=2e-4)
        else:
            assert int(a) == int(b) == 6, name  # 2 epochs of 3 batches counted on both


def test_a_whole_lenet5_forward_and_backward(backend):
    check_op(LeNet5(seed=2), randn(5, 1, 32, 32, seed=2), backend)


@pytest.mark.parametrize("kind", sorted(LOSS_KINDS))
@pytest.mark.parametrize("n,classes", [(1, 2), (3, 10), (17, 17)])
def test_losses(kind, n, classes, backend):
    model = Sequential(Flatten(), Linear(4, classes, rng=np.random.default_rng(n)))
    net = gpu_net(model, (4, 1, 1), backend)
    out = 4 * randn(n, classes, seed=classes)
    labels = np.random.default_rng(n).integers(0, classes, n)
    value, dout = net.loss(out, labels, kind)
    ref_value, ref_dout = get_loss(kind)(out, labels)
    assert value == pytest.approx(ref_value, rel=1e-5)
    assert_close(dout, ref_dout, "dout")


def test_the_loss_hook_is_not_an_optimizer_step(backend):
    images, labels = digits(8, seed=2)
    x = pad_and_normalize(images)
    model = LeNet5(seed=0)
    net, fresh = gpu_net(model, (1, 32, 32), backend), gpu_net(model, (1, 32, 32), backend)
    for n in (net, fresh):
        n.set_optimizer("adam")  # its bias correction reads the step count
    net.loss(net.forward(x), labels, "cross_entropy")
    assert net.optimizer_steps == 0
    assert net.train_step(x, labels, 1e-3)[0] == fresh.train_step(x, labels, 1e-3)[0]
    assert net.optimizer_steps == fresh.optimizer_steps == 1
    for p, q in zip(net.get_params(), fresh.get_params()):
        np.testing.assert_array_equal(p, q)


# ---------------------------------------------------------------------- the fused training step

OPTIMIZERS = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd-momentum": lambda ps: SGD(ps, lr=0.05, momentum=0.9),
    "sgd-nesterov-wd": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda ps: Adam(ps, lr=1e-3),
    "adam-wd": lambda ps: Adam(ps, lr=2e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2),
}


def digits(n, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, classes, n)


@pytest.mark.parametrize("loss,smoothing", [("cross_entropy", 0.0), ("cross_entropy", 0.2), ("mse", 0.0)])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_train_steps_match_the_cpu_engine_and_optimizer(opt, loss, smoothing, backend):
    images, labels = digits(12, seed=3)
    x = pad_and_normalize(images)
    cpu_model, gpu_model = LeNet5(seed=1), LeNet5(seed=1)
    cpu_opt, gpu_opt = OPTIMIZERS[opt](cpu_model.parameters()), OPTIMIZERS[opt](gpu_model.parameters())
    gpu = GpuNet(gpu_model, emulate=backend == "emulated")
    gpu.upload()
    gpu.upload_optimizer(gpu_opt)
    fused = cpu_net_for(cpu_model)
    for step, batch in enumerate((slice(0, 5), slice(5, 12), slice(0, 1))):
        ref_loss, ref_out = fused.train_step(x[batch], labels[batch], loss, smoothing=smoothing)
        cpu_opt.step()
        value, out, applied = gpu.net.train_step(x[batch], labels[batch], gpu_opt.lr, loss,
                                                 smoothing=smoothing)
        assert applied is True and value == pytest.approx(ref_loss, rel=1e-5), step
        assert_close(out, ref_out, f"outputs of step {step}")
    assert gpu.net.optimizer_steps == 3
    gpu.download()
    gpu.download_optimizer(gpu_opt)
    for (name, a), (_, b) in zip(gpu_model.named_parameters(), cpu_model.named_parameters()):
        assert_close(a.data, b.data, name, rtol=1e-4)
    assert gpu_opt.steps == cpu_opt.steps == 3
    assert gpu_opt.state.keys() == cpu_opt.state.keys()
    for key in cpu_opt.state:
        assert_close(gpu_opt.state[key], cpu_opt.state[key], key, rtol=1e-4)


@pytest.mark.parametrize("opt,slots", [("sgd", 0), ("sgd-momentum", 1), ("adam", 2)])
def test_state_slots_and_an_optimizer_state_round_trip(opt, slots, backend):
    model = LeNet5(seed=0)
    optimizer = OPTIMIZERS[opt](model.parameters())
    gpu = GpuNet(model, emulate=backend == "emulated")
    gpu.upload_optimizer(optimizer)
    assert gpu.net.state_slots == slots
    state = [[randn(*shape, seed=i + 10 * s) for i, shape in enumerate(gpu.net.param_shapes)]
             for s in range(slots)]
    gpu.net.set_optimizer_state(state if slots else None, 7)
    assert gpu.net.optimizer_steps == 7
    back = gpu.net.get_optimizer_state()
    assert len(back) == slots
    for row, ref in zip(back, state):
        for a, b in zip(row, ref):
            np.testing.assert_array_equal(a, b)


def test_the_binding_never_changes_its_inputs_and_returns_fresh_arrays(backend):
    model = LeNet5(seed=0)
    images, labels = digits(6)
    x = pad_and_normalize(images)
    net = gpu_net(model, (1, 32, 32), backend)
    params = [p.data.copy() for p in model.parameters()]
    saved = (x.copy(), labels.copy(), images.copy())
    net.set_optimizer("sgd", momentum=0.9)
    net.train_step(x, labels, 0.1)
    net.backward(x, np.ones((6, 10), np.float32))
    net.predict_u8(images, pylenet.train._LUT, 2)
    for a, b in zip((x, labels, images), saved):
        np.testing.assert_array_equal(a, b)
    for p, ref in zip(model.parameters(), params):  # training changed the device copy only
        np.testing.assert_array_equal(p.data, ref)
    first, second = net.get_params(), net.get_params()
    assert all(a is not b and np.array_equal(a, b) for a, b in zip(first, second))
    first[0][...] = 0  # a returned array is the caller's
    assert not np.array_equal(net.get_params()[0], first[0])


def test_float64_and_strided_inputs_are_converted_like_the_cpu_nets(backend):
    model = LeNet5(seed=0)
    net = gpu_net(model, (1, 32, 32), backend)
    x = randn(4, 1, 32, 64)[..., ::2]  # not contiguous
    ref = net.forward(np.ascontiguousarray(x))
    np.testing.assert_array_equal(net.forward(x), ref)
    np.testing.assert_array_equal(net.forward(x.astype(np.float64)), ref)


def test_the_models_gpu_network_is_cached_until_a_layer_changes(backend):
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 2, 3, rng=rng), Flatten(), Linear(2 * 6 * 6, 3, rng=rng))
    first = gpu_net_for(model, (1, 8, 8))
    assert gpu_net_for(model, (1, 8, 8)) is first and model.__dict__["_gpu"] is first
    model.layers[0][1].padding = 1  # (1, 8, 8) -> (2, 8, 8): the Linear no longer fits
    with pytest.raises(ValueError, match="in_features"):
        gpu_net_for(model, (1, 8, 8))
    model.layers[2] = ("2", Linear(2 * 8 * 8, 3, rng=rng))
    x = randn(2, 1, 8, 8)
    assert_close(gpu_net_for(model, (1, 8, 8)).forward(x), model.eval().forward(x), "rebuilt")


def test_a_models_gpu_network_goes_with_the_model_without_the_cyclic_gc(backend):
    model = LeNet5(seed=0)
    gpu = gpu_net_for(model)
    assert gpu.model is model
    gone = weakref.ref(gpu)
    del gpu
    gc.collect()
    gc.disable()  # only reference counting frees it now: no cycle may hold the device memory
    try:
        del model
        assert gone() is None
    finally:
        gc.enable()


# ------------------------------------------------------------------- the device dataset steps

def test_train_indices_equals_train_step_on_the_same_batches(backend):
    images, labels = digits(23, seed=4)
    order = np.random.default_rng(0).permutation(23)
    lrs = np.array([0.1, 0.05, 0.02], np.float32)
    a, b = LeNet5(seed=3), LeNet5(seed=3)
    net_a, net_b = gpu_net(a, (1, 32, 32), backend), gpu_net(b, (1, 32, 32), backend)
    for net in (net_a, net_b):
        net.set_optimizer("sgd", momentum=0.9, weight_decay=1e-3)
    net_a.set_dataset(images, labels, pylenet.train._LUT, 2)
    assert net_a.dataset_size == 23
    losses, correct, applied = net_a.train_indices(order, 10, lrs, "cross_entropy", False)
    assert losses.dtype == np.float64 and correct.dtype == np.int64 and applied.dtype == np.bool_
    assert losses.shape == correct.shape == applied.shape == (3,) and applied.all()
    for s in range(3):  # the last step takes the 3 samples left
        idx = order[s * 10:(s + 1) * 10]
        value, out, _ = net_b.train_step(pad_and_normalize(images[idx]), labels[idx], float(lrs[s]))
        assert losses[s] == value and correct[s] == (out.argmax(1) == labels[idx]).sum()
    for p, q in zip(net_a.get_params(), net_b.get_params()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("stop", [True, False])
def test_train_indices_skips_a_non_finite_step_and_with_stop_every_later_one(stop, backend):
    images, labels = digits(40, seed=5)
    images[images == 255] = 254
    images[17, 5, 5] = 255
    lut = pylenet.train._LUT.copy()
    lut[255] = np.nan  # sample 17, in step 1 of 4, is the only one giving a NaN loss
    lrs = np.full(4, 0.05, np.float32)
    model = LeNet5(seed=0)
    net, ref = gpu_net(model, (1, 32, 32), backend), gpu_net(model, (1, 32, 32), backend)
    for n in (net, ref):
        n.set_optimizer("sgd", momentum=0.9)
        n.set_dataset(images, labels, lut, 2)
    losses, _, applied = net.train_indices(np.arange(40), 10, lrs, "cross_entropy", stop)
    assert not math.isfinite(losses[1]) and all(math.isfinite(v) for v in losses[[0, 2, 3]] if not stop)
    assert applied.tolist() == ([True, False, False, False] if stop else [True, False, True, True])
    # the same updates made without the bad step
    ref.train_indices(np.arange(10), 10, lrs[:1], "cross_entropy", False)
    if not stop:
        ref.train_indices(np.arange(20, 40), 10, lrs[2:], "cross_entropy", False)
    assert net.optimizer_steps == ref.optimizer_steps == (1 if stop else 3)
    for p, q in zip(net.get_params(), ref.get_params()):
        np.testing.assert_array_equal(p, q)


# ----------------------------------------------------------------------------- bad inputs

def strip_op(message: str) -> str:
    """The message without its leading "Net.train_step: " / "GpuNet.forward: " operation name."""
    return message.split(": ", 1)[1] if ": " in message else message


def assert_same_error(cpu_call, gpu_call):
    with pytest.raises(Exception) as cpu:
        cpu_call()
    with pytest.raises(Exception) as gpu:
        gpu_call()
    assert type(gpu.value) is type(cpu.value), (gpu.value, cpu.value)
    assert strip_op(str(gpu.value)) == strip_op(str(cpu.value))
    return gpu.value


BAD_BATCHES = {  # name: (x, labels)
    "x of another size": (np.zeros((2, 1, 30, 32), np.float32), np.zeros(2, np.int64)),
    "x without channels": (np.zeros((2, 32, 32), np.float32), np.zeros(2, np.int64)),
    "x of objects": (np.zeros((2, 1, 32, 32), object), np.zeros(2, np.int64)),
    "label too large": (np.zeros((2, 1, 32, 32), np.float32), np.array([0, 10])),
    "negative label": (np.zeros((2, 1, 32, 32), np.float32), np.array([-1, 0])),
    "float labels": (np.zeros((2, 1, 32, 32), np.float32), np.array([0.0, 1.0])),
    "labels of another length": (np.zeros((2, 1, 32, 32), np.float32), np.arange(3)),
    "empty batch": (np.zeros((0, 1, 32, 32), np.float32), np.zeros(0, np.int64)),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batches_give_the_cpu_nets_errors(case, backend):
    model = LeNet5(seed=0)
    x, labels = BAD_BATCHES[case]
    cpu = cpu_net_for(model)
    net = gpu_net(model, (1, 32, 32), backend)
    assert_same_error(lambda: cpu.train_step(x, labels), lambda: net.train_step(x, labels, 0.1))
    if "label" not in case and "empty" not in case:
        assert_same_error(lambda: cpu.forward(x), lambda: net.forward(x))


def test_bad_chains_and_uint8_inputs_give_the_cpu_nets_errors(backend):
    emulate = backend == "emulated"
    bad_chain = [("conv2d", 1, 6, 5, 1, 0, True), ("linear", 10, 10, 0, 1, 0, True)]
    assert_same_error(lambda: _core.Net(bad_chain, (1, 32, 32)),
                      lambda: _core.GpuNet(bad_chain, (1, 32, 32), emulate=emulate))
    lenet = [describe(layer) for _, layer in LeNet5().layers]
    assert_same_error(lambda: _core.Net(lenet, (1, 28, 28)),
                      lambda: _core.GpuNet(lenet, (1, 28, 28), emulate=emulate))
    model = LeNet5(seed=0)
    cpu, net = cpu_net_for(model), gpu_net(model, (1, 32, 32), backend)
    images, lut = digits(3)[0], pylenet.train._LUT
    for args in ((images, lut, 1), (images, lut[:10], 2), (images.astype(np.float32), lut, 2)):
        assert_same_error(lambda: cpu.predict_proba(*args), lambda: net.predict_u8(*args))
    with pytest.raises(ValueError, match=r"labels\[2\] = 10 is outside \[0, 10\)"):
        net.set_dataset(images, np.array([0, 1, 10]), lut, 2)


def test_the_python_api_gives_the_cpus_errors_on_cuda(backend):
    model = LeNet5(seed=0)
    images, labels = digits(10)
    cases = [
        lambda device: fit(model, (images, labels.astype(float)), epochs=1, progress=False, device=device),
        lambda device: fit(model, (np.zeros((4, 1, 28, 28), np.float32), labels[:4]), epochs=1,
                           progress=False, device=device),
        lambda device: fit(model, (images.astype(np.int32), labels), epochs=1, progress=False, device=device),
        lambda device: fit(model, [(pad_and_normalize(images), np.full(10, 12))], epochs=1,
                           progress=False, device=device),
        lambda device: evaluate(model, (images, np.full(10, 10)), device=device),
        lambda device: predict(model, images[:2, :, :27], device=device),
        lambda device: predict(model, np.zeros((2, 1, 30, 30), np.float32), device=device),
    ]
    before = model.state_dict()
    for case in cases:
        assert_same_error(lambda: case("cpu"), lambda: case("cuda"))
    # out-of-range labels in an (images, labels) tuple: the CPU finds them in a batch, the GPU
    # when the dataset is uploaded, before any step
    bad = labels.copy()
    bad[7] = 10
    with pytest.raises(ValueError, match=r"labels\[\d\] = 10 is outside \[0, 10\)"):
        fit(model, (images, bad), epochs=1, batch_size=4, progress=False, device="cpu")
    model.load_state_dict(before)
    with pytest.raises(ValueError, match=r"labels\[7\] = 10 is outside \[0, 10\)"):
        fit(model, (images, bad), epochs=1, batch_size=4, progress=False, device="cuda")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_what_the_gpu_cannot_train_is_refused_by_name(backend):
    model = LeNet5()

    class Lion(SGD):
        def step(self):
            pass

    class Hinge:
        def __call__(self, out, labels):
            return 0.0, np.zeros_like(out)

    with pytest.raises(TypeError, match="runs pylenet.optim.SGD and Adam on the GPU, got Lion"):
        Trainer(model, Lion(model.parameters(), lr=0.1), device="cuda")
    with pytest.raises(TypeError, match=r"built-in losses \['cross_entropy', 'mse', 'rbf_map'\].*got Hinge"):
        Trainer(model, loss=Hinge(), device="cuda")
    with pytest.raises(ValueError, match="fused=False .* cannot be combined with device='cuda'"):
        Trainer(model, fused=False, device="cuda")
    with pytest.raises(ValueError, match="optimizer must hold exactly model.parameters()"):
        Trainer(model, SGD(model.parameters()[:2], lr=0.1), device="cuda")
    # "auto" trains such a setup on the CPU instead
    assert Trainer(model, Lion(model.parameters(), lr=0.1), device="auto").device == "cpu"
    assert Trainer(model, device="auto").device == "cuda"


# --------------------------------------------------------------------- fit/evaluate/predict

def train(device, data, *, epochs=1, seed=0, model_seed=1, batch_size=16, opt="sgd-momentum",
          schedule=False, **kwargs):
    """(model, history, optimizer) of a fit on `device`."""
    model = LeNet5(seed=model_seed)
    optimizer = OPTIMIZERS[opt](model.parameters())
    scheduler = WarmupCosineLR(optimizer, T_max=epochs, warmup=0.5) if schedule else None
    history = fit(model, data, epochs=epochs, batch_size=batch_size, seed=seed, optimizer=optimizer,
                  scheduler=scheduler, progress=False, device=device, **kwargs)
    return model, history, optimizer


def assert_same_weights(a, b):
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


def assert_close_runs(gpu, cpu, rtol=1e-3):
    (gm, gh, go), (cm, ch, co) = gpu, cpu
    for (name, p), (_, q) in zip(gm.named_parameters(), cm.named_parameters()):
        assert_close(p.data, q.data, name, rtol=rtol)
    assert list(gh) == list(ch) and gh.epochs == ch.epochs
    assert gh["lr"] == ch["lr"] and gh["skipped"] == ch["skipped"]
    assert gh["loss"] == pytest.approx(ch["loss"], rel=1e-4)
    assert go.steps == co.steps and go.state.keys() == co.state.keys() and go.lr == co.lr


@pytest.mark.parametrize("opt,schedule", [("sgd-momentum", True), ("adam", False)])
def test_fit_on_cuda_is_close_to_fit_on_the_cpu(opt, schedule, backend):
    data, val = digits(96, seed=6), digits(20, seed=7)
    runs = [train(device, data, epochs=2, opt=opt, schedule=schedule, validation=val)
            for device in ("cuda", "cpu")]
    assert_close_runs(*runs)
    assert {"val_loss", "val_accuracy"} <= set(runs[0][1])


def test_fit_on_cuda_with_label_smoothing_is_close_to_the_cpu(backend):
    data = digits(96, seed=6)
    runs = [train(device, data, opt="adam", loss=CrossEntropyLoss(label_smoothing=0.2))
            for device in ("cuda", "cpu")]
    assert_close_runs(*runs)
    plain = train("cuda", data, opt="adam")
    assert abs(plain[1]["loss"][-1] - runs[0][1]["loss"][-1]) > 1e-3  # the smoothing reached the GPU


def test_fit_on_cuda_is_bit_identical_run_after_run(backend):
    data = digits(64, seed=8)
    first, second = (train("cuda", data, schedule=True) for _ in range(2))
    assert_same_weights(first[0], second[0])
    assert first[1]["loss"] == second[1]["loss"]


def test_the_progress_bars_chunks_do_not_change_the_result(backend, monkeypatch):
    data = digits(80, seed=9)
    whole = train("cuda", data, schedule=True)
    monkeypatch.setattr(train_module, "GPU_CHUNK_STEPS", 2)
    monkeypatch.setattr(train_module, "_live_progress", lambda: True)  # the bar is drawn
    chunked = train("cuda", data, schedule=True)
    assert_same_weights(whole[0], chunked[0])
    assert whole[1]["loss"] == chunked[1]["loss"] and whole[2].lr == chunked[2].lr


def test_the_uploaded_dataset_and_host_batches_train_alike(backend):
    images, labels = digits(50, seed=10)
    on_device = train("cuda", (images, labels))
    host_floats = train("cuda", (pad_and_normalize(images), labels))  # one train_step per batch
    loader = train("cuda", DataLoader(images, labels, batch_size=16, seed=0))
    assert_same_weights(on_device[0], host_floats[0])
    assert_same_weights(on_device[0], loader[0])
    assert on_device[1].records[0]["accuracy"] == host_floats[1].records[0]["accuracy"]


def test_a_dataset_the_device_has_no_room_for_is_trained_batch_by_batch(backend, monkeypatch):
    images, labels = digits(50, seed=13)
    on_device = train("cuda", (images, labels))
    refused = []

    def no_room(self, *args, **kwargs):
        refused.append(len(args[0]))
        raise RuntimeError("CUDA error in cudaMalloc: out of memory")

    monkeypatch.setattr(train_module, "_DATASET_UPLOAD", no_room)
    from_host = train("cuda", (images, labels))
    assert refused == [50]
    assert_same_weights(on_device[0], from_host[0])


def test_a_dataloader_with_drop_last_uses_the_cpus_batches(backend):
    images, labels = digits(50, seed=11)
    runs = [train(device, DataLoader(images, labels, batch_size=16, seed=3, drop_last=True))
            for device in ("cuda", "cpu")]
    assert_close_runs(*runs)
    assert runs[0][2].steps == 3


def test_augmented_training_on_cuda_is_close_to_the_cpus(backend):
    data = digits(48, seed=12)
    runs = [train(device, data, augment="affine") for device in ("cuda", "cpu")]
    assert_close_runs(*runs)


def test_resuming_on_cuda_is_bit_identical_to_a_straight_run(backend, tmp_path):
    data = digits(48, seed=13)
    straight = train("cuda", data, epochs=2, schedule=True)
    model = LeNet5(seed=1)
    opt = OPTIMIZERS["sgd-momentum"](model.parameters())
    trainer = Trainer(model, opt, scheduler=WarmupCosineLR(opt, T_max=2, warmup=0.5), batch_size=16,
                      progress=False, checkpoint=tmp_path / "a.ckpt", device="cuda")
    trainer.fit(data, epochs=1)
    resumed = LeNet5(seed=5)
    opt2 = OPTIMIZERS["sgd-momentum"](resumed.parameters())
    trainer2 = Trainer(resumed, opt2, scheduler=WarmupCosineLR(opt2, T_max=2, warmup=0.5),
                       batch_size=16, progress=False, device="cuda")
    trainer2.restore(load_checkpoint(tmp_path / "a.ckpt"))
    trainer2.fit(data, epochs=2)
    assert_same_weights(straight[0], resumed)
    assert trainer2.history["loss"] == straight[1]["loss"]


def test_a_run_can_change_device_between_epochs(backend):
    data = digits(48, seed=23)
    straight = train("cpu", data, epochs=2, schedule=True)
    model = LeNet5(seed=1)
    opt = OPTIMIZERS["sgd-momentum"](model.parameters())
    trainer = Trainer(model, opt, scheduler=WarmupCosineLR(opt, T_max=2, warmup=0.5), batch_size=16,
                      progress=False)
    model.to("cuda")
    trainer.fit(data, epochs=1)  # the GPU's momentum buffers come back as the CPU's state
    model.to("cpu")
    history = trainer.fit(data, epochs=2)
    assert_close_runs((model, history, opt), straight)


def test_a_checkpoint_written_after_cuda_training_is_the_cpus_format(backend, tmp_path):
    data = digits(40, seed=14)
    gpu_model, _, gpu_opt = train("cuda", data, opt="adam")
    cpu_model, _, cpu_opt = train("cpu", data, opt="adam")
    gpu_model.save(tmp_path / "g.ckpt", optimizer=gpu_opt)
    cpu_model.save(tmp_path / "c.ckpt", optimizer=cpu_opt)
    g, c = load_checkpoint(tmp_path / "g.ckpt"), load_checkpoint(tmp_path / "c.ckpt")
    assert g.arch == c.arch and g.params.keys() == c.params.keys()
    assert g.optimizer["config"] == c.optimizer["config"]
    assert g.optimizer["state"].keys() == c.optimizer["state"].keys()
    for name, value in g.params.items():
        np.testing.assert_array_equal(value, dict(gpu_model.named_parameters())[name].data)
    assert pylenet.load_model(tmp_path / "g.ckpt").device == "cpu"


def test_a_model_moved_to_cuda_trains_evaluates_and_predicts_there(backend):
    data = digits(40, seed=15)
    model = LeNet5(seed=1).to("cuda")
    assert model.device == "cuda" and all(layer.device == "cuda" for _, layer in model)
    params = [p.data for p in model.parameters()]
    fit(model, data, epochs=1, batch_size=16, progress=False)
    gpu = model.__dict__["_gpu"]
    assert isinstance(gpu, GpuNet) and gpu.emulate == (backend == "emulated")
    # the host arrays were updated in place, and are what evaluate/predict on the GPU use
    assert all(p.data is a for p, a in zip(model.parameters(), params))
    on_gpu = evaluate(model, data)
    on_cpu = evaluate(model, data, device="cpu")
    assert on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-5)
    labels, probs = predict(model, data[0])
    ref_labels, ref_probs = predict(model.cpu(), data[0])
    assert_close(probs, ref_probs, "probabilities")
    assert model.device == "cpu"


def test_host_changes_between_calls_reach_the_gpu(backend):
    images, labels = digits(30, seed=16)
    model = LeNet5(seed=1)
    trainer = Trainer(model, batch_size=16, progress=False, device="cuda")
    trainer.fit((images, labels), epochs=1)
    model.layers[-1][1].bias.data[...] = 5.0  # a host edit between calls
    _, probs = predict(model, images, device="cuda")
    assert_close(probs, predict(model, images, device="cpu")[1], "after the edit")
    trainer.optimizer.lr = 0.0  # and a new rate: epoch 2 then changes nothing
    before = model.state_dict()
    trainer.fit((images, labels), epochs=2)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_predict_and_evaluate_on_cuda_match_the_cpu_for_float_inputs_and_lecun98(backend):
    images, labels = digits(9, seed=17)
    for model in (LeNet5(seed=2, activation="tanh", pooling="avg"), LeNet5(variant="lecun98", seed=2)):
        x = pad_and_normalize(images)
        for inputs in (images, x, [x[:4], x[4:]]):
            assert_close(predict(model, inputs, device="cuda")[1], predict(model, inputs, device="cpu")[1],
                         repr(model))
        assert evaluate(model, (x, labels), device="cuda")["loss"] == pytest.approx(
            evaluate(model, (x, labels), device="cpu")["loss"], rel=1e-5)


def test_lecun98_trains_on_cuda_close_to_the_cpu(backend):
    data = digits(32, seed=18)
    runs = []
    for device in ("cuda", "cpu"):
        model = LeNet5(variant="lecun98", seed=0)
        opt = SGD(model.parameters(), lr=0.002, momentum=0.9)
        history = fit(model, data, epochs=1, batch_size=16, optimizer=opt, progress=False, device=device)
        runs.append((model, history, opt))
    assert_close_runs(*runs)


# ------------------------------------------------------------------------ non-finite losses

def nan_model():
    model = LeNet5(seed=0)
    model.layers[-1][1].bias.data[0] = np.nan  # every loss is NaN
    return model


@pytest.mark.parametrize("float_data", [False, True], ids=["uint8-on-device", "float-batches"])
def test_divergence_on_cuda_raises_the_cpus_error(float_data, backend):
    images, labels = digits(40, seed=19)
    data = (pad_and_normalize(images), labels) if float_data else (images, labels)
    errors = []
    for device in ("cuda", "cpu"):
        model = nan_model()
        before = model.state_dict()
        with pytest.raises(TrainingDiverged) as info:
            fit(model, data, epochs=1, batch_size=16, progress=False, device=device)
        errors.append(str(info.value))
        for name, value in model.state_dict().items():  # nothing was applied
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert errors[0] == errors[1] and "loss became nan at epoch 1, batch 0" in errors[0]


@pytest.mark.parametrize("float_data", [False, True], ids=["uint8-on-device", "float-batches"])
def test_skipping_every_step_on_cuda_records_what_the_cpu_records(float_data, backend):
    images, labels = digits(40, seed=20)
    data = (pad_and_normalize(images), labels) if float_data else (images, labels)
    records = []
    for device in ("cuda", "cpu"):
        history = fit(nan_model(), data, epochs=1, batch_size=16, on_nonfinite="skip", progress=False,
                      device=device)
        records.append({k: v for k, v in history.records[0].items() if k not in ("time", "images_per_s")})
    assert records[0] == records[1] == {"epoch": 1, "lr": records[1]["lr"], "loss": None,
                                        "accuracy": None, "skipped": 3}


def test_a_bad_batch_mid_epoch_is_skipped_or_raised_as_on_the_cpu(backend):
    images, labels = digits(48, seed=21)
    x = pad_and_normalize(images)
    x[20, 0, 3, 3] = np.nan  # batch 1 of 3
    for on_nonfinite in ("raise", "skip"):
        runs = []
        for device in ("cuda", "cpu"):
            model = LeNet5(seed=1)
            opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
            batches = [(x[i:i + 16], labels[i:i + 16]) for i in range(0, 48, 16)]
            try:
                history = fit(model, batches, epochs=1, optimizer=opt, on_nonfinite=on_nonfinite,
                              progress=False, device=device)
                runs.append((model, history, opt))
            except TrainingDiverged as e:
                runs.append((model, str(e), opt))
        (gm, gh, go), (cm, ch, co) = runs
        for (name, p), (_, q) in zip(gm.named_parameters(), cm.named_parameters()):
            assert_close(p.data, q.data, name, rtol=1e-4)
        assert go.steps == co.steps == (1 if on_nonfinite == "raise" else 2)
        if on_nonfinite == "raise":
            assert gh == ch and "batch 1" in gh
        else:
            assert gh["skipped"] == ch["skipped"] == [1]


# ------------------------------------------------------------------------------------ the CLI

def test_cli_trains_evaluates_and_predicts_on_cuda(backend, mnist_dir, tmp_path, capsys):
    from PIL import Image

    from pylenet.cli import main
    out = tmp_path / "run"
    code = main([str(a) for a in ("train", "--data", mnist_dir, "--epochs", 1, "--limit", 256, "--out",
                                  out, "--no-progress", "--device", "cuda")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "device: cuda" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"] == "cuda"
    code = main(["evaluate", "--model", str(out / "model.ckpt"), "--data", str(mnist_dir),
                 "--device", "cuda", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=2e-4)
    digit = tmp_path / "digit.png"
    Image.fromarray(digits(1)[0][0]).save(digit)
    assert main(["predict", "--model", str(out / "model.ckpt"), "--device", "cuda", str(digit)]) == 0
    assert capsys.readouterr().out.startswith(f"{digit}: ")


def test_cli_auto_picks_cuda_when_it_can_be_used(backend):
    from pylenet.cli import _model_device
    assert _model_device("auto", LeNet5()) == "cuda"
    assert _model_device("cpu", LeNet5()) == "cpu"


# ------------------------------------------------------------------------------ the GPU itself

ACCURACY_BAND = 0.006  # one real MNIST epoch: GPU and CPU test accuracies, at most 0.6 points apart

@ON_GPU
def test_emulation_and_the_device_agree():
    model = LeNet5(seed=3)
    x = randn(64, 1, 32, 32, seed=3)
    dy = randn(64, 10, seed=4)
    emulated, device = gpu_net(model, (1, 32, 32), "emulated"), gpu_net(model, (1, 32, 32), "gpu")
    assert_close(device.forward(x), emulated.forward(x), "forward")
    for a, b in zip(device.backward(x, dy)[1], emulated.backward(x, dy)[1]):
        assert_close(a, b, "gradient", rtol=1e-4)


@ON_GPU
def test_training_on_the_gpu_is_bit_identical_run_after_run(monkeypatch):
    monkeypatch.delenv(EMULATE_ENV, raising=False)
    data = digits(2000, seed=22)
    for batch_size in (64, 1000):
        first, second = (train("cuda", data, batch_size=batch_size, schedule=True) for _ in range(2))
        assert_same_weights(first[0], second[0])


@pytest.fixture
def torch_fp32():
    """torch, with its convolutions and matrix products in float32 arithmetic for this test, as
    bench/gpu_bench.py runs them: cuDNN allows TF32 by default, about 1e-3 relative error on an
    Ampere or later GPU, against the 1e-5 of these comparisons. (Set and put back by hand: the
    flags are properties, which some pytest versions' monkeypatch cannot restore.)"""
    torch = pytest.importorskip("torch")
    flags = (torch.backends.cudnn, torch.backends.cuda.matmul)
    before = [f.allow_tf32 for f in flags]
    for f in flags:
        f.allow_tf32 = False
    yield torch
    for f, value in zip(flags, before):
        f.allow_tf32 = value


@pytest.fixture
def torch_cuda(torch_fp32):
    """torch_fp32, skipping where PyTorch has no CUDA."""
    if not torch_fp32.cuda.is_available():
        pytest.skip("PyTorch here has no CUDA")
    return torch_fp32


def test_the_pytorch_comparisons_run_without_tf32(torch_fp32):
    assert torch_fp32.backends.cudnn.allow_tf32 is False
    assert torch_fp32.backends.cuda.matmul.allow_tf32 is False


@ON_GPU
@pytest.mark.parametrize("case", CONV, ids=lambda c: "x".join(map(str, c)))
def test_conv2d_against_pytorch_on_the_gpu(case, torch_cuda):
    torch = torch_cuda
    n, c, h, w, k, r, stride, pad = case
    model = Sequential(Conv2d(c, k, r, stride=stride, padding=pad, rng=np.random.default_rng(1)), Flatten())
    x = randn(n, c, h, w, seed=2)
    net = gpu_net(model, x.shape[1:], "gpu")
    conv = model.layers[0][1]
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    tw = torch.tensor(conv.weight.data, device="cuda", requires_grad=True)
    tb = torch.tensor(conv.bias.data, device="cuda", requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=pad).flatten(1)
    dy = randn(*ty.shape, seed=3)
    ty.backward(torch.tensor(dy, device="cuda"))
    assert_close(net.forward(x), ty.detach().cpu().numpy(), "forward")
    dx, (dw, db) = net.backward(x, dy)
    assert_close(dx, tx.grad.cpu().numpy(), "dx", rtol=1e-4)
    assert_close(dw, tw.grad.cpu().numpy(), "dw", rtol=1e-4)
    assert_close(db, tb.grad.cpu().numpy(), "db", rtol=1e-4)


@ON_GPU
@pytest.mark.parametrize("op", ["max", "avg", "relu", "sigmoid", "tanh", "linear"])
def test_pool_activation_and_linear_against_pytorch_on_the_gpu(op, torch_cuda):
    torch = torch_cuda
    F = torch.nn.functional
    layer = {"max": MaxPool2d(3, 2), "avg": AvgPool2d(2, 3), "relu": ReLU(), "sigmoid": Sigmoid(),
             "tanh": Tanh(), "linear": None}[op]
    if op == "linear":
        model = Sequential(Flatten(), Linear(3 * 9 * 9, 17, rng=np.random.default_rng(0)))
    else:
        model = Sequential(layer, Flatten())
    x = randn(17, 3, 9, 9, seed=5)
    net = gpu_net(model, x.shape[1:], "gpu")
    tx = torch.tensor(x, device="cuda", requires_grad=True)
    if op == "linear":
        lin = model.layers[1][1]
        ty = F.linear(tx.flatten(1), torch.tensor(lin.weight.data, device="cuda"),
                      torch.tensor(lin.bias.data, device="cuda"))
    else:
        ty = {"max": lambda t: F.max_pool2d(t, 3, 2), "avg": lambda t: F.avg_pool2d(t, 2, 3),
              "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[op](tx).flatten(1)
    dy = randn(*ty.shape, seed=6)
    ty.backward(torch.tensor(dy, device="cuda"))
    assert_close(net.forward(x), ty.detach().cpu().numpy(), "forward")
    assert_close(net.backward(x, dy)[0], tx.grad.cpu().numpy(), "dx", rtol=1e-4)


@ON_GPU
@pytest.mark.parametrize("kind", ["cross_entropy", "mse"])
def test_losses_against_pytorch_on_the_gpu(kind, torch_cuda):
    torch = torch_cuda
    F = torch.nn.functional
    net = gpu_net(Sequential(Flatten(), Linear(4, 10, rng=np.random.default_rng(0))), (4, 1, 1), "gpu")
    out, labels = 4 * randn(17, 10, seed=7), np.random.default_rng(7).integers(0, 10, 17)
    t_out = torch.tensor(out, device="cuda", requires_grad=True)
    t_labels = torch.tensor(labels, device="cuda")
    if kind == "cross_entropy":
        t_loss = F.cross_entropy(t_out, t_labels)
    else:
        t_loss = F.mse_loss(t_out, F.one_hot(t_labels, 10).float())
    t_loss.backward()
    value, dout = net.loss(out, labels, kind)
    assert value == pytest.approx(t_loss.item(), rel=1e-5)
    assert_close(dout, t_out.grad.cpu().numpy(), "dout")


@ON_GPU
def test_one_real_mnist_epoch_on_the_gpu_reaches_the_cpus_accuracy(mnist_dir, monkeypatch):
    monkeypatch.delenv(EMULATE_ENV, raising=False)
    train_set = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    test_set = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    accuracy = {}
    for device in ("cuda", "cpu"):
        model = LeNet5(seed=0)
        fit(model, train_set, epochs=1, progress=False, device=device)
        accuracy[device] = evaluate(model, test_set, device=device)["accuracy"]
    print(f"one epoch: GPU {100 * accuracy['cuda']:.2f}%, CPU {100 * accuracy['cpu']:.2f}%")
    assert accuracy["cpu"] > 0.95  # the precondition: a real epoch of the default recipe
    # The device contracts a * b + c into one FMA where the CPU may round twice: a one-epoch
    # run drifts apart by a few tenths of a point either way.
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= ACCURACY_BAND
