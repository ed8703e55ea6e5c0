"""Saliency: the core's Net.input_gradient against PyTorch autograd and across thread counts,
pylenet.explain.saliency against finite differences and PyTorch through the padding and the
normalisation (modern LeNet-5 and the 1998 one, whose score is minus the RBF penalty), its
bad inputs, and `pylenet explain`."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pylenet
import reference as ref
from pylenet import LeNet5, lecun98, ops
from pylenet.data import MNIST_MEAN, MNIST_STD
from pylenet.engine import CpuNet, cpu_net_for
from pylenet.explain import digit_scores, prepare, saliencies, saliency
from pylenet.interop import to_torch
from pylenet.layers import Flatten, Linear, ReLU, Sequential

MODERN = [("relu", "max"), ("tanh", "avg"), ("sigmoid", "max")]


@pytest.fixture(autouse=True)
def _threads(restore_threads, torch_single_thread):
    yield


def random_digit(seed: int) -> np.ndarray:
    """A stroke-like uint8 digit: a few bright bars on black, with soft edges."""
    rng = np.random.default_rng(seed)
    d = np.zeros((28, 28), np.float64)
    for _ in range(3):
        r, c = rng.integers(5, 23, size=2)
        d[r - 4:r + 4, c - 1:c + 2] += rng.uniform(120, 255)
    d += rng.uniform(0, 30, size=d.shape)
    return np.clip(d, 0, 255).astype(np.uint8)


def params_of(model):
    return [(p.data.copy(), None if p.grad is None else p.grad.copy()) for p in model.parameters()]


# -------------------------------------------------------------------- the core: input_gradient

@pytest.mark.parametrize("activation,pooling", MODERN)
def test_input_gradient_matches_torch_autograd(activation, pooling):
    model = LeNet5(activation=activation, pooling=pooling, seed=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 1, 32, 32)).astype(np.float32)   # 37: chunks of 16 and a rest
    dout = rng.standard_normal((37, 10)).astype(np.float32)
    before = params_of(model)
    dx = cpu_net_for(model).input_gradient(x, dout)
    xt = torch.tensor(x, requires_grad=True)
    (to_torch(model)(xt) * torch.tensor(dout)).sum().backward()
    ref = xt.grad.numpy()
    assert dx.shape == x.shape and dx.dtype == np.float32
    np.testing.assert_allclose(dx, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    after = params_of(model)   # the weights and their gradients are left as they were
    assert all(np.array_equal(a, b) and (ga is None) == (gb is None) and (ga is None or np.array_equal(ga, gb))
               for (a, ga), (b, gb) in zip(before, after))


def test_input_gradient_is_bit_identical_for_any_thread_count():
    model = LeNet5(seed=5)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((53, 1, 32, 32)).astype(np.float32)
    dout = rng.standard_normal((53, 10)).astype(np.float32)
    fused = cpu_net_for(model)
    results = []
    for threads in (1, 2, 3):
        ops.set_num_threads(threads)
        results.append(fused.input_gradient(x, dout))
    assert all(np.array_equal(results[0], r) for r in results[1:])
    # Samples do not mix: each sample's gradient is the one it gets alone.
    assert np.array_equal(fused.input_gradient(x[7:8], dout[7:8])[0], results[0][7])


def test_input_gradient_through_a_leading_flatten():
    """A chain that starts with a Flatten (an in-place layer): dx is W^T dout, reshaped."""
    rng = np.random.default_rng(4)
    model = Sequential(("flat", Flatten()), ("fc", Linear(12, 3, rng=rng)), ("act", ReLU()),
                       ("out", Linear(3, 2, rng=rng)))
    fused = CpuNet(model, (3, 2, 2))
    x = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    dout = rng.standard_normal((5, 2)).astype(np.float32)
    w1, b1 = model.layers[1][1].weight.data, model.layers[1][1].bias.data
    w2 = model.layers[3][1].weight.data
    h = x.reshape(5, 12) @ w1.T + b1
    ref = ((dout @ w2) * (h > 0)) @ w1
    np.testing.assert_allclose(fused.input_gradient(x, dout).reshape(5, 12), ref, rtol=1e-5, atol=1e-6)


def test_input_gradient_checks_its_arguments():
    fused = cpu_net_for(LeNet5(seed=0))
    x = np.zeros((2, 1, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 10\), got \(2, 9\)"):
        fused.input_gradient(x, np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 32, 32\)"):
        fused.input_gradient(np.zeros((2, 1, 28, 28), np.float32), np.zeros((2, 10), np.float32))
    with pytest.raises(ValueError, match="expected 10 parameter arrays"):
        fused.net.input_gradient(x, np.zeros((2, 10), np.float32), [])
    empty = fused.input_gradient(np.zeros((0, 1, 32, 32), np.float32), np.zeros((0, 10), np.float32))
    assert empty.shape == (0, 1, 32, 32)


# ---------------------------------------------------------------------------- the saliency

def torch_saliency(net, digit, target, penalty=False):
    """d score / d pixel by autograd through the padding and the normalisation, in float64."""
    v = torch.tensor(digit.astype(np.float64), requires_grad=True)
    x = F.pad((v / 255 - MNIST_MEAN) / MNIST_STD, (2, 2, 2, 2), value=(0 - MNIST_MEAN) / MNIST_STD)
    out = net(x[None, None])[0]
    (-out[target] if penalty else out[target]).backward()
    return v.grad.numpy()


@pytest.mark.parametrize("activation,pooling", MODERN)
def test_saliency_matches_torch_through_padding_and_normalisation(activation, pooling):
    model = LeNet5(activation=activation, pooling=pooling, seed=7)
    net = to_torch(model).double()
    digit = random_digit(11)
    for target in (None, 0, 9):
        sal = saliency(model, digit, target)
        t = int(digit_scores(model, digit).argmax()) if target is None else target
        ref = torch_saliency(net, digit, t)
        assert sal.shape == (28, 28) and sal.dtype == np.float32
        np.testing.assert_allclose(sal, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())


def lecun98_torch(model):
    """LeNet5(variant="lecun98") written out in torch (interop.to_torch covers only the modern layers)."""
    layers = dict(model.layers)
    p = {name: torch.tensor(getattr(layers[name], attr).data, dtype=torch.float64)
         for name in ("C1", "S2", "C3", "S4", "C5", "F6") for attr in ("weight",)}
    b = {name: torch.tensor(layers[name].bias.data, dtype=torch.float64) for name in p}
    mask = torch.tensor(layers["C3"].mask, dtype=torch.float64)[:, :, None, None]
    centres = torch.tensor(lecun98.RBF_CODES, dtype=torch.float64)
    rescale = layers["input"]

    def act(a):
        return 1.7159 * torch.tanh(2 * a / 3)

    def subsample(a, name):   # weight[c] * (2x2 window sum) + bias[c]
        return p[name][None, :, None, None] * 4 * F.avg_pool2d(a, 2) + b[name][None, :, None, None]

    def net(x):
        a = act(F.conv2d(rescale.scale * x + rescale.shift, p["C1"], b["C1"]))
        a = act(subsample(a, "S2"))
        a = act(F.conv2d(a, p["C3"] * mask, b["C3"]))
        a = act(subsample(a, "S4")).flatten(1)
        a = act(a @ p["C5"].T + b["C5"])
        a = act(a @ p["F6"].T + b["F6"])
        return ((a[:, None, :] - centres[None]) ** 2).sum(-1)   # penalties
    return net


def test_lecun98_saliency_is_minus_the_penalty_gradient():
    model = LeNet5(variant="lecun98", seed=2)
    net = lecun98_torch(model)
    digit = random_digit(12)
    with torch.no_grad():
        x = torch.tensor(prepare(digit), dtype=torch.float64)
        penalties = net(x)[0].numpy()
    np.testing.assert_allclose(digit_scores(model, digit), -penalties, rtol=1e-4)
    predicted = int(penalties.argmin())   # the smallest penalty is the prediction
    for target in (None, 3):
        t = predicted if target is None else target
        ref = torch_saliency(net, digit, t, penalty=True)
        np.testing.assert_allclose(saliency(model, digit, target), ref, rtol=1e-3,
                                   atol=1e-4 * np.abs(ref).max())


def reference_forward(model, x):
    """The model's outputs in float64, layer by layer from tests/reference.py (not the core)."""
    for _, layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2d":
            x = ref.conv2d_forward(x, layer.weight.data, layer.bias.data, layer.stride, layer.padding)
        elif kind == "MaskedConv2d":
            x = ref.masked_conv2d_forward(x, layer.weight.data, layer.mask, layer.bias.data,
                                          layer.stride, layer.padding)
        elif kind in ("MaxPool2d", "AvgPool2d"):
            pool = ref.maxpool2d_forward if kind == "MaxPool2d" else ref.avgpool2d_forward
            x = pool(x, layer.kernel_size, layer.stride)
            x = x[0] if isinstance(x, tuple) else x
        elif kind == "Subsample2d":
            x = ref.subsample2d_forward(x, layer.weight.data, layer.bias.data, layer.kernel_size, layer.stride)
        elif kind == "Linear":
            x = ref.linear_forward(x, layer.weight.data, layer.bias.data)
        elif kind == "Flatten":
            x = x.reshape(len(x), -1)
        elif kind == "RBF":
            x = ref.rbf_forward(x, layer.centres)
        elif kind == "Rescale":
            x = layer.scale * x + layer.shift
        else:
            x = {"ReLU": ref.relu_forward, "Tanh": ref.tanh_forward, "Sigmoid": ref.sigmoid_forward,
                 "ScaledTanh": ref.scaled_tanh_forward}[kind](x)
    return x


def finite_differences(model, digit, target, h, penalty=False):
    """Central differences of the class score over all 784 pixels, in float64, through a
    preparation and a forward pass written independently of pylenet.explain and the core."""
    v = digit.astype(np.float64)
    bumped = np.repeat(v[None], 2 * 784, axis=0)
    idx = np.arange(784)
    bumped.reshape(-1, 784)[2 * idx, idx] += h
    bumped.reshape(-1, 784)[2 * idx + 1, idx] -= h
    x = (bumped / 255 - MNIST_MEAN) / MNIST_STD
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=(0 - MNIST_MEAN) / MNIST_STD)
    out = reference_forward(model, x[:, None])[:, target]
    score = -out if penalty else out
    return ((score[0::2] - score[1::2]) / (2 * h)).reshape(28, 28)


@pytest.mark.parametrize("variant", ["relu", "tanh", "lecun98"])
def test_saliency_matches_finite_differences(variant):
    """Float64 central differences with a step of 1e-3 pixel values (too small to cross a
    ReLU or max-pool kink at these random values)."""
    if variant == "lecun98":
        model, penalty = LeNet5(variant="lecun98", seed=4), True
    else:
        model, penalty = LeNet5(activation=variant, pooling="avg" if variant == "tanh" else "max", seed=4), False
    digit = random_digit(13).astype(np.float64)
    target = int(digit_scores(model, digit).argmax())
    sal = saliency(model, digit, target)
    fd = finite_differences(model, digit, target, h=1e-3, penalty=penalty)
    scale = np.abs(fd).max()
    assert scale > 0
    np.testing.assert_allclose(sal, fd, rtol=1e-3, atol=1e-3 * scale)
    # The padding is cropped, not summed in: the border pixels have their own gradients.
    assert np.count_nonzero(sal[0]) > 0 and np.count_nonzero(sal[:, -1]) > 0


def test_uint8_and_float_digits_and_the_default_target():
    model = LeNet5(seed=1)
    digit = random_digit(14)
    assert np.array_equal(prepare(digit), pylenet.data.pad_and_normalize(digit))  # training's input
    assert np.array_equal(saliency(model, digit), saliency(model, digit.astype(np.float32)))
    scores = digit_scores(model, digit)
    _, probs = pylenet.predict(model, digit)
    assert int(scores.argmax()) == int(probs.argmax())
    assert np.array_equal(saliency(model, digit), saliency(model, digit, int(scores.argmax())))
    both = saliencies(model, digit, [2, 5])
    assert np.array_equal(both[0], saliency(model, digit, 2)) and np.array_equal(both[1], saliency(model, digit, 5))
    assert not np.array_equal(both[0], both[1])
    kept = digit.copy()
    saliency(model, digit)
    assert np.array_equal(digit, kept)


@pytest.mark.parametrize("digit,target,error,match", [
    (np.zeros((28, 27), np.uint8), None, ValueError, r"\(28, 28\)"),
    (np.zeros((1, 28, 28), np.uint8), None, ValueError, r"\(28, 28\)"),
    ([[0] * 28] * 28, None, TypeError, "numpy array"),
    (np.full((28, 28), 256.0), None, ValueError, "0..255"),
    (np.full((28, 28), -1.0), None, ValueError, "0..255"),
    (np.full((28, 28), np.nan), None, ValueError, "NaN"),
    (np.zeros((28, 28), np.complex64), None, TypeError, "dtype"),
    (np.zeros((28, 28), np.uint8), 10, ValueError, r"0\.\.9, got 10"),
    (np.zeros((28, 28), np.uint8), -1, ValueError, r"0\.\.9"),
    (np.zeros((28, 28), np.uint8), True, TypeError, "class index"),
    (np.zeros((28, 28), np.uint8), 2.0, TypeError, "class index"),
])
def test_bad_input_is_named(digit, target, error, match):
    with pytest.raises(error, match=match):
        saliency(LeNet5(seed=0), digit, target)


def test_a_model_the_core_cannot_run_is_refused():
    class Custom(Flatten):   # a subclass without its own core_kind runs layer by layer
        def forward(self, x):
            return super().forward(x)

    model = Sequential(("f", Custom()), ("out", Linear(32 * 32, 10)))
    with pytest.raises(TypeError, match="core runs whole"):
        saliency(model, np.zeros((28, 28), np.uint8))


# ------------------------------------------------------------------------- pylenet explain

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "model.ckpt"
    LeNet5(seed=0).save(path)
    return path


def test_cli_explain_writes_the_figure(checkpoint, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    from pylenet.cli import main
    image = tmp_path / "digit.png"
    Image.fromarray(255 - random_digit(15)).resize((112, 112)).save(image)   # dark ink on white
    out = tmp_path / "why.png"
    code = main(["explain", "--model", str(checkpoint), str(image), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert stdout.startswith(f"{image}: ") and f"wrote {out}" in stdout
    with Image.open(out) as figure:
        assert figure.width > 500 and figure.height > 500
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_explain_errors_are_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    from pylenet.cli import main
    code = main(["explain", "--model", str(checkpoint), str(tmp_path / "missing.png")])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith("pylenet: error: ") and "missing.png" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # as if the plot extra were missing
    code = main(["explain", "--model", str(checkpoint), str(tmp_path / "any.png")])
    _, err = capsys.readouterr()
    assert code == 1 and "pip install 'pylenet[plot]'" in err and len(err.strip().splitlines()) == 1
