"""The fused engine against the layer-by-layer path: bit-identical results, its cache, .grad."""
import numpy as np
import pytest

from pylenet import ops
from pylenet.engine import cpu_net_for
from pylenet.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential
from pylenet.losses import CrossEntropyLoss, MSELoss
from pylenet.models import LeNet5


def batch(n, seed=0, shape=(1, 32, 32), classes=10):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def layer_step(model, x, labels, loss):
    """Outputs, loss and every gradient from the Python layers (ops one by one)."""
    out = model.forward(x)
    value, dout = loss(out, labels)
    model.backward(dout)
    return out, value, [p.grad.copy() for p in model.parameters()]


def fused_step(model, x, labels, loss):
    out_value = cpu_net_for(model).train_step(x, labels, loss.name)
    return out_value[1], out_value[0], [p.grad.copy() for p in model.parameters()]


VARIANTS = [dict(activation=a, pooling=p) for a in ("relu", "tanh", "sigmoid") for p in ("max", "avg")]


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v['activation']}-{v['pooling']}")
@pytest.mark.parametrize("loss", [CrossEntropyLoss(), MSELoss()], ids=["ce", "mse"])
def test_layer_path_and_fused_engine_are_bit_identical(n, variant, loss):
    x, labels = batch(n, seed=n)
    model = LeNet5(**variant, seed=3)
    out_a, loss_a, grads_a = layer_step(model, x, labels, loss)
    out_b, loss_b, grads_b = fused_step(model, x, labels, loss)
    np.testing.assert_array_equal(out_a, out_b)
    for (name, _), a, b in zip(model.named_parameters(), grads_a, grads_b):
        np.testing.assert_array_equal(a, b, err_msg=name)
    # the loss is a double summed per block on one side, over the batch on the other
    assert loss_a == pytest.approx(loss_b, rel=1e-12)


@pytest.mark.parametrize("n", [1, 9, 33])
def test_bit_identical_with_strides_padding_and_a_fused_relu(n):
    rng = np.random.default_rng(1)
    model = Sequential(Conv2d(3, 16, 3, stride=2, padding=1, rng=rng), ReLU(),  # im2col path
                       Conv2d(16, 8, 3, padding=2, rng=rng), ReLU(), MaxPool2d(2, 3),
                       Flatten(), Linear(8 * 3 * 3, 5, rng=rng), ReLU(), Linear(5, 4, rng=rng))
    x, labels = batch(n, seed=2, shape=(3, 13, 11), classes=4)
    fused = cpu_net_for(model, (3, 13, 11))
    out_a, _, grads_a = layer_step(model, x, labels, CrossEntropyLoss())
    _, out_b = fused.train_step(x, labels, "cross_entropy")
    np.testing.assert_array_equal(out_a, out_b)
    for a, p in zip(grads_a, model.parameters()):
        np.testing.assert_array_equal(a, p.grad)


def test_changing_a_layer_setting_rebuilds_the_cached_network():
    rng = np.random.default_rng(0)
    model = Sequential(Conv2d(1, 2, 3, rng=rng), Flatten(), Linear(2 * 6 * 6, 3, rng=rng))
    x = batch(2, shape=(1, 8, 8))[0]
    first = cpu_net_for(model, (1, 8, 8))
    assert cpu_net_for(model, (1, 8, 8)) is first  # cached while nothing changes
    model.layers[0][1].padding = 1  # now (1, 8, 8) -> (2, 8, 8): the Linear no longer fits
    with pytest.raises(ValueError, match="in_features"):
        cpu_net_for(model, (1, 8, 8))
    model.layers[2] = ("2", Linear(2 * 8 * 8, 3, rng=rng))
    np.testing.assert_array_equal(cpu_net_for(model, (1, 8, 8)).forward(x), model.forward(x))


def test_train_step_writes_grad_in_place_and_replaces_an_unusable_one():
    model = LeNet5(seed=1)
    x, labels = batch(4)
    weight, bias = model.layers[0][1].weight, model.layers[0][1].bias
    weight.grad[...] = np.nan
    held = weight.grad
    bias.grad = np.zeros(bias.shape, np.float64)  # wrong dtype: replaced by a float32 array
    cpu_net_for(model).train_step(x, labels)
    assert weight.grad is held and np.isfinite(held).all()
    assert bias.grad.dtype == np.float32 and np.isfinite(bias.grad).all()


def test_layer_backward_writes_grad_in_place_and_replaces_an_unusable_one():
    layer = Linear(5, 3, rng=np.random.default_rng(0))
    held = layer.weight.grad
    held[...] = np.nan
    layer.bias.grad = np.zeros((2,), np.float32)  # wrong shape: replaced
    layer.forward(np.ones((2, 5), np.float32))
    layer.backward(np.ones((2, 3), np.float32))
    assert layer.weight.grad is held
    np.testing.assert_array_equal(held, np.full((3, 5), 2.0, np.float32))
    np.testing.assert_array_equal(layer.bias.grad, [2.0, 2.0, 2.0])


@pytest.mark.parametrize("n", [0, 1, 7, 8, 17, 64, 65])
def test_per_op_backward_splits_the_batch_as_the_engine(n):
    # Per-op results do not depend on the thread count (the split is a function of N alone).
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((n, 6, 7, 7)).astype(np.float32)
    xl, wl, dyl = x.reshape(n, 324), rng.standard_normal((5, 324)).astype(np.float32), dy[:, :5, 0, 0]
    results = []
    before = ops.get_num_threads()
    try:
        for threads in (1, 2):
            ops.set_num_threads(threads)
            results.append(ops.conv2d_backward(x, w, dy) + ops.linear_backward(xl, wl, dyl)
                           + (ops.linear_forward(xl, wl),))
    finally:
        ops.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_every_registry_kind_has_one_layer_class_with_the_attributes_it_names():
    from pylenet import _core, layers
    from pylenet.engine import LAYER_KINDS, LOSS_KINDS, loss_name

    classes = {}
    for cls in vars(layers).values():
        if isinstance(cls, type) and "core_kind" in cls.__dict__:
            assert cls.core_kind not in classes, f"{cls.core_kind} declared twice"
            classes[cls.core_kind] = cls
    assert set(classes) == set(LAYER_KINDS) == set(_core.layer_kinds())
    samples = {"conv2d": layers.Conv2d(2, 3, 3, stride=2, padding=1), "linear": layers.Linear(4, 5, bias=False),
               "maxpool2d": layers.MaxPool2d(3, 2), "avgpool2d": layers.AvgPool2d(2)}
    from pylenet.engine import describe
    assert describe(samples["conv2d"]) == ("conv2d", dict(in_channels=2, out_channels=3, kernel_size=3,
                                                          stride=2, padding=1, bias=True))
    assert describe(samples["linear"]) == ("linear", dict(in_features=4, out_features=5, bias=False))
    assert describe(samples["maxpool2d"]) == ("maxpool2d", dict(kernel_size=3, stride=2))
    assert describe(samples["avgpool2d"]) == ("avgpool2d", dict(kernel_size=2, stride=2))  # stride: the kernel's
    assert describe(layers.ReLU()) == ("relu", {})
    assert describe(layers.Subsample2d(3, 2, bias=False)) == ("subsample2d", dict(channels=3, kernel_size=2,
                                                                                 stride=2, bias=False))
    assert describe(layers.Rescale(2.0, -1.0)) == ("rescale", dict(scale=2.0, shift=-1.0))
    assert describe(layers.BatchNorm2d(4, momentum=0.2)) == ("batchnorm2d", dict(num_features=4, eps=1e-5,
                                                                                 momentum=0.2, affine=True))
    # Every class's attributes are its registry entry's, in order, and its constructor takes them.
    for kind, cls in classes.items():
        names = [a["name"] for a in LAYER_KINDS[kind]["attrs"]]
        assert LAYER_KINDS[kind]["class"] == cls.__name__
        assert all(n in cls.__init__.__code__.co_varnames for n in names), (kind, names)

    class Custom(layers.ReLU):  # overrides forward without declaring a kind: not fused
        def forward(self, x):
            return x
    assert describe(Custom()) is None
    assert set(LOSS_KINDS) == {"cross_entropy", "mse", "rbf_map"}
    assert loss_name(CrossEntropyLoss()) == "cross_entropy" and loss_name(MSELoss()) == "mse"
    assert loss_name(lambda out, y: (0.0, out)) is None


def test_net_refuses_unknown_kinds_and_losses_naming_the_known_ones():
    from pylenet import _core
    with pytest.raises(ValueError, match=r"unknown layer kind 'gelu' \(expected one of conv2d, .*linear, .*rescale"):
        _core.Net([("gelu", {})], (1, 4, 4))
    net = _core.Net([("flatten", {})], (1, 2, 2))
    with pytest.raises(ValueError, match=r"loss must be one of 'cross_entropy', 'mse', 'rbf_map', got 'hinge'"):
        net.train_step(np.zeros((1, 1, 2, 2), np.float32), np.zeros(1, np.int64), [], [], "hinge")


def test_net_and_op_checks_live_in_the_core_and_name_what_was_wrong():
    from pylenet import _core
    model = LeNet5()
    net = cpu_net_for(model)
    params = [p.data for p in model.parameters()]
    x, labels = batch(2)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\), got \(3,\)"):
        net.net.train_step(x, np.zeros(3, np.int64), params, [p.grad for p in model.parameters()])
    with pytest.raises(ValueError, match=r"labels\[1\] = 10 is outside \[0, 10\)"):
        net.net.train_step(x, np.array([0, 10]), params, [p.grad for p in model.parameters()])
    with pytest.raises(ValueError, match=r"expected 10 gradient arrays, got 9"):
        net.net.train_step(x, labels, params, [p.grad for p in model.parameters()][:9])
    with pytest.raises(ValueError, match=r"parameter 0 has shape \(6, 1, 5\), expected \(6, 1, 5, 5\)"):
        net.net.forward(x, [params[0][..., 0]] + params[1:])
    with pytest.raises(ValueError, match=r"lut must hold 256 floats, got 255"):
        net.net.predict_u8(np.zeros((1, 28, 28), np.uint8), np.zeros(255, np.float32), 2, params)
    with pytest.raises(ValueError, match=r"labels\[1\] = 18446744073709551615 does not fit int64"):
        ops.softmax_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 2 ** 64 - 1], np.uint64))
    with pytest.raises(ValueError, match=r"idx\[0\] = 5 is outside \[0, 2\)"):
        _core.gather_pad_normalize(np.zeros((2, 4, 4), np.uint8), np.array([5]), 0, np.zeros(256, np.float32))
