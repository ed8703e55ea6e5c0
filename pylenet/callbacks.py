"""Training callbacks: the hooks fit() and Trainer call around training, and the protocol.

A callback is any object with some of these methods (subclass Callback to get no-op defaults):

- on_train_begin(trainer): before the first epoch of a fit() call; `trainer.model`,
  `trainer.optimizer`, `trainer.epoch` (epochs already finished), `trainer.history` and
  `trainer.has_validation` (whether the records will have val_loss and val_accuracy) are there.
- on_epoch_end(epoch, logs) -> bool | None: after every epoch, once its record is in the
  history (and the trainer's checkpoint, if any, is written). `epoch` is the 1-based epoch just
  finished and `logs` a copy of its record (loss, accuracy, lr, time, images_per_s, skipped and,
  with validation data, val_loss and val_accuracy). Returning True, or setting
  `trainer.stop_training = True`, stops training after this epoch; every callback still sees it.
- on_train_end(trainer): after the last epoch of a fit() call, also when a callback stopped it
  (not when an exception ends training).

Before on_train_begin, the trainer sets `callback.trainer` to itself.

Built-in callbacks: EarlyStopping, ModelCheckpoint and CSVLogger. Their `monitor` is a key of
the epoch record (EPOCH_METRICS); mode "auto" minimises it unless it measures accuracy or speed
("acc" in the name, or images_per_s). A val_* monitor in a fit without validation data is a
ValueError before the first epoch, as is any monitor that is not a key of the record (unlike
Keras, which warns and goes on without stopping or saving), and so is every bad argument.
"""
from __future__ import annotations

import csv
import io
import math
import os
from numbers import Integral, Real
from pathlib import Path

from pylenet.checkpoint import atomic_write

# The keys of an epoch record (Trainer.fit's `logs`), in their order; val_* only with validation.
EPOCH_METRICS = ("epoch", "lr", "loss", "accuracy", "time", "images_per_s", "skipped",
                 "val_loss", "val_accuracy")
MODES = ("auto", "min", "max")


class Callback:
    """Base class of training callbacks: every hook does nothing; override the ones you need."""

    trainer = None  # set by the Trainer before on_train_begin

    def on_train_begin(self, trainer) -> None:
        """Called before the first epoch of a fit() call."""

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        """Called after each epoch with its 1-based number and record; True asks to stop."""
        return None

    def on_train_end(self, trainer) -> None:
        """Called after the last epoch of a fit() call (also after a requested stop)."""


_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


def check_callbacks(callbacks) -> list:
    """callbacks (None, one callback or an iterable of them) as a list; TypeError naming the
    first item that has none of the hooks."""
    if callbacks is None:
        return []
    if any(hasattr(callbacks, h) for h in _HOOKS):
        callbacks = [callbacks]
    if isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of callbacks (objects with on_epoch_end and/or "
                        f"the other hooks of pylenet.callbacks.Callback), got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, h, None)) for h in _HOOKS):
            raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) has none of the hooks "
                            f"{', '.join(_HOOKS)}; subclass pylenet.callbacks.Callback")
    return callbacks


def call_hook(callbacks: list, hook: str, *args):
    """Calls `hook` on every callback that has it, in order; returns the list of their results."""
    results = []
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if callable(method):
            results.append(method(*args))
    return results


# ----------------------------------------------------------------------------- built-ins

def _check_monitor(owner: str, monitor, mode) -> str:
    """The monitor's direction, "min" or "max"; ValueError naming a bad monitor or mode."""
    if not isinstance(monitor, str) or monitor not in EPOCH_METRICS:
        raise ValueError(f"{owner}: monitor must be a key of the epoch record, one of "
                         f"{', '.join(EPOCH_METRICS)}; got {monitor!r}")
    if mode not in MODES:
        raise ValueError(f"{owner}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor or monitor == "images_per_s" else "min"


def _check_validation(owner: str, monitor: str, trainer) -> None:
    """A val_* monitor needs validation data: ValueError before the first epoch otherwise."""
    if monitor.startswith("val_") and getattr(trainer, "has_validation", None) is False:
        raise ValueError(f"{owner}: monitor {monitor!r} needs validation data, and this fit has "
                         f"none; pass validation=(images, labels) or monitor a training metric "
                         f"such as {monitor[len('val_'):]!r}")


def _monitored(owner: str, monitor: str, logs: dict):
    """logs[monitor] as a float (NaN for an epoch that has no value, such as a loss of None)."""
    if monitor not in logs:
        raise ValueError(f"{owner}: monitor {monitor!r} is not in the epoch record, which has "
                         f"{', '.join(logs)}")
    value = logs[monitor]
    return float("nan") if value is None else float(value)


def _better(value: float, best, mode: str, min_delta: float) -> bool:
    """Whether value improves on best by more than min_delta (NaN never does; anything beats None)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _check_flag(owner: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def _check_path(owner: str, path) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{owner}: path must be a file path (str or os.PathLike), got {path!r}")
    if Path(path).is_dir():
        raise ValueError(f"{owner}: path {str(path)!r} is a folder; give a file path")
    return Path(path)


def _need_trainer(owner: str, trainer):
    if trainer is None:
        raise RuntimeError(f"{owner} needs the trainer: pass it in fit(..., callbacks=[...]) or "
                           f"Trainer(..., callbacks=[...])")
    return trainer


class EarlyStopping(Callback):
    """Stops training once `monitor` has not improved for `patience` epochs in a row.

    An epoch improves when its value beats the best so far by more than min_delta (lower for
    mode "min", higher for "max"; "auto" picks from the name, see the module's note). As in
    Keras, patience=0 and patience=1 both stop at the first epoch that does not improve; the
    first epoch of a fit always does. restore_best: when training ends (stopped or not), the
    best epoch's weights are copied back into the model's Parameters, in place; the optimizer's
    state is left as it is. After training, best_epoch and best hold the best epoch and value,
    stopped_epoch the epoch after which it stopped (None if it did not).
    """

    def __init__(self, monitor: str = "val_accuracy", *, patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = False):
        self.mode = _check_monitor("EarlyStopping", monitor, mode)
        self.monitor = monitor
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, Real) or not 0 <= min_delta < math.inf:
            raise ValueError(f"EarlyStopping: min_delta must be a finite number >= 0, got {min_delta!r}")
        self.patience, self.min_delta = patience, float(min_delta)
        self.restore_best = _check_flag("EarlyStopping", "restore_best", restore_best)
        self._reset()

    def _reset(self) -> None:
        self.best, self.best_epoch, self.stopped_epoch, self.wait = None, None, None, 0
        self._best_weights = None

    def on_train_begin(self, trainer) -> None:
        """Starts counting afresh and checks that the monitor will be in the epoch records."""
        _check_validation("EarlyStopping", self.monitor, trainer)
        self._reset()

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        """Remembers an improvement (and its weights for restore_best); True once patience ran out."""
        value = _monitored("EarlyStopping", self.monitor, logs)
        if _better(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                model = _need_trainer("EarlyStopping", self.trainer).model
                self._best_weights = {name: p.data.copy() for name, p in model.named_parameters()}
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, trainer) -> None:
        """With restore_best, puts the best epoch's weights back into the model, in place."""
        if self.restore_best and self._best_weights is not None:
            for name, p in trainer.model.named_parameters():
                p.data[...] = self._best_weights[name]


class ModelCheckpoint(Callback):
    """Saves the trainer's whole state (model, optimizer, scheduler, epoch and history: a file
    `pylenet train --resume` and Trainer.restore take) after every epoch, or with
    save_best_only after the epochs whose `monitor` beats every epoch before (of this and,
    for a resumed trainer, earlier fits). Written atomically through Trainer.save, so the file
    is always a whole checkpoint. path may hold format fields filled from the epoch record, as
    in Keras: "ckpt/epoch{epoch:03d}-{val_accuracy:.4f}.ckpt". After training, best_epoch and
    best hold the best epoch and value seen, last_path the last file written.
    """

    def __init__(self, path, *, monitor: str = "val_accuracy", save_best_only: bool = False,
                 mode: str = "auto"):
        self.path = _check_path("ModelCheckpoint", path)
        self.mode = _check_monitor("ModelCheckpoint", monitor, mode)
        self.monitor = monitor
        self.save_best_only = _check_flag("ModelCheckpoint", "save_best_only", save_best_only)
        self.best, self.best_epoch, self.last_path = None, None, None

    def on_train_begin(self, trainer) -> None:
        """Takes the best so far from the trainer's history (a resumed run must beat it)."""
        self.best, self.best_epoch = None, None
        if not self.save_best_only:
            return
        _check_validation("ModelCheckpoint", self.monitor, trainer)
        for record in getattr(getattr(trainer, "history", None), "records", []):
            if self.monitor in record:
                value = _monitored("ModelCheckpoint", self.monitor, record)
                if _better(value, self.best, self.mode, 0.0):
                    self.best, self.best_epoch = value, record.get("epoch")

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Writes the checkpoint unless save_best_only and the epoch is not the best."""
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            if not _better(value, self.best, self.mode, 0.0):
                return
            self.best, self.best_epoch = value, epoch
        trainer = _need_trainer("ModelCheckpoint", self.trainer)
        self.last_path = trainer.save(self._path_for(epoch, logs))

    def _path_for(self, epoch: int, logs: dict) -> Path:
        text = str(self.path)
        if "{" not in text:
            return self.path
        try:
            return Path(text.format(**{**logs, "epoch": epoch}))
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint: path {text!r} cannot be filled from the epoch "
                             f"record (keys {', '.join(logs)}): {e!r}") from None


class CSVLogger(Callback):
    """One CSV row per finished epoch (its record: epoch, lr, loss, ..., val_accuracy), appended
    and flushed to disk as the epoch ends, so a run that is killed keeps the rows of the epochs
    it finished. The header row comes first; values are written in full precision, an empty
    cell for none (a loss of an epoch whose steps were all skipped).

    append=False: the file is rewritten when training begins with the rows of the epochs the
    trainer has already finished (none for a fresh run; those of the checkpoint for a resumed
    one), so it always matches the training it logs. append=True: rows go after those already
    in the file (whose header must name every column this run writes).
    """

    def __init__(self, path, *, append: bool = False):
        self.path = _check_path("CSVLogger", path)
        self.append = _check_flag("CSVLogger", "append", append)
        self.columns = None

    def on_train_begin(self, trainer) -> None:
        """Writes the header and the rows of the epochs already finished (append=False), or
        reads the existing header (append=True)."""
        self.columns = None
        if self.append and self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f), None)
            return
        records = list(getattr(getattr(trainer, "history", None), "records", []))
        text = io.StringIO()
        if records:
            self.columns = list(dict.fromkeys(k for r in records for k in r))
            writer = csv.writer(text)
            writer.writerow(self.columns)
            writer.writerows(self._row(r) for r in records)
        atomic_write(self.path, lambda f: f.write(text.getvalue().encode()),
                     lambda why: OSError(f"CSVLogger: cannot write {self.path}: {why}"))

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        """Appends the epoch's row (after the header, for the first) and flushes it to disk."""
        logs = {**logs, "epoch": epoch}
        text = io.StringIO()
        writer = csv.writer(text)
        if self.columns is None:
            self.columns = list(logs)
            writer.writerow(self.columns)
        extra = [k for k in logs if k not in self.columns]
        if extra:
            raise ValueError(f"CSVLogger: {self.path} has the columns {', '.join(self.columns)}, "
                             f"which lack {', '.join(extra)}; log to another file or append=False")
        writer.writerow(self._row(logs))
        with open(self.path, "a", newline="") as f:
            f.write(text.getvalue())
            f.flush()
            os.fsync(f.fileno())

    def _row(self, record: dict) -> list:
        return [_cell(record.get(k)) for k in self.columns]


def _cell(value) -> str:
    """A CSV cell: empty for None, ints as ints, floats (numpy's too) in full precision."""
    if value is None:
        return ""
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return repr(float(value))
    return str(value)
