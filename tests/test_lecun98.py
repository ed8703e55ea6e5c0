"""LeNet5(variant="lecun98"): its ops against the float64 reference and finite differences, the
network's parameter counts and fixed tables, the fused engine against the layer path, the
penalty outputs (argmin), checkpoints and the CLI flag."""
import numpy as np
import pytest

import reference as ref
from gradcheck import gradcheck
from pylenet import lecun98, ops
from pylenet.engine import class_scores, cpu_net_for, outputs_penalties
from pylenet.layers import (RBF, Conv2d, Flatten, Linear, MaskedConv2d, Rescale, ScaledTanh,
                            Sequential, Subsample2d)
from pylenet.losses import RBFMAPLoss
from pylenet.models import LeNet5
from pylenet.optim import SGD
from pylenet.recipe import RECIPES

RNG = np.random.default_rng(98)
MASK = np.array([[1, 0, 1], [0, 1, 1]], np.float32)  # (K=2, C=3)


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------------ ops: reference values


def test_ops_match_the_float64_reference():
    x = f32(3, 3, 7, 6)
    w, b = f32(2, 3, 3, 3), f32(2)
    ref.assert_close(ops.scaled_tanh_forward(x), ref.scaled_tanh_forward(x), what="scaled_tanh")
    ref.assert_close(ops.masked_conv2d_forward(x, w, MASK, b, 1, 1),
                     ref.masked_conv2d_forward(x, w, MASK, b, 1, 1), what="masked_conv2d")
    ws, bs = f32(3), f32(3)
    ref.assert_close(ops.subsample2d_forward(x, ws, bs, 2, 2),
                     ref.subsample2d_forward(x, ws, bs, 2, 2), what="subsample2d")
    ref.assert_close(ops.subsample2d_forward(x, ws, None, 3, 2),
                     ref.subsample2d_forward(x, ws, None, 3, 2), what="subsample2d k3 s2")
    xr, c = f32(5, 84), np.array(lecun98.RBF_CODES, np.float32)
    ref.assert_close(ops.rbf_forward(xr, c), ref.rbf_forward(xr, c), rtol=1e-5, what="rbf")
    y, labels = np.abs(f32(6, 10, scale=3.0)), RNG.integers(0, 10, 6)
    loss, _ = ops.rbf_map_loss(y, labels)
    assert loss == pytest.approx(ref.rbf_map_loss(y, labels), rel=1e-6)
    np.testing.assert_allclose(ops.rescale_forward(x, 0.5, -0.25), 0.5 * x - 0.25, rtol=1e-6)
    assert ops.scaled_tanh_forward(np.array([1.0, -1.0], np.float32)) == pytest.approx([1, -1], abs=1e-4)


# ------------------------------------------------------------------ ops: finite differences


def test_scaled_tanh_and_rescale_gradients():
    x = f32(2, 3, 4)
    gradcheck(lambda x: ops.scaled_tanh_forward(x),
              lambda G, x: {"x": ops.scaled_tanh_backward(ops.scaled_tanh_forward(x), G)}, {"x": x})
    gradcheck(lambda x: ops.rescale_forward(x, 0.39, 0.07),
              lambda G, x: {"x": ops.rescale_backward(G, 0.39)}, {"x": x})


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_masked_conv2d_gradients_and_the_masked_weight_gradient(stride, padding):
    x, w, b = f32(2, 3, 6, 5), f32(2, 3, 3, 3), f32(2)

    def backward(G, x, w, b):
        dx, dw, db = ops.masked_conv2d_backward(x, w, MASK, G, stride, padding)
        return {"x": dx, "w": dw, "b": db}
    gradcheck(lambda x, w, b: ops.masked_conv2d_forward(x, w, MASK, b, stride, padding), backward,
              {"x": x, "w": w, "b": b})
    dy = f32(*ops.masked_conv2d_forward(x, w, MASK, b, stride, padding).shape)
    _, dw, _ = ops.masked_conv2d_backward(x, w, MASK, dy, stride, padding)
    assert (dw[MASK == 0] == 0).all() and (dw[MASK == 1] != 0).all()


def test_masked_conv2d_refuses_a_bad_mask():
    x, w = f32(1, 3, 5, 5), f32(2, 3, 3, 3)
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 3\) \(K, C\), got \(3, 2\)"):
        ops.masked_conv2d_forward(x, w, MASK.T)
    with pytest.raises(ValueError, match=r"mask\[1, 2\] = 0.5.* is neither 0 nor 1"):
        ops.masked_conv2d_forward(x, w, np.array([[1, 0, 1], [0, 1, 0.5]]))


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1)])
def test_subsample2d_gradients(kernel, stride):
    x, w, b = f32(2, 3, 7, 6), f32(3), f32(3)

    def backward(G, x, w, b):
        dx, dw, db = ops.subsample2d_backward(x, w, G, kernel, stride)
        return {"x": dx, "w": dw, "b": db}
    gradcheck(lambda x, w, b: ops.subsample2d_forward(x, w, b, kernel, stride), backward,
              {"x": x, "w": w, "b": b})
    with pytest.raises(ValueError, match=r"w length \(2\) does not match x channels"):
        ops.subsample2d_forward(x, w[:2], None, kernel, stride)


def test_rbf_and_rbf_map_loss_gradients():
    x, c = f32(3, 5), np.sign(f32(4, 5)).astype(np.float32)
    gradcheck(lambda x: ops.rbf_forward(x, c), lambda G, x: {"x": ops.rbf_backward(x, c, G)}, {"x": x})
    y, labels = np.abs(f32(4, 6, scale=2.0)), np.array([0, 5, 2, 2])
    gradcheck(lambda y: ops.rbf_map_loss(y, labels)[0], lambda G, y: {"y": ops.rbf_map_loss(y, labels)[1]},
              {"y": y})
    with pytest.raises(ValueError, match=r"labels\[1\] = 6 is outside \[0, 6\)"):
        ops.rbf_map_loss(y, np.array([0, 6, 1, 1]))
    with pytest.raises(ValueError, match=r"centres features centres.shape\[1\] \(4\) does not match"):
        ops.rbf_forward(x, c[:, :4])


# ------------------------------------------------------------------ the network


def test_lecun98_has_the_papers_60000_parameters_and_tables():
    model = LeNet5(variant="lecun98")
    counts = {name: layer.num_parameters() for name, layer in model.layers if layer.num_parameters()}
    assert counts == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}
    assert model.num_parameters() == 60_000
    assert [sum(row) for row in lecun98.C3_CONNECTIONS] == [3] * 6 + [4] * 9 + [6]
    codes = np.array(lecun98.RBF_CODES)
    assert codes.shape == (10, 84) and set(np.unique(codes)) == {-1.0, 1.0}
    assert len({tuple(r) for r in codes}) == 10
    c3 = dict(model.layers)["C3"]
    assert (c3.weight.data[c3.mask == 0] == 0).all()
    assert outputs_penalties(model) and not outputs_penalties(LeNet5())
    assert "total trainable parameters: 60,000" in model.summary()


def test_lecun98_init_is_uniform_in_2_4_over_the_fan_in():
    model = LeNet5(variant="lecun98", seed=1)
    layers = dict(model.layers)
    assert np.abs(layers["C1"].weight.data).max() <= 2.4 / 25
    assert np.abs(layers["C5"].weight.data).max() <= 2.4 / 400
    assert np.abs(layers["C5"].weight.data).max() > 0.9 * 2.4 / 400
    assert np.abs(layers["S2"].weight.data).max() <= 2.4 / 4
    c3 = layers["C3"].weight.data
    assert np.abs(c3[15]).max() <= 2.4 / 150 < np.abs(c3[0]).max() <= 2.4 / 75
    # the input levels: pylenet's normalised background and foreground map onto -0.1 and 1.175
    from pylenet.data import MNIST_MEAN, MNIST_STD
    levels = (np.array([0.0, 1.0], np.float32) - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(layers["input"].forward(levels), [-0.1, 1.175], atol=1e-6)
    assert "input" not in dict(LeNet5(variant="lecun98", input_norm="mnist").layers)


def test_lecun98_options_are_checked():
    with pytest.raises(ValueError, match="activation and pooling belong to variant='modern'"):
        LeNet5(variant="lecun98", activation="tanh")
    with pytest.raises(ValueError, match="num_classes must be 10"):
        LeNet5(variant="lecun98", num_classes=5)
    with pytest.raises(ValueError, match="init and input_norm are options of variant='lecun98'"):
        LeNet5(init="lecun98")
    with pytest.raises(ValueError, match="variant must be one of"):
        LeNet5(variant="lenet1")
    assert LeNet5().config == {"name": "LeNet5", "activation": "relu", "pooling": "max",
                               "num_classes": 10, "seed": 0}


def _steps(model, x, labels, fused: bool):
    loss = RBFMAPLoss()
    if fused:
        value, out = cpu_net_for(model).train_step(x, labels, loss.name)
    else:
        out = model.forward(x)
        value, dout = loss(out, labels)
        model.backward(dout)
    return out, value, [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("options", [{}, {"init": "default", "input_norm": "mnist"}], ids=["paper", "plain"])
def test_fused_engine_and_layer_path_are_bit_identical(n, options):
    rng = np.random.default_rng(n)
    x, labels = rng.standard_normal((n, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, n)
    model = LeNet5(variant="lecun98", seed=2, **options)
    out_a, loss_a, grads_a = _steps(model, x, labels, fused=False)
    out_b, loss_b, grads_b = _steps(model, x, labels, fused=True)
    np.testing.assert_array_equal(out_a, out_b)
    for (name, _), a, b in zip(model.named_parameters(), grads_a, grads_b):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert loss_a == pytest.approx(loss_b, rel=1e-12)


def test_training_keeps_the_unconnected_c3_weights_at_zero_and_predicts_the_argmin(restore_threads):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((32, 1, 32, 32)).astype(np.float32), rng.integers(0, 10, 32)
    model = LeNet5(variant="lecun98", seed=0)
    opt = SGD(model.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)
    net = cpu_net_for(model)
    losses = []
    for _ in range(5):
        losses.append(net.train_step(x, labels, "rbf_map")[0])
        opt.step()
    assert losses[-1] < losses[0]
    c3 = dict(model.layers)["C3"]
    assert (c3.weight.data[c3.mask == 0] == 0).all()
    import pylenet
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels_fused, probs_fused = pylenet.predict(model, images)  # the core's predict_u8
    y = model.eval().forward(pylenet.data.pad_and_normalize(images, pad=2))
    np.testing.assert_array_equal(labels_fused, y.argmin(axis=1))
    np.testing.assert_allclose(probs_fused, ops.softmax(class_scores(model, y)), rtol=1e-5, atol=1e-7)
    model.train()


def test_a_sequential_of_the_new_layers_runs_fused_and_saves(tmp_path):
    import pylenet
    rng = np.random.default_rng(3)
    table = ((1, 0), (1, 1), (0, 1))
    model = Sequential(Rescale(0.5, 0.1), Conv2d(1, 2, 3, rng=rng), ScaledTanh(),
                       Subsample2d(2, 2, rng=rng),
                       MaskedConv2d(2, 3, 2, connections=table, padding=1, rng=rng), ScaledTanh(),
                       Flatten(), Linear(3 * 4 * 4, 4, rng=rng), ScaledTanh(),
                       RBF(4, 3, centres=((1, -1, 1, -1), (1, 1, 1, 1), (-1, -1, 1, 1))))
    x = rng.standard_normal((9, 1, 8, 8)).astype(np.float32)
    fused = cpu_net_for(model, (1, 8, 8))
    assert fused is not None
    np.testing.assert_array_equal(fused.forward(x), model.eval().forward(x))
    path = pylenet.save_model(tmp_path / "seq.ckpt", model)
    back = pylenet.load_model(path)
    np.testing.assert_array_equal(back.eval().forward(x), model.forward(x))
    with pytest.raises(ValueError, match=r"connections must be 3 rows"):
        MaskedConv2d(2, 3, 2, connections=table[:2])


def test_lecun98_checkpoint_round_trip(tmp_path):
    import pylenet
    model = LeNet5(variant="lecun98", seed=4, init="default")
    path = model.save(tmp_path / "m.ckpt")
    back = LeNet5.load(path)
    assert back.config == model.config
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(cpu_net_for(back).forward(x), cpu_net_for(model).forward(x))
    assert pylenet.load_model(path).config["variant"] == "lecun98"


def test_cli_trains_the_lecun98_variant(tmp_path, monkeypatch, restore_threads):
    from pylenet import cli
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), rng.integers(0, 10, 40))
    monkeypatch.setattr(cli, "_load_splits", lambda args, splits, progress: [data for _ in splits])
    out = tmp_path / "run"
    assert cli.main(["train", "--variant", "lecun98", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--threads", "1"]) == 0
    import json
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["variant"] == "lecun98"
    assert metrics["history"][0]["lr"] == RECIPES["lecun98"]["lr"]["sgd"]  # its own rate, not the modern 0.02
    assert cli.main(["train", "--variant", "lecun98", "--activation", "relu", "--epochs", "1",
                     "--out", str(tmp_path / "bad"), "--no-progress"]) == 1


def test_fit_without_a_recipe_trains_lecun98_with_its_recipe_as_the_cli_does(tmp_path, monkeypatch,
                                                                              restore_threads):
    """fit(LeNet5(variant="lecun98")) with nothing but data: the lecun98 recipe's optimizer, rate
    and loss, read from RECIPES (a changed rate reaches both), and `pylenet train --variant
    lecun98` on the same data trains the same weights bit for bit."""
    import json

    import pylenet
    from pylenet import cli
    from pylenet.callbacks import Callback
    recipe = RECIPES["lecun98"]
    monkeypatch.setitem(recipe["lr"], "sgd", 0.0017)  # a rate written nowhere else

    class Seen(Callback):
        def on_train_begin(self, trainer):
            self.optimizer, self.loss = trainer.optimizer, trainer.loss_fn

    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (150, 28, 28), dtype=np.uint8), rng.integers(0, 10, 150))
    model, seen = LeNet5(variant="lecun98", seed=0), Seen()
    history = pylenet.fit(model, data, epochs=1, progress=False, threads=1, callbacks=[seen])
    assert history["lr"] == [0.0017]
    assert type(seen.optimizer) is SGD and recipe["optimizer"] == "sgd"
    assert (seen.optimizer.momentum, seen.optimizer.weight_decay) == (recipe["momentum"], recipe["weight_decay"])
    assert isinstance(seen.loss, RBFMAPLoss) and recipe["loss"] == "rbf_map"

    monkeypatch.setattr(cli, "_load_splits", lambda args, splits, progress: [data for _ in splits])
    out = tmp_path / "run"
    assert cli.main(["train", "--variant", "lecun98", "--epochs", "1", "--out", str(out),
                     "--no-progress", "--threads", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["history"][0]["lr"] == history["lr"][0]
    assert metrics["history"][0]["loss"] == history["loss"][0]
    cli_state = LeNet5.load(out / "model.ckpt").state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(cli_state[name], value, err_msg=name)
