"""Training and evaluation loops: fit, evaluate, predict, and the Trainer behind fit."""
from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pylenet import ops
from pylenet.checkpoint import CheckpointError
from pylenet.data import MNIST_MEAN, MNIST_STD, DataLoader, _normalize_lut, pad_and_normalize
from pylenet.engine import fused_for, loss_name
from pylenet.losses import get_loss
from pylenet.optim import SGD


PAD = 2  # MNIST's 28x28 digits zero-padded to LeNet-5's 32x32 input
_LUT = _normalize_lut(MNIST_MEAN, MNIST_STD)


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf; the message says where and which checkpoint is still good."""


class History(Mapping):
    """Per-epoch records as a read-only mapping: history["loss"] -> [value per epoch].

    Keys are the metrics seen (epoch, lr, loss, accuracy, time, images_per_s, skipped, val_*),
    in first-seen order; len(history) counts them and history.epochs counts the epochs. An
    unknown key raises KeyError naming the known ones; an epoch missing a metric gives None.
    """

    def __init__(self, records: list[dict] | None = None):
        self.records = list(records or [])

    def append(self, record: dict) -> None:
        """Adds one epoch's record."""
        self.records.append(record)

    def _keys(self) -> list:
        return list(dict.fromkeys(k for r in self.records for k in r))

    def __getitem__(self, key: str) -> list:
        if not isinstance(key, str) or not any(key in r for r in self.records):
            raise KeyError(f"History has no metric {key!r}; it has {self._keys()} "
                           f"(history.records[i] is epoch i+1's record)")
        return [r.get(key) for r in self.records]

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return len(self.records)

    @property
    def history(self) -> dict:
        """Keras's History.history: {metric: [value per epoch]}."""
        return self.to_dict()

    def to_dict(self) -> dict:
        """{metric: [value per epoch]} over every metric seen."""
        return {k: self[k] for k in self._keys()}

    def __repr__(self):
        return f"History({self.epochs} epochs: {', '.join(self._keys())})"


def _check_dataset(name: str, data) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(data, tuple) and len(data) == 2):
        raise TypeError(f"{name} must be an (images, labels) tuple as load_mnist returns, got "
                        f"{type(data).__name__}")
    images, labels = np.asarray(data[0]), np.asarray(data[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{name}: images must have shape (N, 28, 28), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{name}: labels must have shape ({images.shape[0]},), got {labels.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return images, labels


class Trainer:
    """Owns a model, its optimizer, scheduler and loss; runs epochs and checkpoints them.

    checkpoint: a path written atomically after every epoch (so an interrupted run keeps the
    last finished epoch). on_nonfinite: "raise" stops with TrainingDiverged, "skip" drops the
    step whose loss is not finite and counts it in the epoch record. fused: run each batch's
    forward, loss and backward in one core call when the model and loss allow it (the same
    arithmetic as the layer-by-layer path, without Python between the layers).
    """

    def __init__(self, model, optimizer=None, *, loss="cross_entropy", scheduler=None,
                 batch_size: int = 64, seed: int = 0, threads: int | None = None,
                 progress: bool = True, checkpoint=None, on_nonfinite: str = "raise",
                 fused: bool = True):
        self.model = model
        self.optimizer = optimizer if optimizer is not None else SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.loss_fn = get_loss(loss)
        self.scheduler = scheduler
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if threads is not None:
            ops.set_num_threads(threads)
        self.progress = progress
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        if on_nonfinite not in ("raise", "skip"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
        self.on_nonfinite = on_nonfinite
        self._loss_name = loss_name(self.loss_fn)
        self._fused = fused_for(model) if fused and self._loss_name else None
        self.epoch = 0          # epochs finished
        self.history = History()

    def save(self, path=None) -> Path:
        """Writes model, optimizer, scheduler, epoch and history to `path` (default: checkpoint)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("Trainer.save: no path given and no checkpoint path set")
        return self.model.save(path, optimizer=self.optimizer, scheduler=self.scheduler,
                               epoch=self.epoch,
                               extra={"history": self.history.records, "seed": self.seed,
                                      "batch_size": self.batch_size, "loss": getattr(self.loss_fn, "name", "custom")})

    def restore(self, ckpt, path="checkpoint") -> None:
        """Continues from a loaded Checkpoint of the same model: weights, optimizer, epoch, history.

        The checkpoint's architecture and every parameter shape must match the model's
        (CheckpointError otherwise); nothing is changed when they do not.
        """
        params = dict(self.model.named_parameters())
        if set(params) != set(ckpt.params):
            raise CheckpointError(f"{path} has parameters {sorted(ckpt.params)}, the model has "
                                  f"{sorted(params)}")
        for name, param in params.items():
            if ckpt.params[name].shape != param.data.shape:
                raise CheckpointError(f"{path}: {name} has shape {ckpt.params[name].shape}, the "
                                      f"model expects {param.data.shape}")
        # The seed only chose the initial weights, which the checkpoint replaces.
        config = {k: v for k, v in getattr(self.model, "config", {}).items() if k != "seed"}
        arch = {k: v for k, v in dict(ckpt.arch).items() if k != "seed"}
        if config and arch != config:
            raise CheckpointError(f"{path} holds a {arch} model, but this one is {config}")
        for name, param in params.items():
            param.data[...] = ckpt.params[name]
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        if self.scheduler is not None and "scheduler" in ckpt.extra:
            self.scheduler.load_state_dict(ckpt.extra["scheduler"])
        self.epoch = int(ckpt.epoch)
        self.history = History(ckpt.extra.get("history", []))

    def _nonfinite(self, loss: float, batch: int) -> None:
        where = f"loss became {loss} at epoch {self.epoch + 1}, batch {batch}"
        if self.checkpoint is not None and self.checkpoint.exists():
            raise TrainingDiverged(f"{where}; the last good checkpoint (epoch {self.epoch}) is "
                                   f"{self.checkpoint}. Lower the learning rate or resume from it.")
        raise TrainingDiverged(f"{where}; lower the learning rate (or pass on_nonfinite='skip').")

    def train_epoch(self, loader: DataLoader) -> dict:
        """One pass over `loader`: forward, loss, backward and an optimizer step per batch."""
        from tqdm.auto import tqdm

        model, opt = self.model.train(), self.optimizer
        total_loss, correct, seen, skipped = 0.0, 0, 0, 0
        start = time.perf_counter()
        bar = tqdm(loader, total=len(loader), disable=not self.progress, unit="batch",
                   desc=f"epoch {self.epoch + 1}", leave=True, dynamic_ncols=True)
        for i, (x, y) in enumerate(bar):
            if self._fused is not None:
                loss, out = self._fused.train_step(x, y, self._loss_name)
            else:
                out = model.forward(x)
                loss, dout = self.loss_fn(out, y)
            if not math.isfinite(loss):
                if self.on_nonfinite == "skip":
                    skipped += 1
                    continue
                bar.close()
                self._nonfinite(loss, i)
            if self._fused is None:
                model.backward(dout)
            opt.step()
            n = len(y)
            total_loss += loss * n
            correct += int((out.argmax(axis=1) == y).sum())
            seen += n
            if i % 20 == 0 or i == len(loader) - 1:
                elapsed = time.perf_counter() - start
                bar.set_postfix(loss=f"{total_loss / max(seen, 1):.4f}",
                                acc=f"{correct / max(seen, 1):.4f}",
                                img_s=f"{seen / max(elapsed, 1e-9):,.0f}", refresh=False)
        bar.close()
        elapsed = time.perf_counter() - start
        # An epoch whose every step was skipped has no loss or accuracy: None, not a perfect 0.
        return {"loss": total_loss / seen if seen else None,
                "accuracy": correct / seen if seen else None,
                "time": elapsed, "images_per_s": seen / max(elapsed, 1e-9), "skipped": skipped}

    def fit(self, train, *, epochs: int, validation=None) -> History:
        """Trains until `epochs` epochs are finished in total (a resumed run continues)."""
        images, labels = _check_dataset("train", train)
        if validation is not None:
            _check_dataset("validation", validation)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        loader = DataLoader(images, labels, self.batch_size, shuffle=True, seed=self.seed)
        while self.epoch < epochs:
            loader.set_epoch(self.epoch)
            record = {"epoch": self.epoch + 1, "lr": self.optimizer.lr}
            record.update(self.train_epoch(loader))
            if self.scheduler is not None:
                self.scheduler.step()
            if validation is not None:
                val = evaluate(self.model, validation, loss=self.loss_fn)
                record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
            self.epoch += 1
            self.history.append(record)
            if self.checkpoint is not None:
                self.save()
        return self.history


def fit(model, train, *, epochs: int, batch_size: int = 64, optimizer=None, validation=None,
        loss="cross_entropy", scheduler=None, seed: int = 0, threads: int | None = None,
        progress: bool = True, checkpoint=None, on_nonfinite: str = "raise",
        fused: bool = True) -> History:
    """Trains `model` on `train` = (uint8 images (N,28,28), labels) and returns its History.

    optimizer defaults to SGD(lr=0.01, momentum=0.9); validation is evaluated after each
    epoch; checkpoint, if given, is rewritten atomically after every epoch.
    """
    trainer = Trainer(model, optimizer, loss=loss, scheduler=scheduler, batch_size=batch_size,
                      seed=seed, threads=threads, progress=progress, checkpoint=checkpoint,
                      on_nonfinite=on_nonfinite, fused=fused)
    return trainer.fit(train, epochs=epochs, validation=validation)


def _forward_batches(model, x: np.ndarray, batch_size: int):
    fused = fused_for(model)
    if fused is not None:  # one core call per batch, nothing cached for backward
        for i in range(0, len(x), batch_size):
            yield i, fused.forward(pad_and_normalize(x[i:i + batch_size]))
        return
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            yield i, model.forward(pad_and_normalize(x[i:i + batch_size]))
    finally:
        model.train(was_training)


def evaluate(model, data, *, batch_size: int = 1000, loss="cross_entropy") -> dict:
    """{"accuracy", "loss", "confusion"} of `model` on data = (images, labels); rows = true label."""
    images, labels = _check_dataset("data", data)
    loss_fn = get_loss(loss)
    num_classes = model.config.get("num_classes", 10) if hasattr(model, "config") else 10
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    total = 0.0
    for i, out in _forward_batches(model, images, batch_size):
        y = labels[i:i + len(out)].astype(np.int64)
        batch_loss, _ = loss_fn(out, y)
        total += batch_loss * len(y)
        np.add.at(confusion, (y, out.argmax(axis=1)), 1)
    return {"accuracy": float(np.trace(confusion) / confusion.sum()), "loss": total / len(images),
            "confusion": confusion}


def predict(model, images, *, batch_size: int = 1000):
    """(labels, probabilities) for uint8 images (N,28,28), or (int, (C,) array) for one (28,28)."""
    x = images if isinstance(images, np.ndarray) else np.asarray(images)
    single = x.ndim == 2
    if single:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"predict: images must be (28, 28) or (N, 28, 28), got shape {np.shape(images)}")
    if x.dtype != np.uint8:
        raise TypeError(f"predict: images must be uint8 pixels (as load_mnist returns), got {x.dtype}")
    fused = fused_for(model)
    if fused is not None:  # padding, normalisation, network and softmax in one core call
        probs = fused.predict_proba(x, _LUT, PAD)
    elif len(x):
        probs = np.concatenate([ops.softmax(out) for _, out in _forward_batches(model, x, batch_size)])
    else:
        probs = np.zeros((0, model.config.get("num_classes", 10)), np.float32)
    labels = probs.argmax(axis=1)
    return (int(labels[0]), probs[0]) if single else (labels.astype(np.int64), probs)
