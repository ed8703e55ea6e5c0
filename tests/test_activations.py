"""sigmoid, tanh and relu forward and backward against the float64 reference, PyTorch and
finite differences, on any shape, with extreme values, NaN and Inf."""
import numpy as np
import pytest
import torch

import gradcheck as gc
import reference as ref
from pylenet import ops
from reference import maxerr_report  # noqa: F401  (autouse: prints MAXERR lines)

SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (16, 6, 28, 28), (1, 1, 1, 17), (2, 1, 3, 1, 2)]
TORCH = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}
NAMES = list(TORCH)


def fwd(name):
    return getattr(ops, f"{name}_forward")


def bwd(name):
    return getattr(ops, f"{name}_backward")


def backward_arg(name, x, y):
    """sigmoid/tanh backward take the forward output y; relu takes the forward input x."""
    return x if name == "relu" else y


def torch_activation(name, x, dy):
    tx = torch.tensor(x, requires_grad=True)
    ty = TORCH[name](tx)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_and_torch(name, shape):
    rng = np.random.default_rng(len(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y = fwd(name)(x)
    ref.assert_fresh_f32(y)
    assert y.shape == x.shape
    ref.assert_close(y, getattr(ref, f"{name}_forward")(x), rtol=1e-5, atol=1e-6)
    dx = bwd(name)(backward_arg(name, x, y), dy)
    ref.assert_fresh_f32(dx)
    assert dx.shape == x.shape
    ref.assert_close(dx, getattr(ref, f"{name}_backward")(backward_arg(name, x, y), dy),
                     rtol=1e-5, atol=1e-6)
    ty, tdx = torch_activation(name, x, dy)
    ref.assert_close(y, ty, rtol=1e-5, atol=1e-6)
    ref.assert_close(dx, tdx, rtol=1e-5, atol=1e-6)
    ref.note_maxerr(f"{name}_forward", y, ty)
    ref.note_maxerr(f"{name}_backward", dx, tdx)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_values_match_torch(name):
    x = np.array([0.0, -0.0, 1e-30, -1e-30, 15.0, -15.0, 50.0, -50.0, 88.0, -88.0, 89.0, -89.0,
                  100.0, -100.0, 1e4, -1e4, 3e38, -3e38, np.inf, -np.inf], np.float32)
    dy = np.linspace(-2, 2, x.size).astype(np.float32)
    y = fwd(name)(x)
    ty, tdx = torch_activation(name, x, dy)
    assert not np.any(np.isnan(y)), y
    ref.assert_close(y, ty, rtol=1e-5, atol=1e-7)
    dx = bwd(name)(backward_arg(name, x, y), dy)
    assert not np.any(np.isnan(dx)), dx
    ref.assert_close(dx, tdx, rtol=1e-5, atol=1e-7)
    if name != "relu":
        assert np.all(np.abs(y) <= 1)


@pytest.mark.parametrize("name", NAMES)
def test_nan_propagates_like_torch(name):
    x = np.array([[np.nan, 1.0, -1.0], [0.5, np.nan, np.inf]], np.float32)
    y = fwd(name)(x)
    ref.assert_close(y, torch_activation(name, x, np.ones_like(x))[0], rtol=1e-5, atol=1e-7)
    assert np.isnan(y[0, 0]) and np.isnan(y[1, 1])
    dy = np.array([[1.0, np.nan, 1.0], [1.0, 1.0, 1.0]], np.float32)
    dx = bwd(name)(backward_arg(name, x, y), dy)
    assert np.isnan(dx[0, 1])  # dy = NaN reaches dx (x = 1 > 0 for relu)
    tdx = torch_activation(name, x, dy)[1]
    # relu's backward at x = NaN is not pinned down (torch passes dy through, the core's rule
    # "dy where x > 0" gives 0): compare where x is not NaN
    keep = ~np.isnan(x) if name == "relu" else np.ones(x.shape, bool)
    ref.assert_close(dx[keep], tdx[keep], rtol=1e-5, atol=1e-7)


def test_relu_backward_at_zero_is_zero_like_torch():
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0], np.float32)
    dy = np.full_like(x, 3.0)
    dx = ops.relu_backward(x, dy)
    np.testing.assert_array_equal(dx, torch_activation("relu", x, dy)[1])
    np.testing.assert_array_equal(dx, [0, 0, 3, 0, 3, 0])


@pytest.mark.parametrize("name", NAMES)
def test_finite_differences(name):
    rng = np.random.default_rng(11)
    if name == "relu":
        x = gc.separated_values(rng, (2, 3, 4), spacing=0.1)
    else:
        x = (rng.standard_normal((2, 3, 4)) * 2).astype(np.float32)
    gc.gradcheck(fwd(name), lambda G, x: {"x": bwd(name)(backward_arg(name, x, fwd(name)(x)), G)},
                 {"x": x})


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_finite_differences_reject_backward_fed_the_input(name):
    # a classic slip: passing x where the backward expects the forward output y
    x = (np.random.default_rng(12).standard_normal((3, 4)) * 2).astype(np.float32)
    with pytest.raises(AssertionError, match="gradient of x"):
        gc.gradcheck(fwd(name), lambda G, x: {"x": bwd(name)(x, G)}, {"x": x})


@pytest.mark.parametrize("name", NAMES)
def test_backward_overwrites_and_returns_fresh_arrays(name):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    arg = backward_arg(name, x, fwd(name)(x))
    first = bwd(name)(arg, dy)
    bwd(name)(arg * 0.5, dy * 100)
    second = bwd(name)(arg, dy)
    np.testing.assert_array_equal(first, second)
    assert not np.shares_memory(first, second)
    assert not np.shares_memory(second, dy) and not np.shares_memory(second, arg)


# ----------------------------------------------------------- a kind added through the registry
# LeakyReLU was added as one formula (ops/elementwise.h), one registry entry and one class: its
# layer path, fused engine, torch mapping and ONNX export all come from those.

@pytest.mark.parametrize("slope", [0.01, 0.2, -0.5, 0.0])
def test_leaky_relu_matches_torch_and_finite_differences(slope):
    import torch
    from gradcheck import gradcheck
    from pylenet.layers import LeakyReLU
    x = np.random.default_rng(1).standard_normal((4, 3, 5)).astype(np.float32)
    x[np.abs(x) < 0.05] = 0.5  # away from the kink
    dy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    layer = LeakyReLU(slope)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch.nn.functional.leaky_relu(xt, slope)
    yt.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(layer.forward(x), yt.detach().numpy())
    np.testing.assert_array_equal(layer.backward(dy), xt.grad.numpy())
    gradcheck(lambda x: ops.elementwise_forward("leaky_relu", x, slope),
              lambda G, x: {"x": ops.elementwise_backward("leaky_relu", x, x, G, slope)}, {"x": x})


def test_leaky_relu_runs_fused_exported_and_mapped_to_torch(tmp_path):
    import torch
    import pylenet
    from pylenet.engine import cpu_net_for
    from pylenet.interop import from_torch, to_torch
    from pylenet.layers import Conv2d, Flatten, LeakyReLU, Linear, Sequential
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 3, 3, rng=rng), LeakyReLU(0.2), Flatten(), Linear(3 * 6 * 6, 4, rng=rng))
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 5)
    out = model.forward(x)
    _, dout = pylenet.CrossEntropyLoss()(out, labels)
    model.backward(dout)
    layer_grads = [p.grad.copy() for p in model.parameters()]
    _, fused_out = cpu_net_for(model, (1, 8, 8)).train_step(x, labels)
    np.testing.assert_array_equal(fused_out, out)
    for a, p in zip(layer_grads, model.parameters()):
        np.testing.assert_array_equal(a, p.grad)
    module = to_torch(model)
    assert isinstance(module[1], torch.nn.LeakyReLU) and module[1].negative_slope == 0.2
    assert isinstance(from_torch(module, input_shape=(1, 8, 8)).layers[1][1], LeakyReLU)
    with pytest.raises(ValueError, match=r"LeakyReLU: negative_slope must be a number|must be a number"):
        LeakyReLU(float("nan"))
    onnx = pytest.importorskip("onnxruntime")
    path = pylenet.export_onnx(model, tmp_path / "m.onnx", input_shape=(1, 8, 8))
    got = onnx.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.eval().forward(x), rtol=1e-5, atol=1e-6)
