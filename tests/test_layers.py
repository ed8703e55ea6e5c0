"""pylenet.layers against torch.nn with the same weights; LeNet5's summary and names; caching; bad args."""
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from pylenet import LeNet5, ops
from pylenet.layers import (AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Module, Parameter,
                            ReLU, Sequential, Sigmoid, Tanh)
from reference import assert_close


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def copy_into(torch_layer, layer):
    """Copy a pylenet layer's weight (and bias) into the torch layer."""
    with torch.no_grad():
        torch_layer.weight.copy_(torch.from_numpy(layer.weight.data))
        if layer.bias is not None:
            torch_layer.bias.copy_(torch.from_numpy(layer.bias.data))


def run_torch(module, x, dy):
    """(y, dx) of a torch module for input x and upstream gradient dy."""
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), tx.grad.numpy()


def check_against_torch(layer, torch_layer, x, seed=1):
    """Forward, input gradient and (if any) parameter gradients of layer == torch_layer."""
    y = layer.forward(x)
    dy = rand(y.shape, seed)
    ty, tdx = run_torch(torch_layer, x, dy)
    assert_close(y, ty, what=f"{layer!r} forward")
    dx = layer.backward(dy)
    assert dx.shape == x.shape
    assert_close(dx, tdx, what=f"{layer!r} dx")
    for name, p in layer.named_parameters():
        tgrad = dict(torch_layer.named_parameters())[name].grad.numpy()
        assert p.grad.shape == p.data.shape
        assert_close(p.grad, tgrad, what=f"{layer!r} d{name}")


CONV_CASES = [
    # N, C, H, W, K, R, stride, padding, bias
    (2, 1, 32, 32, 6, 5, 1, 0, True),     # LeNet C1
    (3, 6, 14, 14, 16, 5, 1, 0, True),    # LeNet C3
    (1, 3, 17, 11, 4, 3, 2, 1, True),     # odd sizes, stride and padding
    (2, 2, 7, 9, 3, 3, 1, 2, False),      # no bias, wide padding
    (1, 1, 1, 1, 1, 1, 1, 0, True),       # the smallest
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_torch(case):
    n, c, h, w, k, r, stride, padding, bias = case
    layer = Conv2d(c, k, r, stride=stride, padding=padding, bias=bias, rng=np.random.default_rng(0))
    torch_layer = nn.Conv2d(c, k, r, stride=stride, padding=padding, bias=bias)
    copy_into(torch_layer, layer)
    check_against_torch(layer, torch_layer, rand((n, c, h, w)))
    assert [name for name, _ in layer.named_parameters()] == (["weight", "bias"] if bias else ["weight"])


@pytest.mark.parametrize("case", [(4, 400, 120), (3, 84, 10), (1, 1, 1), (17, 3, 5)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(case, bias):
    n, i, o = case
    layer = Linear(i, o, bias=bias, rng=np.random.default_rng(0))
    torch_layer = nn.Linear(i, o, bias=bias)
    copy_into(torch_layer, layer)
    check_against_torch(layer, torch_layer, rand((n, i)))


@pytest.mark.parametrize("kernel,stride,shape", [(2, None, (2, 6, 28, 28)), (2, 2, (1, 3, 5, 7)),
                                                 (3, 1, (2, 2, 6, 5)), (3, 2, (1, 1, 9, 9))], ids=str)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(kind, kernel, stride, shape):
    layer = (MaxPool2d if kind == "max" else AvgPool2d)(kernel, stride)
    torch_layer = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(kernel, stride)
    check_against_torch(layer, torch_layer, rand(shape))
    assert layer.named_parameters() == []


@pytest.mark.parametrize("layer,torch_layer", [(ReLU(), nn.ReLU()), (Sigmoid(), nn.Sigmoid()),
                                               (Tanh(), nn.Tanh())], ids=["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(3, 7), (2, 6, 5, 5)], ids=str)
def test_activations_match_torch(layer, torch_layer, shape):
    check_against_torch(layer, torch_layer, 3 * rand(shape))


def test_flatten_is_a_reshape_both_ways():
    x = rand((3, 16, 5, 5))
    f = Flatten()
    y = f.forward(x)
    assert y.shape == (3, 400)
    np.testing.assert_array_equal(y, x.reshape(3, -1))
    dy = rand((3, 400), 2)
    np.testing.assert_array_equal(f.backward(dy), dy.reshape(3, 16, 5, 5))


def test_sequential_matches_torch_sequential():
    rng = np.random.default_rng(0)
    seq = Sequential(("conv", Conv2d(2, 4, 3, padding=1, rng=rng)), ("act", Tanh()),
                     ("pool", AvgPool2d(2)), ("flat", Flatten()), ("fc", Linear(4 * 3 * 3, 5, rng=rng)))
    ref = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(36, 5))
    copy_into(ref[0], seq.layers[0][1])
    copy_into(ref[4], seq.layers[4][1])
    x = rand((3, 2, 6, 6))
    y = seq.forward(x)
    dy = rand(y.shape, 1)
    ty, tdx = run_torch(ref, x, dy)
    assert_close(y, ty, what="forward")
    assert_close(seq.backward(dy), tdx, what="dx")
    grads = dict(seq.named_parameters())
    assert list(grads) == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    for name, tname in [("conv.weight", "0.weight"), ("conv.bias", "0.bias"),
                        ("fc.weight", "4.weight"), ("fc.bias", "4.bias")]:
        assert_close(grads[name].grad, dict(ref.named_parameters())[tname].grad.numpy(), what=name)


def test_sequential_names_unnamed_layers_by_index():
    seq = Sequential(Linear(3, 4, rng=np.random.default_rng(0)), ReLU(),
                     Linear(4, 2, rng=np.random.default_rng(1)))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(seq) == 3
    assert seq.num_parameters() == 3 * 4 + 4 + 4 * 2 + 2


def test_lenet5_parameter_names_and_count():
    model = LeNet5()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["C1.weight", "C1.bias", "C3.weight", "C3.bias", "F5.weight", "F5.bias",
                     "F6.weight", "F6.bias", "output.weight", "output.bias"]
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes == {"C1.weight": (6, 1, 5, 5), "C1.bias": (6,), "C3.weight": (16, 6, 5, 5),
                      "C3.bias": (16,), "F5.weight": (120, 400), "F5.bias": (120,),
                      "F6.weight": (84, 120), "F6.bias": (84,), "output.weight": (10, 84),
                      "output.bias": (10,)}
    assert model.num_parameters() == 61_706
    assert [p for _, p in model.named_parameters()] == model.parameters()
    assert all(p.data.dtype == np.float32 and p.grad.shape == p.data.shape for p in model.parameters())


def test_lenet5_summary_shapes_and_parameter_counts():
    text = LeNet5().summary()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\s+.*?\s(\d+(?:x\d+)*)\s+([\d,]*)$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3))
    assert rows["input"] == ("1x32x32", "")
    expected = {"C1": ("6x28x28", "156"), "A1": ("6x28x28", "0"), "S2": ("6x14x14", "0"),
                "C3": ("16x10x10", "2,416"), "A3": ("16x10x10", "0"), "S4": ("16x5x5", "0"),
                "flatten": ("400", "0"), "F5": ("120", "48,120"), "A5": ("120", "0"),
                "F6": ("84", "10,164"), "A6": ("84", "0"), "output": ("10", "850")}
    for name, want in expected.items():
        assert rows.get(name) == want, f"summary row {name}: {rows.get(name)} != {want}\n{text}"
    assert text.splitlines()[-1] == "total trainable parameters: 61,706"


def test_lenet5_output_shape_agrees_with_forward():
    model = LeNet5(num_classes=7)
    assert model.output_shape((1, 32, 32)) == (7,)
    assert model.forward(rand((2, 1, 32, 32))).shape == (2, 7)
    assert "output shape" in model.summary() and "7" in model.summary().splitlines()[-3]


@pytest.mark.parametrize("make,x_shape", [
    (lambda: Conv2d(1, 2, 3, rng=np.random.default_rng(0)), (2, 1, 5, 5)),
    (lambda: Linear(4, 3, rng=np.random.default_rng(0)), (2, 4)),
    (lambda: MaxPool2d(2), (2, 1, 4, 4)),
    (lambda: AvgPool2d(2), (2, 1, 4, 4)),
    (lambda: ReLU(), (2, 5)),
    (lambda: Sigmoid(), (2, 5)),
    (lambda: Tanh(), (2, 5)),
], ids=["conv", "linear", "maxpool", "avgpool", "relu", "sigmoid", "tanh"])
def test_backward_after_eval_forward_raises_runtime_error(make, x_shape):
    """Eval mode keeps no caches, so a backward after an eval forward must refuse clearly."""
    layer = make()
    x = rand(x_shape)
    layer.eval()
    assert layer.training is False
    y = layer.forward(x)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("make,train_shape,eval_shape", [
    (lambda: MaxPool2d(2), (1, 1, 4, 4), (1, 1, 8, 8)),
    (lambda: AvgPool2d(2), (1, 1, 4, 4), (1, 1, 8, 8)),
    (lambda: Conv2d(1, 1, 3, rng=np.random.default_rng(0)), (1, 1, 5, 5), (1, 1, 8, 8)),
    (lambda: Linear(8, 2, rng=np.random.default_rng(0)), (1, 8), (3, 8)),
], ids=["maxpool", "avgpool", "conv", "linear"])
def test_eval_forward_drops_the_cache_of_an_earlier_training_forward(make, train_shape, eval_shape):
    """After train-forward(a), eval-forward(b), a backward must not silently use a's cache."""
    layer = make()
    layer.forward(rand(train_shape))
    layer.eval()
    y = layer.forward(rand(eval_shape, 3))
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones_like(y))


@pytest.mark.parametrize("layer", [Conv2d(1, 1, 3), Linear(2, 2), MaxPool2d(2), AvgPool2d(2),
                                   ReLU(), Sigmoid(), Tanh()], ids=repr)
def test_backward_before_any_forward_raises_runtime_error(layer):
    with pytest.raises(RuntimeError, match="without a forward"):
        layer.backward(np.ones((1, 1, 2, 2), np.float32))


def test_train_eval_switch_propagates_through_sequential_and_model_backward_refuses():
    model = LeNet5()
    assert model.eval() is model
    assert all(not layer.training for _, layer in model)
    out = model.forward(rand((2, 1, 32, 32)))
    with pytest.raises(RuntimeError):
        model.backward(np.ones_like(out))
    model.train()
    assert all(layer.training for _, layer in model)
    out2 = model.forward(rand((2, 1, 32, 32)))
    model.backward(np.ones_like(out2))  # now fine
    np.testing.assert_array_equal(out, out2)  # eval and train forwards compute the same thing


@pytest.mark.parametrize("make,x_shape", [
    (lambda: Linear(120, 84, rng=np.random.default_rng(0)), (52, 120)),   # F6 on a 52-image tail batch
    (lambda: Linear(120, 84, rng=np.random.default_rng(0)), (100, 120)),
    (lambda: Linear(130, 7, rng=np.random.default_rng(0)), (100, 130)),
    (lambda: Linear(400, 120, rng=np.random.default_rng(0)), (17, 400)),
    (lambda: Conv2d(6, 16, 5, rng=np.random.default_rng(0)), (17, 6, 14, 14)),
    (lambda: Conv2d(1, 6, 5, rng=np.random.default_rng(0)), (52, 1, 32, 32)),
], ids=["linear-52x120x84", "linear-100x120x84", "linear-100x130x7", "linear-17x400x120",
        "conv-17x6x14", "conv-52x1x32"])
def test_layer_results_do_not_depend_on_the_thread_count(make, x_shape, restore_threads):
    """Training is bit-identical for any thread count only if every layer is."""
    layer = make()
    x = np.abs(rand(x_shape))  # post-ReLU-like inputs, as in LeNet
    results = []
    for threads in (1, 2):
        ops.set_num_threads(threads)
        y = layer.forward(x)
        dx = layer.backward(rand(y.shape, 1))
        results.append([y, dx] + [p.grad.copy() for p in layer.parameters()])
    for name, a, b in zip(["y", "dx", "dweight", "dbias"], *results):
        assert np.array_equal(a, b), f"{name}: 1 vs 2 threads differ by up to {np.abs(a - b).max():.3e}"


def test_backward_overwrites_parameter_gradients():
    layer = Conv2d(2, 3, 3, rng=np.random.default_rng(0))
    x, dy = rand((2, 2, 6, 6)), rand((2, 3, 4, 4), 1)
    layer.weight.grad[...] = np.nan
    layer.bias.grad[...] = np.nan
    held = layer.weight.grad, layer.bias.grad  # backward writes into these arrays in place
    layer.forward(x)
    layer.backward(dy)
    assert layer.weight.grad is held[0] and layer.bias.grad is held[1]
    first = layer.weight.grad.copy(), layer.bias.grad.copy()
    assert np.isfinite(first[0]).all() and np.isfinite(first[1]).all()
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_array_equal(layer.weight.grad, first[0])
    np.testing.assert_array_equal(layer.bias.grad, first[1])
    layer.zero_grad()
    assert not layer.weight.grad.any() and not layer.bias.grad.any()


def test_forward_does_not_modify_its_input():
    model = LeNet5()
    x = rand((3, 1, 32, 32))
    before = x.copy()
    out = model.forward(x)
    model.backward(np.ones_like(out))
    np.testing.assert_array_equal(x, before)


def test_init_is_seeded_and_pytorch_scaled():
    a = Conv2d(6, 16, 5, rng=np.random.default_rng(7))
    b = Conv2d(6, 16, 5, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    bound = 1 / np.sqrt(6 * 25)
    assert np.abs(a.weight.data).max() <= bound
    assert np.abs(a.weight.data).max() > 0.9 * bound
    lin = Linear(400, 120, rng=np.random.default_rng(7))
    assert np.abs(lin.weight.data).max() <= 1 / np.sqrt(400)
    assert np.abs(lin.bias.data).max() <= 1 / np.sqrt(400)


BAD_CONSTRUCTORS = {
    "conv-in-0": (lambda: Conv2d(0, 6, 5), ValueError),
    "conv-out-negative": (lambda: Conv2d(1, -6, 5), ValueError),
    "conv-kernel-0": (lambda: Conv2d(1, 6, 0), ValueError),
    "conv-stride-0": (lambda: Conv2d(1, 6, 5, stride=0), ValueError),
    "conv-padding-negative": (lambda: Conv2d(1, 6, 5, padding=-1), ValueError),
    "conv-in-float": (lambda: Conv2d(1.0, 6, 5), TypeError),
    "conv-in-bool": (lambda: Conv2d(True, 6, 5), TypeError),
    "conv-kernel-str": (lambda: Conv2d(1, 6, "5"), TypeError),
    "conv-padding-float": (lambda: Conv2d(1, 6, 5, padding=1.5), TypeError),
    "linear-in-0": (lambda: Linear(0, 3), ValueError),
    "linear-out-float": (lambda: Linear(3, 2.5), TypeError),
    "maxpool-kernel-0": (lambda: MaxPool2d(0), ValueError),
    "maxpool-stride-0": (lambda: MaxPool2d(2, stride=0), ValueError),
    "avgpool-kernel-float": (lambda: AvgPool2d(2.0), TypeError),
    "sequential-str-item": (lambda: Sequential(ReLU(), "not a layer"), TypeError),
    "sequential-named-int": (lambda: Sequential(("a", 3)), TypeError),
    "lenet-activation": (lambda: LeNet5(activation="gelu"), ValueError),
    "lenet-pooling": (lambda: LeNet5(pooling="min"), ValueError),
    "lenet-classes-1": (lambda: LeNet5(num_classes=1), ValueError),
    "lenet-classes-float": (lambda: LeNet5(num_classes=2.0), ValueError),
    "lenet-positional": (lambda: LeNet5("relu"), TypeError),  # keyword-only
}


@pytest.mark.parametrize("make,error", list(BAD_CONSTRUCTORS.values()), ids=list(BAD_CONSTRUCTORS))
def test_bad_constructor_arguments_raise(make, error):
    with pytest.raises(error):
        make()


def test_bad_argument_messages_name_the_argument_and_value():
    with pytest.raises(ValueError, match=r"out_channels must be >= 1, got 0"):
        Conv2d(1, 0, 5)
    with pytest.raises(TypeError, match=r"kernel_size must be an int, got float 2.5"):
        MaxPool2d(2.5)
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        LeNet5(activation="gelu")


def test_wrong_input_shape_raises_value_error_naming_shapes():
    conv = Conv2d(1, 6, 5)
    with pytest.raises(ValueError, match=r"\(1\).*\(3\)"):
        conv.forward(rand((2, 3, 32, 32)))
    lin = Linear(400, 120)
    with pytest.raises(ValueError, match=r"\(400\).*\(399\)"):
        lin.forward(rand((2, 399)))


def test_parameter_is_float32_contiguous_with_zero_grad():
    p = Parameter(np.arange(6, dtype=np.float64).reshape(2, 3).T)
    assert p.data.dtype == np.float32 and p.data.flags.c_contiguous
    assert p.shape == (3, 2) and not p.grad.any()
    assert isinstance(LeNet5(), Module)
