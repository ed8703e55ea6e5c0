"""Module.state_dict / load_state_dict, and checkpoints of any Sequential of built-in layers."""
import numpy as np
import pytest

import pylenet
from pylenet import LeNet5, Sequential
from pylenet.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def custom_net(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential(
        ("conv", pylenet.Conv2d(3, 4, 3, stride=1, padding=1, rng=rng)),
        ("act", pylenet.Tanh()),
        ("pool", pylenet.AvgPool2d(2, stride=2)),
        ("conv2", pylenet.Conv2d(4, 5, 3, padding=0, bias=False, rng=rng)),
        ("relu", pylenet.ReLU()),
        ("pool2", pylenet.MaxPool2d(2)),
        ("flatten", pylenet.Flatten()),
        ("fc", pylenet.Linear(5 * 3 * 3, 7, rng=rng)),
        ("sig", pylenet.Sigmoid()),
        ("out", pylenet.Linear(7, 3, bias=False, rng=rng)))


def test_state_dict_is_ordered_names_to_copies():
    model = LeNet5()
    state = model.state_dict()
    assert list(state) == [name for name, _ in model.named_parameters()]
    assert list(state)[:2] == ["C1.weight", "C1.bias"]
    state["C1.weight"][...] = 7.0          # a copy: the model is untouched
    assert not np.any(model.state_dict()["C1.weight"] == 7.0)


def test_load_state_dict_round_trips_and_checks_keys_and_shapes():
    a, b = LeNet5(seed=1), LeNet5(seed=2)
    assert b.load_state_dict(a.state_dict()) == ([], [])
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value)
    before = b.state_dict()
    bad = a.state_dict()
    bad["F7.weight"] = bad.pop("F6.weight")
    bad["C1.bias"] = np.zeros(5, np.float32) + 3   # would be written first if checks were lazy
    with pytest.raises(ValueError, match=r"missing \['F6.weight'\], unexpected \['F7.weight'\]"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match=r"C1.bias has shape \(5,\), the model expects \(6,\)"):
        b.load_state_dict(bad, strict=False)
    with pytest.raises(TypeError, match="C1.weight must be a numeric numpy array"):
        b.load_state_dict({**a.state_dict(), "C1.weight": [[0.0]]})
    with pytest.raises(TypeError, match="mapping"):
        b.load_state_dict([1, 2])
    for name, value in before.items():       # nothing was written by the refused calls
        np.testing.assert_array_equal(b.state_dict()[name], value)
    partial = {"C1.weight": a.state_dict()["C1.weight"], "extra": np.zeros(1)}
    missing, unexpected = b.load_state_dict(partial, strict=False)
    assert "C1.bias" in missing and unexpected == ["extra"]
    np.testing.assert_array_equal(b.state_dict()["C1.weight"], a.state_dict()["C1.weight"])


def test_any_sequential_of_built_in_layers_saves_and_loads(tmp_path):
    model = custom_net()
    x = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    path = pylenet.save_model(tmp_path / "net.ckpt", model)
    loaded = pylenet.load_model(path)
    assert type(loaded) is Sequential and [n for n, _ in loaded] == [n for n, _ in model]
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(pylenet.predict(loaded, x)[1], pylenet.predict(model, x)[1])
    assert load_checkpoint(path).arch["layers"][3] == {
        "name": "conv2", "type": "Conv2d", "in_channels": 4, "out_channels": 5, "kernel_size": 3,
        "stride": 1, "padding": 0, "bias": False}
    # LeNet5 keeps its named architecture; load_model rebuilds the subclass.
    lenet = pylenet.load_model(LeNet5(activation="tanh").save(tmp_path / "l.ckpt"))
    assert type(lenet) is LeNet5 and lenet.config["activation"] == "tanh"
    with pytest.raises(CheckpointError, match="'Sequential' architecture, not 'LeNet5'"):
        LeNet5.load(path)


def test_a_custom_net_trains_resumably_through_a_checkpoint(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 3, 16, 16)).astype(np.float32)
    y = np.arange(64) % 3
    sgd = lambda m: pylenet.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)  # noqa: E731
    straight = custom_net()
    pylenet.fit(straight, (x, y), epochs=2, batch_size=16, progress=False, optimizer=sgd(straight))
    first = custom_net()
    ckpt = tmp_path / "run.ckpt"
    pylenet.fit(first, (x, y), epochs=1, batch_size=16, progress=False, checkpoint=ckpt,
                optimizer=sgd(first))
    model = pylenet.load_model(ckpt)
    trainer = pylenet.Trainer(model, sgd(model), batch_size=16, progress=False)
    trainer.restore(load_checkpoint(ckpt), ckpt)
    trainer.fit((x, y), epochs=2)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[name], value, err_msg=name)
    other = Sequential(("flatten", pylenet.Flatten()), ("fc", pylenet.Linear(768, 3)))
    with pytest.raises(CheckpointError, match="parameters"):
        pylenet.Trainer(other, progress=False).restore(load_checkpoint(ckpt), ckpt)


def test_unsavable_models_and_unbuildable_checkpoints_say_why(tmp_path):
    class Custom(pylenet.ReLU):
        pass

    with pytest.raises(TypeError, match=r"cannot save layer 'c' \(Custom\)"):
        pylenet.save_model(tmp_path / "x.ckpt", Sequential(("c", Custom())))
    assert not (tmp_path / "x.ckpt").exists()
    cases = [({"name": "Sequential", "layers": [{"name": "a", "type": "GELU"}]}, "bad layer entry"),
             ({"name": "Sequential", "layers": [{"name": "a", "type": "Linear", "in_features": 2}]},
              r"needs exactly the fields \['in_features', 'out_features', 'bias'\]"),
             ({"name": "Sequential", "layers": [{"name": "a", "type": "Linear", "in_features": 0,
                                                 "out_features": 2, "bias": True}]}, "in_features must be >= 1"),
             ({"name": "ResNet"}, r"'ResNet' architecture; this pylenet builds \['LeNet5', 'Sequential'\]")]
    for arch, match in cases:
        path = save_checkpoint(tmp_path / "c.ckpt", Checkpoint(arch=arch, params={}))
        with pytest.raises(CheckpointError, match=match):
            pylenet.load_model(path)
    arch = {"name": "Sequential", "layers": [{"name": "fc", "type": "Linear", "in_features": 2,
                                              "out_features": 3, "bias": True}]}
    path = save_checkpoint(tmp_path / "w.ckpt", Checkpoint(arch=arch, params={
        "fc.weight": np.zeros((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"fc.weight has shape \(3, 4\), the model expects \(3, 2\)"):
        pylenet.load_model(path)
