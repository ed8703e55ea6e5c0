"""fit/Trainer/evaluate/predict on small real-MNIST slices: history, bit-exact reproducibility and resume, divergence."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pylenet
from pylenet import History, LeNet5, Trainer, TrainingDiverged, evaluate, fit, ops, predict
from pylenet.checkpoint import load_checkpoint
from pylenet.data import pad_and_normalize
from pylenet.losses import CrossEntropyLoss
from pylenet.optim import SGD, Adam, CosineLR, StepLR

N_TRAIN = 1000


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    train = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    test = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    return (train[0][:N_TRAIN], train[1][:N_TRAIN]), (test[0][:500], test[1][:500])


@pytest.fixture
def train_data(mnist):
    return mnist[0]


@pytest.fixture
def test_data(mnist):
    return mnist[1]


# fit(threads=...) sets the core's global thread count: restore_threads puts it back.
pytestmark = pytest.mark.usefixtures("torch_single_thread", "restore_threads")


def weights(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), \
            f"{name} differs: max |diff| {np.abs(a[name] - b[name]).max():.3e}"


def train_once(data, *, threads=2, seed=0, model_seed=0, epochs=2, batch_size=64, fused=True):
    model = LeNet5(seed=model_seed)
    fit(model, data, epochs=epochs, batch_size=batch_size, seed=seed, threads=threads, progress=False,
        fused=fused)
    return weights(model)


# ------------------------------------------------------------------------------------ history

def test_fit_returns_history_with_per_epoch_records(train_data, test_data):
    model = LeNet5()
    history = fit(model, train_data, epochs=3, validation=test_data, progress=False, threads=2)
    assert history.epochs == 3
    assert history["epoch"] == [1, 2, 3]
    for key in ("loss", "accuracy", "time", "images_per_s", "lr", "val_loss", "val_accuracy", "skipped"):
        values = history[key]
        assert len(values) == 3 and all(v is not None and math.isfinite(v) for v in values), key
    assert all(0.0 <= a <= 1.0 for a in history["accuracy"] + history["val_accuracy"])
    assert all(t > 0 for t in history["time"])
    assert history["skipped"] == [0, 0, 0]
    # The default recipe: SGD at lr 0.02 under a cosine schedule over the 3 epochs.
    assert history["lr"] == pytest.approx([0.02, 0.015, 0.005])
    # It learns: the loss falls and the last epoch is well above chance on held-out digits.
    assert history["loss"][2] < history["loss"][0]
    assert history["val_accuracy"][2] > 0.3  # chance is 0.1; 0.53 measured
    # val_* is evaluate() on the validation set after that epoch's updates.
    final = evaluate(model, test_data)
    assert history["val_accuracy"][-1] == final["accuracy"]
    assert history["val_loss"][-1] == pytest.approx(final["loss"], rel=1e-12)
    d = history.to_dict()
    assert d["loss"] == history["loss"] and set(d) >= {"loss", "val_accuracy", "time"}


def test_history_records_the_scheduled_lr_of_each_epoch(train_data):
    model = LeNet5()
    opt = SGD(model.parameters(), lr=0.04, momentum=0.9)
    history = fit(model, train_data, epochs=3, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5),
                  progress=False)
    assert history["lr"] == pytest.approx([0.04, 0.02, 0.01])
    assert opt.lr == pytest.approx(0.005)


def test_fit_trains_the_model_in_place_and_zero_epochs_is_a_no_op(train_data):
    model = LeNet5()
    before = weights(model)
    assert len(fit(model, train_data, epochs=0, progress=False)) == 0
    assert_same_weights(before, weights(model))
    fit(model, train_data, epochs=1, progress=False)
    assert any(not np.array_equal(before[n], p.data) for n, p in model.named_parameters())


# ------------------------------------------------------------------------------ reproducibility

# Same seed -> same weights, and 1 vs 2 threads, fused and layer by layer: test_reliability.py.

def test_fused_and_layer_by_layer_training_agree(train_data):
    # The same kernels with the same batch split and reduction: bit-identical after an epoch.
    data = (train_data[0][:500], train_data[1][:500])
    a = train_once(data, epochs=1, fused=True)
    b = train_once(data, epochs=1, fused=False)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_shuffle_seed_changes_the_result(train_data):
    a = train_once(train_data, seed=0, epochs=1)
    b = train_once(train_data, seed=1, epochs=1)
    assert not np.array_equal(a["C1.weight"], b["C1.weight"])


def test_threads_argument_sets_the_core_thread_count(train_data):
    fit(LeNet5(), (train_data[0][:64], train_data[1][:64]), epochs=1, threads=1, progress=False)
    assert ops.get_num_threads() == 1


# ------------------------------------------------------------------------------------ resume

def make_sgd(model):
    opt = SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    return opt, StepLR(opt, step_size=1, gamma=0.5)


def make_adam(model):
    opt = Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    return opt, CosineLR(opt, T_max=2)


@pytest.mark.parametrize("make", [make_sgd, make_adam], ids=["sgd_steplr", "adam_cosine"])
def test_resume_from_checkpoint_is_bit_identical_to_a_straight_run(make, train_data, test_data, tmp_path):
    # Straight: two epochs in one go.
    model_a = LeNet5(seed=0)
    opt_a, sched_a = make(model_a)
    hist_a = Trainer(model_a, opt_a, scheduler=sched_a, progress=False, threads=2).fit(
        train_data, epochs=2, validation=test_data)

    # Interrupted: one epoch with a checkpoint, then a fresh process-like restart.
    path = tmp_path / "run.ckpt"
    model_b = LeNet5(seed=0)
    opt_b, sched_b = make(model_b)
    Trainer(model_b, opt_b, scheduler=sched_b, progress=False, threads=2, checkpoint=path).fit(
        train_data, epochs=1, validation=test_data)
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 1

    model_c = LeNet5(seed=123)  # different init: restore must overwrite every weight
    opt_c, sched_c = make(model_c)
    trainer = Trainer(model_c, opt_c, scheduler=sched_c, progress=False, threads=2, checkpoint=path)
    trainer.restore(ckpt)
    assert trainer.epoch == 1 and trainer.history.epochs == 1
    history = trainer.fit(train_data, epochs=2, validation=test_data)

    assert_same_weights(weights(model_a), weights(model_c))
    assert opt_c.lr == opt_a.lr and opt_c.steps == opt_a.steps
    for key, value in opt_a.state_dict()["state"].items():
        assert np.array_equal(value, opt_c.state[key]), key
    for key in ("epoch", "loss", "accuracy", "lr", "val_loss", "val_accuracy", "skipped"):
        assert history[key] == hist_a[key], key
    assert load_checkpoint(path).epoch == 2


def test_resume_history_matches_straight_run(train_data, tmp_path):
    model_a = LeNet5(seed=0)
    hist_a = fit(model_a, train_data, epochs=2, progress=False,
                 optimizer=SGD(model_a.parameters(), lr=0.01, momentum=0.9))
    path = tmp_path / "r.ckpt"
    model_b = LeNet5(seed=0)
    fit(model_b, train_data, epochs=1, progress=False, checkpoint=path,
        optimizer=SGD(model_b.parameters(), lr=0.01, momentum=0.9))
    model_c = LeNet5(seed=0)
    trainer = Trainer(model_c, SGD(model_c.parameters(), lr=0.01, momentum=0.9), progress=False,
                      checkpoint=path)
    trainer.restore(load_checkpoint(path))
    hist_c = trainer.fit(train_data, epochs=2)
    for key in ("epoch", "loss", "accuracy", "lr", "skipped"):
        assert hist_c[key] == hist_a[key], key
    assert_same_weights(weights(model_a), weights(model_c))


def test_fit_continues_until_the_total_epoch_count(train_data, tmp_path):
    model = LeNet5()
    trainer = Trainer(model, progress=False)
    trainer.fit(train_data, epochs=1)
    trainer.fit(train_data, epochs=1)  # already there: nothing to do
    assert trainer.epoch == 1 and trainer.history.epochs == 1
    trainer.fit(train_data, epochs=2)
    assert trainer.epoch == 2 and trainer.history["epoch"] == [1, 2]


# ---------------------------------------------------------------------------------- divergence

def test_divergence_raises_naming_epoch_and_checkpoint_which_still_loads(train_data, tmp_path):
    path = tmp_path / "good.ckpt"
    model = LeNet5()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.01, momentum=0.9), progress=False,
                      checkpoint=path)
    trainer.fit(train_data, epochs=1)
    good = weights(model)
    trainer.optimizer.lr = 1e4
    with pytest.raises(TrainingDiverged) as info:
        trainer.fit(train_data, epochs=3)
    msg = str(info.value)
    assert "epoch 2" in msg and str(path) in msg and "(epoch 1)" in msg, msg
    assert "nan" in msg or "inf" in msg
    assert isinstance(info.value, FloatingPointError)
    assert trainer.epoch == 1
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 1
    assert_same_weights(good, ckpt.params)
    assert all(np.isfinite(p.data).all() for p in LeNet5.load(path).parameters())


def test_divergence_without_checkpoint_suggests_a_remedy(train_data):
    model = LeNet5()
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch \d+.*lower the learning rate.*skip"):
        fit(model, train_data, epochs=1, optimizer=SGD(model.parameters(), lr=1e4, momentum=0.9),
            progress=False)


class NanOnBatch:
    """Cross-entropy, except that batches listed in `bad` (counted over all calls) give a NaN loss.

    A custom loss is not one the core can fuse, so these tests run the layer-by-layer path.
    """

    name = "cross_entropy"

    def __init__(self, bad):
        self.bad, self.calls, self.ce = set(bad), 0, CrossEntropyLoss()

    def __call__(self, logits, labels):
        loss, grad = self.ce(logits, labels)
        call, self.calls = self.calls, self.calls + 1
        return (math.nan, grad * np.nan) if call in self.bad else (loss, grad)


def test_on_nonfinite_raise_names_the_batch(train_data):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, batch 2"):
        fit(LeNet5(), train_data, epochs=1, batch_size=100, loss=NanOnBatch({2}), progress=False)


def test_on_nonfinite_skip_drops_only_the_bad_steps(train_data):
    model = LeNet5()
    # 10 batches per epoch; calls 2 and 5 in epoch 1 and call 13 (batch 3) in epoch 2 are bad.
    history = fit(model, train_data, epochs=2, batch_size=100, loss=NanOnBatch({2, 5, 13}),
                  on_nonfinite="skip", progress=False)
    assert history["skipped"] == [2, 1]
    assert all(math.isfinite(v) for v in history["loss"])
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    assert history["loss"][1] < history["loss"][0]


def test_on_nonfinite_skip_survives_a_huge_learning_rate(train_data):
    model = LeNet5()
    history = fit(model, train_data, epochs=2, on_nonfinite="skip", progress=False,
                  optimizer=SGD(model.parameters(), lr=1e4, momentum=0.9))
    assert history.epochs == 2
    assert sum(history["skipped"]) > 0


def test_an_epoch_whose_every_step_was_skipped_does_not_report_zero_loss(train_data):
    """Skipping all 16 batches of epoch 2 trained nothing; a loss of 0.0 would read as perfect."""
    model = LeNet5()
    history = fit(model, train_data, epochs=2, on_nonfinite="skip", progress=False,
                  optimizer=SGD(model.parameters(), lr=1e4, momentum=0.9))
    batches = math.ceil(N_TRAIN / 64)
    assert history["skipped"][1] == batches  # the precondition of this test
    assert history["loss"][1] != 0.0, history.records[1]


# ----------------------------------------------------------------------------- evaluate/predict

def test_evaluate_confusion_matrix_semantics(train_data, test_data):
    model = LeNet5()
    fit(model, train_data, epochs=1, progress=False)
    images, labels = test_data
    result = evaluate(model, test_data, batch_size=128)
    conf = result["confusion"]
    assert conf.shape == (10, 10) and conf.dtype.kind == "i"
    assert conf.sum() == len(labels)
    pred, probs = predict(model, images)
    # Rows are the true label, columns the prediction.
    np.testing.assert_array_equal(conf.sum(axis=1), np.bincount(labels, minlength=10))
    np.testing.assert_array_equal(conf.sum(axis=0), np.bincount(pred, minlength=10))
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (labels, pred), 1)
    np.testing.assert_array_equal(conf, expected)
    assert result["accuracy"] == pytest.approx(np.mean(pred == labels), abs=0)
    assert result["accuracy"] == pytest.approx(np.trace(conf) / len(labels))
    # The loss is the mean cross-entropy, as torch computes it from the same logits.
    model.eval()
    logits = model.forward(pad_and_normalize(images))
    model.train()
    want = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert result["loss"] == pytest.approx(want, rel=1e-5)


def test_evaluate_does_not_depend_on_batch_size_nor_change_mode(train_data, test_data):
    model = LeNet5()
    before = weights(model)
    a = evaluate(model, test_data, batch_size=1000)
    b = evaluate(model, test_data, batch_size=7)
    assert model.training is True
    assert_same_weights(before, weights(model))
    np.testing.assert_array_equal(a["confusion"], b["confusion"])
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_predict_one_image_and_many(train_data, test_data):
    model = LeNet5()
    fit(model, train_data, epochs=1, progress=False)
    images = test_data[0][:20]
    labels, probs = predict(model, images)
    assert labels.shape == (20,) and labels.dtype == np.int64
    assert probs.shape == (20, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    # One return type: a single (28, 28) digit is a batch of one.
    one_label, one_p = predict(model, images[3])
    assert one_label.shape == (1,) and one_label.dtype == np.int64 and one_label[0] == labels[3]
    assert one_p.shape == (1, 10) and one_p.dtype == np.float32
    np.testing.assert_allclose(one_p[0], probs[3], rtol=1e-6, atol=1e-7)
    # Batch size is an implementation detail.
    np.testing.assert_allclose(predict(model, images, batch_size=3)[1], probs, rtol=1e-6, atol=1e-7)
    empty_labels, empty_probs = predict(model, images[:0])
    assert empty_labels.shape == (0,) and empty_probs.shape == (0, 10)


# --------------------------------------------------------------------------------- bad inputs

def test_fit_rejects_bad_inputs_with_shapes_in_the_message(train_data):
    images, labels = train_data
    model = LeNet5()
    with pytest.raises(ValueError, match=r"\(N, 28, 28\), got \(10, 32, 32\)"):
        fit(model, (np.zeros((10, 32, 32), np.uint8), labels[:10]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\), got \(9,\)"):
        fit(model, (images[:10], labels[:9]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"got \(28, 28\)"):
        fit(model, (images[0], labels[:1]), epochs=1, progress=False)
    with pytest.raises(TypeError, match="tuple"):
        fit(model, [images, labels], epochs=1, progress=False)
    with pytest.raises(TypeError, match="tuple"):
        fit(model, images, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"float images must have shape \(N, C, H, W\), got \(10, 28, 28\).*must be uint8"):
        fit(model, (images[:10].astype(np.float32), labels[:10]), epochs=1, progress=False)
    with pytest.raises(TypeError, match="must be uint8 digits .* or float .* got int32"):
        fit(model, (images[:10].astype(np.int32), labels[:10]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"features coming in"):  # LeNet5 needs 1x32x32
        fit(model, (np.zeros((4, 1, 28, 28), np.float32), labels[:4]), epochs=1, progress=False)
    with pytest.raises(TypeError, match="one-shot iterator"):
        fit(model, iter([(images[:2], labels[:2])]), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"batch 0 must be an \(x, y\) tuple"):
        fit(model, [images[:2]], epochs=1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit(model, (images[:0], labels[:0]), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"validation: uint8 images must have shape \(N, 28, 28\), got \(5, 28\)"):
        fit(model, (images[:10], labels[:10]), epochs=1, validation=(images[:5, 0], labels[:5]),
            progress=False)


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=-1), "epochs must be an int >= 0, got -1"),
    (dict(epochs=1.5), "epochs must be an int >= 0, got 1.5"),
    (dict(epochs=1, batch_size=0), "batch_size must be an int >= 1, got 0"),
    (dict(epochs=1, on_nonfinite="ignore"), "on_nonfinite must be 'raise' or 'skip'"),
    (dict(epochs=1, loss="hinge"), r"loss must be one of \['cross_entropy', 'mse', 'rbf_map'\]"),
])
def test_fit_rejects_bad_arguments(train_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(LeNet5(), train_data, progress=False, **kwargs)


def test_evaluate_and_predict_reject_bad_shapes(test_data):
    model = LeNet5()
    images, labels = test_data
    with pytest.raises(ValueError, match=r"\(N, 28, 28\), got \(5, 784\)"):
        evaluate(model, (images[:5].reshape(5, -1), labels[:5]))
    with pytest.raises(ValueError, match=r"labels must have shape \(5,\), got \(4,\)"):
        evaluate(model, (images[:5], labels[:4]))
    with pytest.raises(TypeError):
        evaluate(model, images)
    with pytest.raises(ValueError, match=r"got shape \(3, 28\)"):
        predict(model, images[0, :3])
    with pytest.raises(ValueError, match=r"got shape \(2, 28, 27\)"):
        predict(model, images[:2, :, :27])
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 28, 28\)"):
        predict(model, images[:1, None])
    with pytest.raises(ValueError, match=r"float images must have shape \(N, C, H, W\), got \(2, 28, 28\)"):
        predict(model, images[:2].astype(np.float64))
    with pytest.raises(ValueError, match=r"labels must lie in 0..9"):
        evaluate(model, (images[:5], np.full(5, 10)))


def test_history_is_a_mapping_of_metrics():
    history = History([{"epoch": 1, "loss": 0.5, "images_per_s": 10.0},
                       {"epoch": 2, "loss": 0.25, "images_per_s": 12.0, "val_loss": 0.3}])
    # `in` used to fall back to iterating __getitem__(0), (1), ... forever.
    assert "images_per_s" in history and "val_accuracy" not in history
    assert list(history.keys()) == ["epoch", "loss", "images_per_s", "val_loss"]
    assert len(history) == 4 and history.epochs == 2
    assert dict(history.items())["loss"] == [0.5, 0.25]
    assert history["val_loss"] == [None, 0.3]          # the epoch that lacks it
    assert history.get("nope") is None and history.history == history.to_dict()
    for key in ("nope", 0, -1):
        with pytest.raises(KeyError, match="has no metric .* it has \\['epoch', 'loss'"):
            history[key]
    assert list(History()) == [] and "loss" not in History()


# ------------------------------------------------------------------- any input shape, any batches

def small_rgb_task(n=384, seed=0):
    """3 classes of float (N, 3, 16, 16) noise; class c brightens channel c (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0.0, 1.0, (n, 3, 16, 16)).astype(np.float32)
    x[np.arange(n), y] += 0.3
    return x, y.astype(np.int64)


def small_rgb_net(seed=0):
    rng = np.random.default_rng(seed)
    return pylenet.Sequential(
        ("conv", pylenet.Conv2d(3, 4, 3, padding=1, rng=rng)),   # 3@16x16 -> 4@16x16
        ("relu", pylenet.ReLU()),
        ("pool", pylenet.MaxPool2d(2)),                          # 4@16x16 -> 4@8x8
        ("flatten", pylenet.Flatten()),
        ("fc", pylenet.Linear(4 * 8 * 8, 3, rng=rng)))


@pytest.mark.parametrize("fused", [True, False])
def test_a_custom_sequential_trains_on_float_inputs_of_another_size(fused):
    x, y = small_rgb_task()
    xt, yt = small_rgb_task(seed=1)
    model = small_rgb_net()
    before = evaluate(model, (xt, yt))["accuracy"]
    history = fit(model, (x, y), epochs=4, batch_size=32, validation=(xt, yt), progress=False,
                  fused=fused, optimizer=pylenet.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert history["loss"][-1] < 0.7 * history["loss"][0], history["loss"]
    assert history["val_accuracy"][-1] > max(0.8, before + 0.3), (before, history["val_accuracy"])
    labels, probs = predict(model, xt)
    assert labels.shape == (len(xt),) and probs.shape == (len(xt), 3)
    assert np.mean(labels == yt) == history["val_accuracy"][-1]
    result = evaluate(model, (xt, yt))
    assert result["confusion"].shape == (3, 3) and result["confusion"].sum() == len(yt)


def test_fused_and_layer_paths_agree_on_a_custom_net():
    x, y = small_rgb_task(n=64)
    runs = []
    for fused in (True, False):
        model = small_rgb_net()
        fit(model, (x, y), epochs=1, batch_size=16, progress=False, fused=fused)
        runs.append(weights(model))
    for name in runs[0]:
        np.testing.assert_allclose(runs[0][name], runs[1][name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_fit_evaluate_predict_take_a_dataloader_or_a_list_of_batches(train_data, test_data):
    images, labels = train_data
    # The same batches three ways: a DataLoader, a list of its batches, the arrays themselves.
    loader = pylenet.DataLoader(images, labels, 64, shuffle=False)
    batches = list(loader)
    results = []
    for data in (loader, batches, (images, labels)):
        model = LeNet5()
        fit(model, data, epochs=1, progress=False, batch_size=64, seed=0,
            optimizer=pylenet.optim.SGD(model.parameters(), lr=0.01))
        results.append(weights(model))
    assert_same_weights(results[0], results[1])  # DataLoader == the list of its batches
    model = LeNet5()
    fit(model, batches, epochs=2, progress=False)
    test_loader = pylenet.DataLoader(*test_data, 100, shuffle=False)
    by_loader = evaluate(model, test_loader)
    by_arrays = evaluate(model, test_data)
    np.testing.assert_array_equal(by_loader["confusion"], by_arrays["confusion"])
    # predict takes float batches, (x, y) batches or a generator; one answer for all.
    want_labels, want_probs = predict(model, test_data[0][:50])
    x = pad_and_normalize(test_data[0][:50])
    for given in (x, [x[:20], x[20:]], ((x[i:i + 7], None) for i in range(0, 50, 7))):
        got_labels, got_probs = predict(model, given)
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_allclose(got_probs, want_probs, rtol=1e-5, atol=1e-6)
