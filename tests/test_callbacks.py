"""Training callbacks: EarlyStopping, ModelCheckpoint and CSVLogger, on scripted records (exact
epoch semantics) and in real fits on small MNIST slices (stopping, restoring, saving, logging)."""
import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest

import pylenet
from pylenet import CSVLogger, Callback, EarlyStopping, LeNet5, ModelCheckpoint, Trainer, fit
from pylenet.callbacks import EPOCH_METRICS
from pylenet.checkpoint import load_checkpoint
from pylenet.optim import SGD

pytestmark = pytest.mark.usefixtures("restore_threads")


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    train = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    test = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    return (train[0][:400], train[1][:400]), (test[0][:300], test[1][:300])


@pytest.fixture(scope="module")
def mislabeled(mnist):
    """Validation data whose every label is wrong ((y + 1) % 10): the better the model learns
    the digits, the higher its loss on it, so val_loss is best early and then gets worse."""
    x, y = mnist[1]
    return x, (y + 1) % 10


class Snapshots(Callback):
    """Keeps each epoch's weights (after the epoch) and the records it saw."""

    def __init__(self):
        self.weights, self.records = {}, []

    def on_epoch_end(self, epoch, logs):
        self.weights[epoch] = {n: p.data.copy() for n, p in self.trainer.model.named_parameters()}
        self.records.append(logs)


def current_weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters()}


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def stop_epoch(values, mode, patience, min_delta=0.0):
    """The reference: (the epoch after which training stops or None, the best epoch)."""
    best, best_epoch, wait = None, None, 0
    for epoch, v in enumerate(values, 1):
        if best is None or (v < best - min_delta if mode == "min" else v > best + min_delta):
            best, best_epoch, wait = v, epoch, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch, best_epoch
    return None, best_epoch


def scripted(callback, values, monitor="val_accuracy", trainer=None):
    """Runs callback's hooks as a trainer would on records holding `values` of `monitor`,
    until one asks to stop; the epochs that asked ([] or [the last one run])."""
    trainer = trainer or SimpleNamespace(model=LeNet5(seed=0), has_validation=True,
                                         history=pylenet.History())
    callback.trainer = trainer
    callback.on_train_begin(trainer)
    stops = []
    for epoch, value in enumerate(values, 1):
        if callback.on_epoch_end(epoch, {"epoch": epoch, monitor: value}):
            stops.append(epoch)
            break
    callback.on_train_end(trainer)
    return stops


# ------------------------------------------------------------------------- EarlyStopping

@pytest.mark.parametrize("values,patience,min_delta,stop", [
    ([0.5, 0.6, 0.6, 0.59, 0.7], 2, 0.0, 4),     # equal is no improvement
    ([0.5, 0.6, 0.6, 0.7, 0.69, 0.8], 2, 0.0, None),
    ([0.5, 0.4], 0, 0.0, 2),                      # patience 0: the first epoch without
    ([0.5, 0.4], 1, 0.0, 2),                      # improvement, like patience 1 (Keras)
    ([0.5, 0.54, 0.56, 0.6, 0.6], 2, 0.05, 5),    # 0.54 is within min_delta; 0.56 is not
    ([0.5, float("nan"), 0.4, 0.9], 3, 0.0, None),  # NaN never improves (None counts as NaN)
    ([0.5, None, 0.4], 2, 0.0, 3),
])
def test_early_stopping_stops_after_patience_epochs_without_improvement(values, patience, min_delta, stop):
    es = EarlyStopping("val_accuracy", patience=patience, min_delta=min_delta)
    stops = scripted(es, values)
    assert stops == ([] if stop is None else [stop])
    assert es.stopped_epoch == stop
    ref_stop, ref_best = stop_epoch([math.nan if v is None else v for v in values], "max",
                                    patience, min_delta)
    assert ref_stop == stop and es.best_epoch == ref_best and es.best == values[ref_best - 1]


def test_early_stopping_minimises_losses_and_honours_an_explicit_mode():
    assert scripted(EarlyStopping("val_loss", patience=1), [2.0, 1.0, 1.5], "val_loss") == [3]
    assert scripted(EarlyStopping("val_loss", patience=1), [2.0, 3.0], "val_loss") == [2]
    assert scripted(EarlyStopping("val_loss", patience=1, mode="max"), [2.0, 3.0], "val_loss") == []
    assert EarlyStopping("accuracy").mode == "max" and EarlyStopping("time").mode == "min"
    assert EarlyStopping("images_per_s").mode == "max" and EarlyStopping("loss").mode == "min"


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_weights(mnist, mislabeled):
    train = mnist[0]
    model = LeNet5(seed=0)
    snaps = Snapshots()
    es = EarlyStopping("val_loss", patience=2, restore_best=True)
    history = fit(model, train, epochs=8, validation=mislabeled, batch_size=32, threads=2,
                  progress=False, optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9),
                  callbacks=[snaps, es])
    losses = history["val_loss"]
    expected_stop, expected_best = stop_epoch(losses, "min", 2)
    assert expected_stop is not None and expected_stop < 8, losses  # the data makes it stop early
    assert history.epochs == expected_stop == es.stopped_epoch
    assert es.best_epoch == expected_best and es.best == losses[expected_best - 1]
    assert expected_best != history.epochs
    weights = current_weights(model)
    assert same_weights(weights, snaps.weights[expected_best])      # restored, in place
    assert not same_weights(weights, snaps.weights[history.epochs])
    # The restored weights are the ones used from then on (the fused net reads them afresh).
    assert pylenet.evaluate(model, mislabeled)["loss"] == pytest.approx(losses[expected_best - 1], rel=1e-6)


def test_early_stopping_without_restore_keeps_the_last_weights(mnist, mislabeled):
    model = LeNet5(seed=0)
    snaps = Snapshots()
    history = fit(model, mnist[0], epochs=8, validation=mislabeled, batch_size=32, threads=2,
                  progress=False, optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9),
                  callbacks=[snaps, EarlyStopping("val_loss", patience=2)])
    assert history.epochs < 8
    assert same_weights(current_weights(model), snaps.weights[history.epochs])


def test_a_val_monitor_without_validation_data_fails_before_the_first_epoch(mnist):
    model = LeNet5(seed=0)
    before = current_weights(model)
    for cb in (EarlyStopping(), ModelCheckpoint("unused.ckpt", save_best_only=True)):
        trainer = Trainer(model, progress=False, callbacks=[cb])
        with pytest.raises(ValueError, match="monitor 'val_accuracy' needs validation data"):
            trainer.fit(mnist[0], epochs=1)
        assert trainer.epoch == 0 and same_weights(current_weights(model), before)
    # A training metric needs none.
    history = fit(model, mnist[0], epochs=1, progress=False, callbacks=[EarlyStopping("loss")])
    assert history.epochs == 1


def test_a_monitor_missing_from_the_record_is_an_error_naming_it():
    es = EarlyStopping("val_accuracy")
    with pytest.raises(ValueError, match="'val_accuracy' is not in the epoch record, which has epoch, loss"):
        es.on_epoch_end(1, {"epoch": 1, "loss": 0.5})


@pytest.mark.parametrize("kwargs,error,message", [
    ({"monitor": "val_acc"}, ValueError, "monitor must be a key of the epoch record, one of epoch, lr"),
    ({"monitor": 3}, ValueError, "monitor must be a key of the epoch record, .*; got 3"),
    ({"mode": "up"}, ValueError, "mode must be one of auto, min, max, got 'up'"),
    ({"patience": -1}, ValueError, "patience must be an int >= 0, got -1"),
    ({"patience": 2.5}, ValueError, "patience must be an int >= 0, got 2.5"),
    ({"patience": True}, ValueError, "patience must be an int >= 0, got True"),
    ({"min_delta": -0.1}, ValueError, "min_delta must be a finite number >= 0, got -0.1"),
    ({"min_delta": math.inf}, ValueError, "min_delta must be a finite number >= 0, got inf"),
    ({"restore_best": "yes"}, ValueError, "restore_best must be True or False, got 'yes'"),
])
def test_early_stopping_bad_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match="EarlyStopping: " + message.replace("(", r"\(")):
        EarlyStopping(**kwargs)


# ------------------------------------------------------------------------- ModelCheckpoint

class SaveRecorder(SimpleNamespace):
    """A trainer stand-in whose save() records the paths asked for."""

    def save(self, path):
        self.saved.append(path)
        return path


def test_save_best_only_saves_exactly_the_improving_epochs(tmp_path):
    trainer = SaveRecorder(model=None, has_validation=True, history=pylenet.History(), saved=[])
    mc = ModelCheckpoint(tmp_path / "best-{epoch}.ckpt", save_best_only=True)
    scripted(mc, [0.3, 0.5, 0.4, 0.5, 0.6, None], trainer=trainer)
    assert [p.name for p in trainer.saved] == ["best-1.ckpt", "best-2.ckpt", "best-5.ckpt"]
    assert (mc.best, mc.best_epoch) == (0.6, 5)

    # Minimising a loss, and every epoch without save_best_only.
    trainer.saved = []
    scripted(ModelCheckpoint(tmp_path / "l.ckpt", monitor="val_loss", save_best_only=True),
             [2.0, 2.5, 1.0], "val_loss", trainer)
    assert len(trainer.saved) == 2
    trainer.saved = []
    scripted(ModelCheckpoint(tmp_path / "every.ckpt"), [0.3, 0.2, 0.1], trainer=trainer)
    assert trainer.saved == [tmp_path / "every.ckpt"] * 3


def test_save_best_only_must_beat_the_epochs_of_a_resumed_history(tmp_path):
    history = pylenet.History([{"epoch": 1, "val_accuracy": 0.4}, {"epoch": 2, "val_accuracy": 0.7}])
    trainer = SaveRecorder(model=None, has_validation=True, history=history, saved=[])
    mc = ModelCheckpoint(tmp_path / "best.ckpt", save_best_only=True)
    scripted(mc, [0.6, 0.75], trainer=trainer)
    assert trainer.saved == [tmp_path / "best.ckpt"] and mc.best_epoch == 2  # epoch 2 of this fit


def test_model_checkpoint_writes_a_resumable_checkpoint_of_the_best_epoch(mnist, mislabeled, tmp_path):
    model = LeNet5(seed=0)
    snaps = Snapshots()
    path = tmp_path / "best.ckpt"
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    history = fit(model, mnist[0], epochs=3, validation=mislabeled, batch_size=32, threads=2,
                  progress=False, optimizer=opt,
                  callbacks=[ModelCheckpoint(path, monitor="val_loss", save_best_only=True), snaps])
    best = 1 + int(np.argmin(history["val_loss"]))
    assert best != history.epochs, history["val_loss"]
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == best and len(ckpt.extra["history"]) == best
    assert same_weights(ckpt.params, snaps.weights[best])
    assert ckpt.optimizer is not None and ckpt.optimizer["state"]  # momentum buffers: resumable
    assert not list(tmp_path.glob(".*.tmp*")), "a temporary file was left behind"
    # It resumes: the trainer continues from the best epoch.
    again = LeNet5(seed=1)
    trainer = Trainer(again, SGD(again.parameters(), lr=0.05, momentum=0.9), progress=False)
    trainer.restore(ckpt, path)
    assert trainer.epoch == best and same_weights(current_weights(again), snaps.weights[best])


def test_model_checkpoint_path_fields_come_from_the_record(mnist, tmp_path):
    model = LeNet5(seed=0)
    fit(model, mnist[0], epochs=2, progress=False, validation=mnist[1],
        callbacks=[ModelCheckpoint(tmp_path / "e{epoch:02d}-{val_accuracy:.2f}.ckpt")])
    names = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert len(names) == 2 and names[0].startswith("e01-") and names[1].startswith("e02-")
    assert [load_checkpoint(tmp_path / n).epoch for n in names] == [1, 2]
    with pytest.raises(ValueError, match=r"path '.*\{nope\}.ckpt' cannot be filled from the epoch record"):
        fit(model, mnist[0], epochs=1, progress=False, callbacks=[ModelCheckpoint(tmp_path / "{nope}.ckpt")])


def test_trainer_checkpoint_is_written_before_the_other_callbacks_see_the_epoch(mnist, tmp_path):
    seen = []

    class Reader(Callback):
        def on_epoch_end(self, epoch, logs):
            seen.append(load_checkpoint(tmp_path / "run.ckpt").epoch)

    fit(LeNet5(seed=0), mnist[0], epochs=2, progress=False, checkpoint=tmp_path / "run.ckpt",
        callbacks=[Reader()])
    assert seen == [1, 2]


@pytest.mark.parametrize("make,error,message", [
    (lambda d: ModelCheckpoint(d), ValueError, "ModelCheckpoint: path '.*' is a folder"),
    (lambda d: ModelCheckpoint(None), ValueError, "ModelCheckpoint: path must be a file path"),
    (lambda d: ModelCheckpoint(d / "a", monitor="acc"), ValueError, "ModelCheckpoint: monitor must be"),
    (lambda d: ModelCheckpoint(d / "a", save_best_only=1), ValueError, "save_best_only must be True or False"),
    (lambda d: CSVLogger(d), ValueError, "CSVLogger: path '.*' is a folder"),
    (lambda d: CSVLogger(d / "a.csv", append="no"), ValueError, "CSVLogger: append must be True or False"),
])
def test_checkpoint_and_csv_bad_arguments_are_named(make, error, message, tmp_path):
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_callbacks_need_a_trainer_to_save():
    with pytest.raises(RuntimeError, match="ModelCheckpoint needs the trainer"):
        ModelCheckpoint("x.ckpt").on_epoch_end(1, {"epoch": 1})


# ------------------------------------------------------------------------------ CSVLogger

def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_writes_one_full_precision_row_per_epoch(mnist, tmp_path):
    path = tmp_path / "log.csv"
    history = fit(LeNet5(seed=0), mnist[0], epochs=3, progress=False, validation=mnist[1],
                  callbacks=[CSVLogger(path)])
    rows = read_csv(path)
    assert list(rows[0]) == list(EPOCH_METRICS)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for row, record in zip(rows, history.records):
        for key, value in record.items():
            assert (int(row[key]) if key in ("epoch", "skipped") else float(row[key])) == value, key


def test_csv_logger_rows_are_on_disk_when_each_epoch_ends(mnist, tmp_path):
    path = tmp_path / "log.csv"
    counts = []

    class Count(Callback):
        def on_epoch_end(self, epoch, logs):
            counts.append(len(read_csv(path)))

    fit(LeNet5(seed=0), mnist[0], epochs=3, progress=False, callbacks=[CSVLogger(path), Count()])
    assert counts == [1, 2, 3]


def test_csv_logger_of_a_resumed_trainer_holds_every_epoch_once(mnist, tmp_path):
    """The file is rewritten from the trainer's history at the start of a fit, so rows of epochs
    the checkpoint does not hold (written after it) do not repeat, and none are missing."""
    path, ckpt = tmp_path / "log.csv", tmp_path / "run.ckpt"
    fit(LeNet5(seed=0), mnist[0], epochs=2, progress=False, checkpoint=ckpt, callbacks=[CSVLogger(path)])
    with open(path, "a") as f:  # a row the checkpoint does not hold, as after a kill
        f.write("3,0.1,1,1,1,1,0\n")
    model = LeNet5(seed=0)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.02, momentum=0.9), progress=False,
                      callbacks=[CSVLogger(path)])
    trainer.restore(load_checkpoint(ckpt), ckpt)
    trainer.fit(mnist[0], epochs=4)
    rows = read_csv(path)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["loss"]) for r in rows] == trainer.history["loss"]


def test_csv_logger_append_keeps_the_rows_and_refuses_new_columns(mnist, tmp_path):
    path = tmp_path / "log.csv"
    fit(LeNet5(seed=0), mnist[0], epochs=1, progress=False, callbacks=[CSVLogger(path)])
    fit(LeNet5(seed=1), mnist[0], epochs=2, progress=False, callbacks=[CSVLogger(path, append=True)])
    assert [int(r["epoch"]) for r in read_csv(path)] == [1, 1, 2]
    with pytest.raises(ValueError, match="has the columns epoch, lr, .* which lack val_loss, val_accuracy"):
        fit(LeNet5(seed=0), mnist[0], epochs=1, progress=False, validation=mnist[1],
            callbacks=[CSVLogger(path, append=True)])
    fit(LeNet5(seed=0), mnist[0], epochs=1, progress=False, callbacks=[CSVLogger(path)])
    assert len(read_csv(path)) == 1  # append=False starts afresh


def test_an_epoch_without_a_loss_is_an_empty_cell(tmp_path):
    trainer = SimpleNamespace(history=pylenet.History())
    logger = CSVLogger(tmp_path / "log.csv")
    logger.on_train_begin(trainer)
    logger.on_epoch_end(1, {"epoch": 1, "loss": None, "accuracy": np.float32(0.5), "skipped": np.int64(3)})
    assert read_csv(tmp_path / "log.csv") == [{"epoch": "1", "loss": "", "accuracy": "0.5", "skipped": "3"}]


# -------------------------------------------------------------------------------- protocol

def test_epoch_metrics_are_the_keys_of_the_trainers_records(mnist):
    snaps = Snapshots()
    fit(LeNet5(seed=0), mnist[0], epochs=1, progress=False, validation=mnist[1], callbacks=[snaps])
    fit(LeNet5(seed=0), mnist[0], epochs=1, progress=False, callbacks=[snaps])
    assert list(snaps.records[0]) == list(EPOCH_METRICS)
    assert list(snaps.records[1]) == [k for k in EPOCH_METRICS if not k.startswith("val_")]


def test_callbacks_are_exported():
    assert pylenet.callbacks.EarlyStopping is EarlyStopping
    for name in ("Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger"):
        assert name in pylenet.__all__ and getattr(pylenet, name).__doc__
