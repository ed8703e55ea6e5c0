"""LeNet5 end to end against an equivalent torch.nn model: gradients, SGD steps, seeding, save/load."""
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import pylenet
from pylenet import LeNet5
from pylenet.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from pylenet.data import DataLoader
from pylenet.losses import CrossEntropyLoss, MSELoss
from pylenet.optim import SGD
from reference import assert_close

ARCHS = [("relu", "max"), ("tanh", "avg"), ("sigmoid", "avg"), ("sigmoid", "max")]
TORCH_ACT = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
TORCH_POOL = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# pylenet parameter name -> index of the layer in torch_lenet's nn.Sequential
TORCH_INDEX = {"C1": 0, "C3": 3, "F5": 7, "F6": 9, "output": 11}


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def torch_lenet(model: LeNet5) -> nn.Sequential:
    """The same network in torch.nn, with model's weights copied in."""
    cfg = model.config
    act, pool = TORCH_ACT[cfg["activation"]], TORCH_POOL[cfg["pooling"]]
    net = nn.Sequential(nn.Conv2d(1, 6, 5), act(), pool(2), nn.Conv2d(6, 16, 5), act(), pool(2),
                        nn.Flatten(), nn.Linear(400, 120), act(), nn.Linear(120, 84), act(),
                        nn.Linear(84, cfg["num_classes"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            layer, kind = name.split(".")
            getattr(net[TORCH_INDEX[layer]], kind).copy_(torch.from_numpy(p.data))
    return net


def torch_grads(net: nn.Sequential) -> dict:
    return {f"{layer}.{kind}": getattr(net[i], kind).grad.numpy()
            for layer, i in TORCH_INDEX.items() for kind in ("weight", "bias")}


def random_batch(n=8, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 32, 32)).astype(np.float32), rng.integers(0, num_classes, n)


@pytest.fixture(scope="module")
def mnist_train(mnist_dir):
    images, labels = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    return images[:2000], labels[:2000]


@pytest.mark.parametrize("activation,pooling", ARCHS)
def test_full_forward_backward_matches_torch(activation, pooling):
    model = LeNet5(activation=activation, pooling=pooling, seed=3)
    net = torch_lenet(model)
    x, y = random_batch()
    logits = model.forward(x)
    loss, dlogits = CrossEntropyLoss()(logits, y)
    dx = model.backward(dlogits)

    tx = torch.tensor(x, requires_grad=True)
    tlogits = net(tx)
    tloss = F.cross_entropy(tlogits, torch.from_numpy(y))
    tloss.backward()

    assert_close(logits, tlogits.detach().numpy(), what="logits")
    assert loss == pytest.approx(tloss.item(), rel=1e-5, abs=1e-6)
    assert_close(dx, tx.grad.numpy(), what="dx")
    want = torch_grads(net)
    got = dict(model.named_parameters())
    assert set(got) == set(want)
    for name, p in got.items():
        assert np.abs(want[name]).max() > 0, f"{name}: torch gradient is zero, the test is vacuous"
        assert_close(p.grad, want[name], what=f"d{name} ({activation}/{pooling})")


def test_mse_loss_gradients_match_torch_on_one_hot_targets():
    model = LeNet5(activation="sigmoid", pooling="avg", seed=1)
    net = torch_lenet(model)
    x, y = random_batch(6, seed=4)
    out = model.forward(x)
    loss, dout = MSELoss()(out, y)
    model.backward(dout)
    tout = net(torch.from_numpy(x))
    tloss = F.mse_loss(tout, F.one_hot(torch.from_numpy(y), 10).float())
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-5)
    want = torch_grads(net)
    for name, p in model.named_parameters():
        assert_close(p.grad, want[name], what=f"d{name} (mse)")


def test_twenty_sgd_steps_on_mnist_track_torch(mnist_train):
    images, labels = mnist_train
    model = LeNet5(seed=0)
    net = torch_lenet(model)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    topt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(images, labels, batch_size=32, shuffle=True, seed=1)
    losses, tlosses = [], []
    for step, (x, y) in zip(range(20), loader):
        out = model.forward(x)
        loss, dout = CrossEntropyLoss()(out, y)
        model.backward(dout)
        opt.step()
        topt.zero_grad()
        tloss = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        losses.append(loss)
        tlosses.append(tloss.item())
    # Both learn (the loss falls) and stay together step by step.
    assert np.mean(losses[-5:]) < 0.92 * np.mean(losses[:5]), losses
    np.testing.assert_allclose(losses, tlosses, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        layer, kind = name.split(".")
        want = getattr(net[TORCH_INDEX[layer]], kind).detach().numpy()
        assert_close(p.data, want, rtol=1e-3, atol=1e-4, what=f"{name} after 20 steps")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layers"])
@pytest.mark.parametrize("activation,pooling,loss", [("relu", "max", "cross_entropy"),
                                                     ("tanh", "avg", "cross_entropy"),
                                                     ("sigmoid", "avg", "mse")])
def test_one_fit_step_applies_torchs_gradient(mnist_train, activation, pooling, loss, fused):
    """fit's training step (fused core path or layer by layer) moves each weight by -lr * torch's grad."""
    images, labels = mnist_train[0][:16], mnist_train[1][:16]
    model = LeNet5(activation=activation, pooling=pooling, seed=4)
    net = torch_lenet(model)
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    lr = 10.0
    history = pylenet.fit(model, (images, labels), epochs=1, batch_size=16, loss=loss,
                          optimizer=SGD(model.parameters(), lr=lr), progress=False, fused=fused)
    x = torch.from_numpy(pylenet.data.pad_and_normalize(images))
    out = net(x)
    y = torch.from_numpy(labels)
    tloss = F.cross_entropy(out, y) if loss == "cross_entropy" else F.mse_loss(out, F.one_hot(y, 10).float())
    tloss.backward()
    assert history["loss"][0] == pytest.approx(tloss.item(), rel=1e-5)
    want = torch_grads(net)
    for name, p in model.named_parameters():
        applied = (before[name].astype(np.float64) - p.data) / lr
        assert_close(applied, want[name], rtol=1e-3, atol=1e-5, what=f"-d{name}/lr ({activation}/{pooling}/{loss})")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layers"])
def test_twenty_full_batch_fit_steps_on_mnist_track_torch(mnist_train, fused):
    """20 epochs of one 128-image batch = 20 SGD+momentum steps; the batch order inside cannot matter."""
    images, labels = mnist_train[0][:128], mnist_train[1][:128]
    model = LeNet5(seed=0)
    net = torch_lenet(model)
    history = pylenet.fit(model, (images, labels), epochs=20, batch_size=128, progress=False,
                          optimizer=SGD(model.parameters(), lr=0.03, momentum=0.9), fused=fused)
    topt = torch.optim.SGD(net.parameters(), lr=0.03, momentum=0.9)
    x, y = torch.from_numpy(pylenet.data.pad_and_normalize(images)), torch.from_numpy(labels)
    tlosses = []
    for _ in range(20):
        topt.zero_grad()
        tloss = F.cross_entropy(net(x), y)
        tloss.backward()
        topt.step()
        tlosses.append(tloss.item())
    assert history["loss"][-1] < 0.85 * history["loss"][0], history["loss"]
    np.testing.assert_allclose(history["loss"], tlosses, rtol=1e-4, atol=1e-5)
    for name, p in model.named_parameters():
        layer, kind = name.split(".")
        want = getattr(net[TORCH_INDEX[layer]], kind).detach().numpy()
        assert_close(p.data, want, rtol=1e-3, atol=1e-4, what=f"{name} after 20 steps")


def test_parameter_init_is_seeded():
    a, b, c = LeNet5(seed=0), LeNet5(seed=0), LeNet5(seed=1)
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(),
                                            c.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
        assert not np.array_equal(pa.data, pc.data), f"{name}: seeds 0 and 1 gave the same weights"
    assert LeNet5().config["seed"] == 0
    # The activation does not change which weights a seed draws.
    np.testing.assert_array_equal(LeNet5(activation="tanh", seed=5).parameters()[0].data,
                                  LeNet5(activation="relu", seed=5).parameters()[0].data)


def trained_model(train, **kwargs):
    model = LeNet5(**kwargs)
    pylenet.fit(model, (train[0][:256], train[1][:256]), epochs=1, batch_size=64, progress=False)
    return model


def test_save_load_round_trip_gives_identical_predictions(tmp_path, mnist_train):
    model = trained_model(mnist_train, activation="tanh", pooling="avg", seed=2)
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    path = model.save(tmp_path / "m.ckpt", optimizer=opt, epoch=3, extra={"note": "x"})
    assert path == tmp_path / "m.ckpt"
    loaded = LeNet5.load(path)
    assert isinstance(loaded, LeNet5)
    assert loaded.config == model.config
    for (name, p), (name2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name2
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    images = mnist_train[0][:300]
    labels1, probs1 = pylenet.predict(model, images)
    labels2, probs2 = pylenet.predict(loaded, images)
    np.testing.assert_array_equal(probs1, probs2)
    np.testing.assert_array_equal(labels1, labels2)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 3 and ckpt.extra["note"] == "x"
    assert ckpt.optimizer["config"]["type"] == "sgd"


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        LeNet5.load(tmp_path / "nope.ckpt")


def save_raw(path, arch, params):
    save_checkpoint(path, Checkpoint(arch=arch, params=params))
    return path


def lenet_params(**kwargs):
    return {n: p.data.copy() for n, p in LeNet5(**kwargs).named_parameters()}


def test_load_refuses_another_architecture_name(tmp_path):
    path = save_raw(tmp_path / "a.ckpt", {"name": "AlexNet"}, lenet_params())
    with pytest.raises(CheckpointError, match=r"'AlexNet' architecture, not 'LeNet5'"):
        LeNet5.load(path)


def test_load_refuses_an_architecture_it_cannot_build(tmp_path):
    arch = {**LeNet5().config, "activation": "gelu"}
    path = save_raw(tmp_path / "a.ckpt", arch, lenet_params())
    with pytest.raises(CheckpointError, match=r"cannot build.*gelu"):
        LeNet5.load(path)


def test_load_refuses_weights_of_another_head_size(tmp_path):
    # arch says 10 classes, weights are for 5
    path = save_raw(tmp_path / "a.ckpt", LeNet5().config, lenet_params(num_classes=5))
    with pytest.raises(CheckpointError) as info:
        LeNet5.load(path)
    msg = str(info.value)
    assert "output.weight" in msg and "(5, 84)" in msg and "(10, 84)" in msg and str(path) in msg


def test_load_refuses_missing_and_unexpected_parameters(tmp_path):
    params = lenet_params()
    params["F7.weight"] = params.pop("F6.weight")
    path = save_raw(tmp_path / "a.ckpt", LeNet5().config, params)
    with pytest.raises(CheckpointError, match=r"missing \['F6.weight'\], unexpected \['F7.weight'\]"):
        LeNet5.load(path)


def test_load_refuses_a_tampered_shape(tmp_path):
    params = lenet_params()
    params["C1.weight"] = np.zeros((6, 1, 3, 3), np.float32)
    path = save_raw(tmp_path / "a.ckpt", LeNet5().config, params)
    with pytest.raises(CheckpointError, match=r"C1.weight has shape \(6, 1, 3, 3\).*expects \(6, 1, 5, 5\)"):
        LeNet5.load(path)


def test_load_refuses_a_meta_json_shape_edited_by_hand(tmp_path):
    path = LeNet5().save(tmp_path / "m.ckpt")
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    meta = json.loads(members["meta.json"])
    entry = next(e for e in meta["arrays"] if e["name"] == "F5.weight")
    entry["shape"] = [400, 120]
    members["meta.json"] = json.dumps(meta).encode()
    tampered = tmp_path / "tampered.ckpt"
    with zipfile.ZipFile(tampered, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match=r"F5\.weight.*\[120, 400\].*\[400, 120\]"):
        LeNet5.load(tampered)


def test_trainer_restore_refuses_a_checkpoint_of_another_architecture(tmp_path):
    """Resuming a relu checkpoint into a tanh model would silently train the wrong network."""
    path = LeNet5(activation="relu").save(tmp_path / "relu.ckpt")
    trainer = pylenet.Trainer(LeNet5(activation="tanh"), progress=False)
    with pytest.raises(CheckpointError, match="activation"):
        trainer.restore(load_checkpoint(path))


def test_trainer_restore_refuses_mismatched_shapes_with_checkpoint_error(tmp_path):
    path = LeNet5(num_classes=10).save(tmp_path / "ten.ckpt")
    trainer = pylenet.Trainer(LeNet5(num_classes=5), progress=False)
    with pytest.raises(CheckpointError, match="output.weight"):
        trainer.restore(load_checkpoint(path))


def test_num_classes_other_than_ten(tmp_path, mnist_train):
    images, labels = mnist_train
    keep = labels < 3
    data = (images[keep][:600], labels[keep][:600])
    model = LeNet5(num_classes=3, seed=0)
    assert model.forward(random_batch(2)[0]).shape == (2, 3)
    assert model.num_parameters() == 61_706 - 7 * 85
    history = pylenet.fit(model, data, epochs=2, batch_size=32, progress=False)
    assert history.epochs == 2
    result = pylenet.evaluate(model, data)
    assert result["confusion"].shape == (3, 3)
    assert result["confusion"].sum() == len(data[0])
    assert result["accuracy"] > 0.8
    labels_pred, probs = pylenet.predict(model, data[0][:5])
    assert probs.shape == (5, 3) and labels_pred.max() < 3
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    loaded = LeNet5.load(model.save(tmp_path / "three.ckpt"))
    assert loaded.config["num_classes"] == 3
    np.testing.assert_array_equal(pylenet.predict(loaded, data[0][:50])[1],
                                  pylenet.predict(model, data[0][:50])[1])


def test_labels_beyond_num_classes_are_refused(mnist_train):
    images, labels = mnist_train
    model = LeNet5(num_classes=3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        pylenet.fit(model, (images[:64], labels[:64]), epochs=1, progress=False)
