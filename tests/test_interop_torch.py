"""PyTorch round trip: to_torch matches pylenet on real MNIST, from_torch reads the usual torch LeNet-5s."""
import io
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import pylenet
from pylenet import Conv2d, Flatten, Linear, MaxPool2d, Module, Sequential, Sigmoid
from conftest import REPO_ROOT
from pylenet.cli import main
from pylenet.interop import from_torch, to_torch
from trained_models import VARIANTS, logit_tolerance, mnist_test, trained_lenet

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def torch_logits(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def same_params(a, b):
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k].data, pb[k].data) for k in pa)


@pytest.mark.parametrize("activation,pooling", VARIANTS)
def test_to_torch_matches_pylenet_on_the_mnist_test_set(activation, pooling, mnist_dir):
    _, x, _ = mnist_test(str(mnist_dir))
    model = trained_lenet(activation, pooling, str(mnist_dir))
    module = to_torch(model)
    assert isinstance(module, nn.Module) and not module.training
    ref = model.forward(x)
    out = torch_logits(module, x)
    diff = np.abs(out - ref)
    print(f"PyTorch {activation}/{pooling}: max |diff| {diff.max():.3g}, max |logit| {np.abs(ref).max():.3g}")
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert (diff <= logit_tolerance(ref)).all(), diff.max()
    # Labels agree wherever pylenet's top two logits are further apart than the tolerance.
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * logit_tolerance(ref)[:, 0]
    np.testing.assert_array_equal(out.argmax(axis=1)[clear], ref.argmax(axis=1)[clear])
    assert clear.mean() > 0.99


@pytest.mark.parametrize("activation,pooling", VARIANTS)
def test_from_torch_of_to_torch_is_the_identity(activation, pooling):
    model = pylenet.LeNet5(activation=activation, pooling=pooling, num_classes=5, seed=4)
    module = to_torch(model)
    assert list(module.state_dict()) == [name for name, _ in model.named_parameters()]
    back = from_torch(module)  # activation and pooling read from the nn layers
    assert (back.config["activation"], back.config["pooling"], back.config["num_classes"]) == \
        (activation, pooling, 5)
    assert same_params(model, back)
    state_only = from_torch(module.state_dict(), activation=activation, pooling=pooling)
    assert state_only.config == back.config and same_params(model, state_only)


def test_to_torch_copies_the_weights_and_trains_like_pylenet():
    """Gradients of the converted module equal pylenet's backward; changing one leaves the other alone."""
    model = pylenet.LeNet5(activation="tanh", pooling="avg", seed=2)
    module = to_torch(model)
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    labels = np.array([3, 1, 4, 1])
    loss, dout = pylenet.CrossEntropyLoss()(model.train().forward(x), labels)
    model.backward(dout)
    tloss = F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels))
    tloss.backward()
    assert abs(tloss.item() - loss) < 1e-5
    grads = dict(module.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name].grad.numpy(), p.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        module.C1.weight.zero_()
    assert np.abs(model.layers[0][1].weight.data).sum() > 0


def test_to_torch_of_a_general_sequential():
    rng = np.random.default_rng(1)
    model = Sequential(("block", Sequential(("conv", Conv2d(2, 3, 3, stride=2, padding=1, bias=False, rng=rng)),
                                            ("act", Sigmoid()))),
                       ("pool", MaxPool2d(2)), ("flat", Flatten()), ("fc", Linear(12, 4, rng=rng))).eval()
    module = to_torch(model)
    assert list(module.state_dict()) == ["block.conv.weight", "fc.weight", "fc.bias"]
    x = rng.standard_normal((5, 2, 9, 8)).astype(np.float32)
    ref = model.forward(x)
    assert (np.abs(torch_logits(module, x) - ref) <= logit_tolerance(ref)).all()


# ------------------------------------------------------------------- the usual torch LeNet-5s

class FunctionalLeNet(nn.Module):
    """The tutorial layout: layers as attributes, activation and pooling in forward."""

    def __init__(self, act, pool, c5_conv=False, classes=10):
        super().__init__()
        self.act, self.pool, self.c5_conv = act, pool, c5_conv
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.c5 = nn.Conv2d(16, 120, 5) if c5_conv else nn.Linear(16 * 5 * 5, 120)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)), 2)
        x = self.pool(self.act(self.conv2(x)), 2)
        x = self.act(self.c5(x if self.c5_conv else torch.flatten(x, 1)))
        return self.fc2(self.act(self.fc1(torch.flatten(x, 1))))


@pytest.mark.parametrize("c5_conv", [False, True], ids=["c5-linear", "c5-conv"])
@pytest.mark.parametrize("activation,pooling", [("tanh", "avg"), ("relu", "max"), ("sigmoid", "max")])
def test_from_torch_reads_a_functional_lenet(activation, pooling, c5_conv):
    torch.manual_seed(0)
    act = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation]
    pool = {"max": F.max_pool2d, "avg": F.avg_pool2d}[pooling]
    net = FunctionalLeNet(act, pool, c5_conv, classes=12).eval()
    model = from_torch(net, activation=activation, pooling=pooling)
    assert model.config["num_classes"] == 12
    x = np.random.default_rng(3).standard_normal((64, 1, 32, 32)).astype(np.float32)
    ref = torch_logits(net, x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()


def test_from_torch_reads_a_sequential_lenet_with_its_own_layers():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(),
                        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10)).eval()
    model = from_torch(net)
    assert (model.config["activation"], model.config["pooling"]) == ("tanh", "avg")
    x = np.random.default_rng(4).standard_normal((16, 1, 32, 32)).astype(np.float32)
    ref = torch_logits(net, x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()


def test_a_lenet_with_dropout_keeps_its_dropout():
    # LeNet5 has no Dropout: the layers come back as they are, as a Sequential.
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Dropout(0.1),
                        nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10)).eval()
    model = from_torch(net)
    assert not isinstance(model, pylenet.LeNet5)
    assert [type(layer).__name__ for _, layer in model.layers][9] == "Dropout" and model.layers[9][1].p == 0.1
    x = np.random.default_rng(4).standard_normal((16, 1, 32, 32)).astype(np.float32)
    ref = torch_logits(net, x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()


def test_a_state_dict_without_activation_uses_pylenets_defaults():
    model = from_torch(to_torch(pylenet.LeNet5(activation="relu", pooling="max")).state_dict())
    assert (model.config["activation"], model.config["pooling"]) == ("relu", "max")


# ---------------------------------------------------------------------------------- bad input

def lenet_state(**changes):
    state = OrderedDict((k, v.clone()) for k, v in to_torch(pylenet.LeNet5()).state_dict().items())
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


@pytest.mark.parametrize("state,error,message", [
    (lenet_state(C1__weight=torch.zeros(6, 1, 3, 3)), ValueError,
     r"C1.weight has shape \(6, 1, 3, 3\), expected \(6, 1, 5, 5\) for LeNet5's C1"),
    (lenet_state(F6__bias=torch.zeros(80)), ValueError, r"F6.bias has shape \(80,\), expected \(84,\)"),
    (lenet_state(F5__bias=None), ValueError, r"layer 'F5' has no bias"),
    (lenet_state(output__weight=None, output__bias=None), ValueError, r"expected LeNet-5's 5 weighted layers"),
    (lenet_state(bn__running_mean=torch.zeros(6)), ValueError, r"'bn.running_mean' is neither a weight nor a bias"),
    (lenet_state(C3__weight=torch.zeros(16, 6, 5, 5, dtype=torch.int32)), TypeError, r"C3.weight has dtype int32"),
    (lenet_state(output__weight=torch.zeros(1, 84), output__bias=torch.zeros(1)), ValueError,
     r"output.weight has shape \(1, 84\)"),
    ([1, 2, 3], TypeError, r"expected a torch.nn.Module or a state_dict mapping, got list"),
    ({1: torch.zeros(1)}, TypeError, r"keys must be strings"),
])
def test_from_torch_refuses_what_is_not_a_lenet(state, error, message):
    with pytest.raises(error, match=message):
        from_torch(state)


class NotInOrder(nn.Module):
    """Children that are not run one after another: a ReLU in the forward, not a layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 28 * 28, 10)

    def forward(self, x):
        return self.fc(self.flatten(F.relu(self.conv(x))))


@pytest.mark.parametrize("make,message", [
    (lambda: nn.Sequential(nn.Conv2d(1, 6, 5, groups=1, dilation=2), nn.Flatten(), nn.Linear(6 * 20 * 20, 2)),
     r"layer '0' \(Conv2d\) has dilation=\(2, 2\); pylenet supports only \(1, 1\)"),
    (lambda: nn.Sequential(nn.Conv2d(2, 6, 5, groups=2)), r"layer '0' \(Conv2d\) has groups=2; pylenet supports only 1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 6, 5, stride=(2, 1))), r"layer '0' \(Conv2d\) has stride \(2, 1\)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 6, 5), nn.Softplus()),
     r"layer '1' \(Softplus\) has no pylenet counterpart; from_torch maps .*BatchNorm2d.*Conv2d"),
    (lambda: nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), r"ceil_mode=True; pylenet supports only False"),
    (lambda: nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU()), r"could not tell the input shape"),
    (lambda: NotInOrder(), r"does not compute its children in order"),
    (lambda: nn.Sequential(nn.Flatten(), nn.LSTM(784, 8)), r"layer '1' \(LSTM\) has no pylenet counterpart"),
    (lambda: nn.Sequential(OrderedDict(features=nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, dilation=2)))),
     r"layer 'features.1' \(Conv2d\) has dilation=\(2, 2\)"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect")),
     r"layer '0' \(Conv2d\) has padding_mode='reflect'; pylenet supports only 'zeros'"),
])
def test_from_torch_refuses_what_it_cannot_map_naming_the_layer(make, message):
    with pytest.raises(ValueError, match=message):
        from_torch(make())


def test_from_torch_argument_conflicts_and_bad_names():
    module = to_torch(pylenet.LeNet5(activation="tanh"))
    with pytest.raises(ValueError, match=r"activation='relu', but the module's own layers use 'tanh'"):
        from_torch(module, activation="relu")
    with pytest.raises(ValueError, match=r"activation must be one of \['relu', 'sigmoid', 'tanh'\], got 'gelu'"):
        from_torch(module, activation="gelu")
    with pytest.raises(ValueError, match=r"pooling must be one of \['avg', 'max'\]"):
        from_torch(module, pooling="lp")


class Custom(Module):
    def forward(self, x):
        return x


def test_to_torch_refuses_an_unsupported_layer():
    model = pylenet.LeNet5()
    model.layers.append(("extra", Custom()))
    with pytest.raises(TypeError, match="layer extra is a Custom"):
        to_torch(model)


def test_missing_torch_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)
    for call in (lambda: to_torch(pylenet.LeNet5()), lambda: from_torch({})):
        with pytest.raises(ImportError, match=r"pip install 'pylenet\[torch\]'"):
            call()
    ckpt = pylenet.LeNet5().save(tmp_path / "model.ckpt")
    assert main(["export", "--model", str(ckpt), "--torch", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert "pylenet[torch]" in err and err.count("\n") == 1
    assert not (tmp_path / "m.pt").exists()


def test_cli_export_torch_writes_a_loadable_state_dict(tmp_path, capsys):
    model = pylenet.LeNet5(activation="sigmoid", pooling="avg", seed=7)
    ckpt = model.save(tmp_path / "model.ckpt")
    out = tmp_path / "lenet5.pt"
    assert main(["export", "--model", str(ckpt), "--torch", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    state = torch.load(io.BytesIO(out.read_bytes()), weights_only=True)
    back = from_torch(state, activation="sigmoid", pooling="avg")
    assert same_params(model, back)


def test_importing_pylenet_imports_neither_torch_nor_onnx():
    code = "import sys, pylenet; print(sorted({'torch', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO_ROOT).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ other small torch CNNs

def d2l_lenet():
    """d2l.ai's LeNet for 28x28 digits: C1 padded to keep 28x28, sigmoids, average pooling."""
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),  # 6@28x28 -> 6@14x14
                         nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2),            # 16@10x10 -> 16@5x5
                         nn.Flatten(), nn.Linear(400, 120), nn.Sigmoid(),
                         nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10))


def test_from_torch_reads_the_d2l_lenet_and_fit_trains_it_on_28x28_digits():
    torch.manual_seed(0)
    net = d2l_lenet()
    model = from_torch(net)
    assert isinstance(model, Sequential) and not isinstance(model, pylenet.LeNet5)  # padded C1: not LeNet5
    assert list(model.state_dict()) == list(net.state_dict())
    assert model.input_shape == (1, 28, 28)  # so fit, evaluate and predict feed digits unpadded
    x = np.random.default_rng(5).standard_normal((16, 1, 28, 28)).astype(np.float32)
    ref = torch_logits(net.eval(), x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()

    # One SGD step of fit on uint8 digits equals torch's step on the same normalised batch.
    rng = np.random.default_rng(6)
    digits, labels = rng.integers(0, 256, (32, 28, 28), dtype=np.uint8), rng.integers(0, 10, 32)
    history = pylenet.fit(model, (digits, labels), epochs=1, batch_size=32, progress=False,
                          optimizer=pylenet.optim.SGD(model.parameters(), lr=0.5))
    assert history["loss"][0] > 0
    xt = torch.from_numpy(pylenet.data.pad_and_normalize(digits, pad=0))
    loss = F.cross_entropy(net.train()(xt), torch.from_numpy(labels))
    assert history["loss"][0] == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.5 * p.grad
    theirs = net.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, theirs[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    assert pylenet.predict(model, digits[:3])[0].shape == (3,)


def mnist_example_torch():
    """PyTorch's MNIST example (pytorch/examples mnist/main.py) as an nn.Sequential of its layers."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 32, 3), relu1=nn.ReLU(), conv2=nn.Conv2d(32, 64, 3), relu2=nn.ReLU(),
        pool=nn.MaxPool2d(2), dropout1=nn.Dropout(0.25), flatten=nn.Flatten(),
        fc1=nn.Linear(9216, 128), relu3=nn.ReLU(), dropout2=nn.Dropout(0.5), fc2=nn.Linear(128, 10)))


def test_from_torch_reads_pytorchs_mnist_example_net():
    torch.manual_seed(1)
    net = mnist_example_torch().train()
    model = from_torch(net)
    assert net.training  # from_torch compared the two in evaluation mode and left the module as it was
    # the same network as pylenet.models.mnist_example_net: its layers, names and input
    ours = pylenet.models.mnist_example_net()
    assert [(n, type(layer).__name__) for n, layer in model.layers] == \
        [(n, type(layer).__name__) for n, layer in ours.layers]
    assert list(model.state_dict()) == list(ours.state_dict()) == list(net.state_dict())
    assert model.input_shape == ours.input_shape == (1, 28, 28)
    assert (model.layers[5][1].p, model.layers[9][1].p) == (0.25, 0.5)
    x = np.random.default_rng(7).standard_normal((8, 1, 28, 28)).astype(np.float32)
    ref = torch_logits(net.eval(), x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()


class InOrder(nn.Module):
    """Not an nn.Sequential: named blocks that its forward calls one after another."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.LeakyReLU(0.1), nn.MaxPool2d(2))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.flatten(self.gap(self.features(x))))


def test_from_torch_reads_a_module_whose_children_run_in_order():
    torch.manual_seed(2)
    net = InOrder()
    with torch.no_grad():  # move the running statistics off their initial 0 and 1
        net(torch.randn(16, 1, 28, 28) * 2 + 1)
    model = from_torch(net.eval())
    assert [name for name, _ in model.layers] == ["features.0", "features.1", "features.2",
                                                  "features.3", "gap", "flatten", "head"]
    assert model.layers[2][1].negative_slope == pytest.approx(0.1)
    assert list(model.state_dict()) == list(net.state_dict())
    x = np.random.default_rng(8).standard_normal((8, 1, 28, 28)).astype(np.float32)
    ref = torch_logits(net, x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()


def test_to_torch_and_back_keeps_every_batchnorm_running_statistic():
    """Running means, variances and batch counts moved in pylenet reach torch, and those moved
    further in torch come back: every buffer equal, and both evaluate alike."""
    rng = np.random.default_rng(9)
    model = Sequential(Conv2d(1, 4, 3, rng=rng), pylenet.BatchNorm2d(4), pylenet.ReLU(), Flatten(),
                       Linear(4 * 6 * 6, 6, rng=rng), pylenet.BatchNorm1d(6, momentum=0.3), Linear(6, 3, rng=rng))
    model.train()
    for seed in range(3):  # pylenet's own training batches, off centre
        model.forward((rng.standard_normal((8, 1, 8, 8)) * 3 + 2).astype(np.float32))
    buffers = dict(model.named_buffers())
    assert int(buffers["1.num_batches_tracked"]) == 3 and np.abs(buffers["1.running_mean"]).min() > 0
    module = to_torch(model)
    state = module.state_dict()
    for name, value in buffers.items():
        np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    ref = torch_logits(module, x)
    assert (np.abs(model.eval().forward(x) - ref) <= logit_tolerance(ref)).all()

    module.train()
    with torch.no_grad():  # torch's training batches move the statistics further
        for _ in range(2):
            module(torch.randn(8, 1, 8, 8) - 1)
    back = from_torch(module.eval(), input_shape=(1, 8, 8))
    state = module.state_dict()
    back_buffers = dict(back.named_buffers())
    assert list(back_buffers) == list(buffers)
    for name, value in back_buffers.items():
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)
    assert int(back_buffers["5.num_batches_tracked"]) == 5
    ref = torch_logits(module, x)
    assert (np.abs(back.eval().forward(x) - ref) <= logit_tolerance(ref)).all()
