"""Training and evaluation loops: fit, evaluate, predict, and the Trainer behind fit."""
from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pylenet import ops
from pylenet.callbacks import ModelCheckpoint, call_hook, check_callbacks
from pylenet.checkpoint import CheckpointError
from pylenet.batches import (_LUT, _ArrayBatches, _as_input, _batches, _check_batch_size, _check_input,
                             digit_pad)
from pylenet.data import DataLoader, get_augment
from pylenet.device import resolve_device
from pylenet.engine import class_scores, cpu_net_for, loss_name, loss_smoothing, outputs_penalties
from pylenet.gpu import check_training, gpu_net_for, unsupported
from pylenet.losses import get_loss
from pylenet.recipe import DEFAULT_RECIPE, get_recipe, make_loss, make_optimizer, make_scheduler
from pylenet.serialize import architecture, save_model
from pylenet.tta import get_tta, tta_probabilities


# Steps per GpuNet.train_indices call while a progress bar is shown: each call ends in one
# host synchronisation, so a few dozen steps keep the bar moving at a negligible cost.
GPU_CHUNK_STEPS = 50
# Images an epoch must have trained on before its accuracy at chance earns a warning.
MIN_CHANCE_SAMPLES = 1000
# How a dataset goes onto the device (a name, so that a test can make the device refuse it).
_DATASET_UPLOAD = lambda net, *args: net.set_dataset(*args)


def default_loss(model) -> str:
    """The loss a model trains with unless told otherwise: the recipe's, or "rbf_map" for a
    model whose outputs are penalties (LeNet5(variant="lecun98"))."""
    return "rbf_map" if outputs_penalties(model) else DEFAULT_RECIPE["loss"]


class ChanceAccuracyWarning(UserWarning):
    """An epoch left the training accuracy at chance: the learning rate is likely wrong for the
    model (the message names it)."""


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


def _live_progress() -> bool:
    """Whether a redrawn progress bar can be shown: a terminal or a notebook, not a log or pipe."""
    from tqdm.autonotebook import tqdm  # the notebook bar inside Jupyter, else the plain one
    from tqdm.std import tqdm as plain_tqdm
    isatty = getattr(sys.stderr, "isatty", None)
    return tqdm is not plain_tqdm or bool(isatty and isatty())


def _log_epoch(record: dict, epochs: int) -> None:
    """One line per epoch on stderr, for logs, where every redraw of a bar would be kept."""
    def pct(key):
        v = record.get(key)
        return "n/a" if v is None else f"{100 * v:.2f}%"
    loss = "n/a" if record.get("loss") is None else f"{record['loss']:.4f}"
    val = f"  val acc {pct('val_accuracy')}" if "val_accuracy" in record else ""
    print(f"epoch {record['epoch']}/{epochs}  loss {loss}  acc {pct('accuracy')}{val}  "
          f"{record['images_per_s']:,.0f} img/s  {record['time']:.1f}s", file=sys.stderr, flush=True)


class _Tally:
    """One epoch's running loss, accuracy and speed; the record train_epoch returns."""

    def __init__(self):
        self.loss, self.correct, self.seen, self.skipped = 0.0, 0, 0, 0
        self.start = time.perf_counter()

    def add(self, loss: float, correct: int, n: int) -> None:
        """One applied step: its mean loss, correctly classified samples and batch size."""
        self.loss += loss * n
        self.correct += correct
        self.seen += n

    def show(self, bar) -> None:
        """The running figures on the progress bar (drawn at its next refresh)."""
        elapsed = time.perf_counter() - self.start
        bar.set_postfix(loss=f"{self.loss / max(self.seen, 1):.4f}",
                        acc=f"{self.correct / max(self.seen, 1):.4f}",
                        img_s=f"{self.seen / max(elapsed, 1e-9):,.0f}", refresh=False)

    def record(self) -> dict:
        """loss, accuracy, time, images_per_s and skipped of the epoch."""
        elapsed = time.perf_counter() - self.start
        seen = self.seen
        # An epoch whose every step was skipped has no loss or accuracy: None, not a perfect 0.
        return {"loss": self.loss / seen if seen else None,
                "accuracy": self.correct / seen if seen else None,
                "time": elapsed, "images_per_s": seen / max(elapsed, 1e-9), "skipped": self.skipped}


def _device_dataset(loader) -> tuple | None:
    """(source, images, labels, lut, pad, batch, count) when the GPU can gather the loader's
    batches itself: uint8 digits without distortions, from an (images, labels) tuple or a
    DataLoader; source has .epoch and .order(epoch), count the samples an epoch uses. Else None."""
    if isinstance(loader, _ArrayBatches):
        if loader.augment is None and loader.images.dtype == np.uint8:
            return (loader, loader.images, loader.labels, _LUT, loader.pad, loader.batch_size,
                    len(loader.images))
        return None
    source = getattr(loader, "batches", None)
    if type(source) is DataLoader and source.augment is None:
        count = len(source) * source.batch_size if source.drop_last else source.num_samples
        return source, source.images, source.labels, source._lut, source.pad, source.batch_size, count
    return None


class Trainer:
    """Owns a model, its optimizer, scheduler and loss; runs epochs and checkpoints them.

    checkpoint: a path written atomically after every epoch (so an interrupted run keeps the
    last finished epoch), by a ModelCheckpoint that runs before the other callbacks.
    on_nonfinite: "raise" stops with TrainingDiverged, "skip" drops the step whose loss is not
    finite and counts it in the epoch record. fused: run each batch's
    forward, loss and backward in one core call when the model and loss allow it (the same
    arithmetic as the layer-by-layer path, without Python between the layers). augment: None,
    a name in pylenet.data.AUGMENTS or an Augment, for (images, labels) training data. A
    scheduler with a step_batch method (WarmupCosineLR) also sets the rate before every batch.

    device: "cpu", "cuda", "auto" (the GPU when one can be used and can train this model with
    this optimizer and loss) or None (the model's .device, read at each fit). On "cuda"
    the optimizer must be pylenet's SGD or Adam and the loss a built-in one; an (images,
    labels) tuple of uint8 digits without augment (or such a DataLoader) is uploaded once and
    batched on the GPU in the CPU's shuffle order; other data is uploaded batch by batch. The
    weights and optimizer state come back to the host after every epoch, so checkpoints are
    the CPU's.

    callbacks: a list of pylenet.callbacks.Callback objects; Trainer.fit calls their
    on_train_begin(trainer), on_epoch_end(epoch, logs) after each epoch (True, or setting
    trainer.stop_training, stops after it) and on_train_end(trainer). During fit,
    trainer.has_validation says whether the epoch records will have val_loss and val_accuracy.

    tta: the test-time augmentation of the validation after each epoch (evaluate's tta).
    """

    def __init__(self, model, optimizer=None, *, loss=None, scheduler=None,
                 batch_size: int = DEFAULT_RECIPE["batch_size"], seed: int = DEFAULT_RECIPE["seed"],
                 threads: int | None = None,
                 progress: bool = True, checkpoint=None, on_nonfinite: str = "raise",
                 fused: bool = True, augment=None, device=None, callbacks=None, tta=None):
        self.model = model
        self.tta = get_tta(tta)  # the validation's test-time augmentation (evaluate's tta)
        self.callbacks = check_callbacks(callbacks)
        self.stop_training = False  # a callback may set it (or return True from on_epoch_end)
        self.has_validation = None  # fit sets it: whether the records will have val_* metrics
        resolve_device(device)  # a bad name or an unusable CUDA fails here, before any work
        self._device = device
        self.augment = get_augment(augment)
        self.optimizer = optimizer if optimizer is not None else make_optimizer(
            model.parameters(), recipe=get_recipe(None, model))
        self.loss_fn = get_loss(default_loss(model) if loss is None else loss)
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
        self._smoothing = loss_smoothing(self.loss_fn)
        self._fused = bool(fused)
        self._use_fused = self._fused and self._loss_name is not None
        self.epoch = 0          # epochs finished
        self.history = History()
        self._gpu = None        # the GpuNet holding this epoch's weights and optimizer state
        self._gpu_data = None   # (GpuNet, images, labels) of the dataset uploaded this fit
        self._steps = 0         # training batches run on the GPU since its last download
        if self.device == "cuda":
            check_training(model, self.optimizer, self.loss_fn, self._fused)

    @property
    def device(self) -> str:
        """"cpu" or "cuda": the device given, else the model's; "auto" is "cuda" when a GPU can
        be used and can train this model with this optimizer and loss, else "cpu"."""
        device = resolve_device(self._device, default=getattr(self.model, "device", "cpu"))
        if device == "cuda" and self._device == "auto":
            try:
                check_training(self.model, self.optimizer, self.loss_fn, self._fused)
            except (TypeError, ValueError):
                return "cpu"
        return device

    def save(self, path=None) -> Path:
        """Writes model, optimizer, scheduler, epoch and history to `path` (default: checkpoint)."""
        path = Path(path) if path is not None else self.checkpoint
        if path is None:
            raise ValueError("Trainer.save: no path given and no checkpoint path set")
        return save_model(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                          epoch=self.epoch,
                          extra={"history": self.history.records, "seed": self.seed,
                                      "batch_size": self.batch_size, "loss": getattr(self.loss_fn, "name", "custom")})

    def restore(self, ckpt, path="checkpoint") -> None:
        """Continues from a loaded Checkpoint of the same model: weights, optimizer, epoch, history.

        The checkpoint's architecture and every parameter (and buffer) shape must match the
        model's (CheckpointError otherwise); nothing is changed when they do not.
        """
        state = self.model.state_dict()
        if set(state) != set(ckpt.params):
            raise CheckpointError(f"{path} has parameters {sorted(ckpt.params)}, the model has "
                                  f"{sorted(state)}")
        for name, value in state.items():
            if ckpt.params[name].shape != value.shape:
                raise CheckpointError(f"{path}: {name} has shape {ckpt.params[name].shape}, the "
                                      f"model expects {value.shape}")
        # The seed only chose the initial weights, which the checkpoint replaces.
        config = {k: v for k, v in architecture(self.model).items() if k != "seed"}
        arch = {k: v for k, v in dict(ckpt.arch).items() if k != "seed"}
        if arch != config:
            raise CheckpointError(f"{path} holds a {arch} model, but this one is {config}")
        self.model.load_state_dict(ckpt.params)
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        if self.scheduler is not None and "scheduler" in ckpt.extra:
            self.scheduler.load_state_dict(ckpt.extra["scheduler"])
        self.epoch = int(ckpt.epoch)
        self.history = History(ckpt.extra.get("history", []))

    def _warn_if_chance(self, record: dict) -> None:
        """A ChanceAccuracyWarning, one line naming the learning rate, when an epoch of at least
        MIN_CHANCE_SAMPLES images left the training accuracy below 1.5 times chance
        (1/classes): a net that learns leaves that in its first epoch, a diverged or frozen
        one does not (fewer images say too little to warn on)."""
        classes = _num_classes(self.model)
        accuracy = record.get("accuracy")
        if (accuracy is None or classes < 2 or accuracy >= 1.5 / classes
                or getattr(self, "_seen", 0) < MIN_CHANCE_SAMPLES):
            return
        import warnings
        warnings.warn(f"epoch {record['epoch']} left the training accuracy at {100 * accuracy:.1f}%, "
                      f"chance for {classes} classes: the learning rate {record['lr']:g} is likely wrong "
                      f"for this model (its recipe: pylenet.recipe.model_recipe)",
                      ChanceAccuracyWarning, stacklevel=4)

    def _nonfinite(self, loss: float, batch: int) -> None:
        where = f"loss became {loss} at epoch {self.epoch + 1}, batch {batch}"
        if self.checkpoint is not None and self.checkpoint.exists():
            raise TrainingDiverged(f"{where}; the last good checkpoint (epoch {self.epoch}) is "
                                   f"{self.checkpoint}. Lower the learning rate or resume from it.")
        raise TrainingDiverged(f"{where}; lower the learning rate (or pass on_nonfinite='skip').")

    def _fused_net(self, x: np.ndarray):
        """The core's fused net for batches shaped like x, or None (other layers, or fused=False)."""
        return cpu_net_for(self.model, x.shape[1:]) if self._use_fused else None

    def _bar(self, loader=None, total=None):
        from tqdm.auto import tqdm
        return tqdm(loader, total=total, disable=not (self.progress and _live_progress()), unit="batch",
                    desc=f"epoch {self.epoch + 1}", leave=True, dynamic_ncols=True)

    def train_epoch(self, loader) -> dict:
        """One pass over `loader`: forward, loss, backward and an optimizer step per batch."""
        if self.device == "cuda":
            return self._train_epoch_gpu(loader)
        self.model.train()
        return self._batches_epoch(loader, self._host_step)

    def _host_step(self, x, y, first):
        """(loss, outputs, update): forward and loss of one batch on the CPU; update() does the
        rest (backward unless the fused step did it, then the optimizer step). first: the index
        in the epoch of the batch's first sample (Dropout draws from it)."""
        fused = self._fused_net(x)
        if fused is not None:
            loss, out = fused.train_step(x, y, self._loss_name, (self.seed, self.epoch, first), self._smoothing)
            return loss, out, self.optimizer.step
        if hasattr(self.model, "set_noise"):
            self.model.set_noise(self.seed, self.epoch, first)
        out = self.model.forward(x)
        loss, dout = self.loss_fn(out, y)

        def update():
            self.model.backward(dout)
            self.optimizer.step()
        return loss, out, update

    def _batches_epoch(self, loader, step) -> dict:
        """The epoch loop over the loader's batches: step(x, y, first) -> (loss, outputs, update),
        where first is the index in the epoch of the batch's first sample and update (None:
        already done) runs only for a finite loss; the rest (rates, skipping or stopping on a
        loss that is not finite, the bar, the record) is the same on every device."""
        tally = _Tally()
        total = len(loader)
        bar = self._bar(loader, total)
        per_batch = getattr(self.scheduler, "step_batch", None)
        first = 0
        for i, (x, y) in enumerate(bar):
            if per_batch is not None and total:  # the fractional epoch this step starts at
                per_batch(self.epoch + i / max(total or 1, 1))
            loss, out, update = step(x, y, first)
            first += len(y)
            self._steps += 1
            if not math.isfinite(loss):
                if self.on_nonfinite == "skip":
                    tally.skipped += 1
                    continue
                bar.close()
                self._nonfinite(loss, i)
            if update is not None:
                update()
            tally.add(loss, int((class_scores(self.model, out).argmax(axis=1) == y).sum()), len(y))
            if i % 20 == 0 or i == (total or 0) - 1:
                tally.show(bar)
        bar.close()
        self._seen = tally.seen
        return tally.record()

    # ------------------------------------------------------------------------- on the GPU

    def _gpu_net(self, input_shape: tuple):
        """The model's GpuNet for inputs of input_shape, holding the host's weights and
        optimizer state: given them on first use in an epoch (and when the network changes)."""
        gpu = gpu_net_for(self.model, input_shape)
        if gpu is not self._gpu:
            if self._gpu is not None:
                self._gpu_release()
            gpu.upload()
            gpu.upload_optimizer(self.optimizer)
            self._gpu = gpu
        return gpu

    def _gpu_release(self) -> None:
        """Brings the weights and optimizer state back to the host; the next step uploads again."""
        gpu, self._gpu = self._gpu, None
        if gpu is not None:
            gpu.download(self._steps)
            self._steps = 0
            gpu.download_optimizer(self.optimizer)

    def _train_epoch_gpu(self, loader) -> dict:
        """train_epoch on the GPU: the same steps, shuffle order, rates, record and errors."""
        self.model.train()
        self._gpu = None  # upload afresh: the host arrays may have changed since the last epoch
        try:
            data = _device_dataset(loader)
            if data is not None and not self._gpu_dataset_fits(*data):
                data = None  # batch by batch from the host instead
            record = (self._gpu_dataset_epoch(*data) if data is not None
                      else self._batches_epoch(loader, self._gpu_step))
        except BaseException:
            # Keep what was trained up to the error on the host, as the CPU path does; a
            # failing download must not hide the error that got here.
            with contextlib.suppress(Exception):
                self._gpu_release()
            raise
        self._gpu_release()
        return record

    def _gpu_dataset_fits(self, source, images, labels, lut, pad, batch, count) -> bool:
        """Uploads the dataset (once per fit) unless it is there; False when the device has no
        room for it (the epoch then runs batch by batch from the host)."""
        gpu = self._gpu_net((1, images.shape[1] + 2 * pad, images.shape[2] + 2 * pad))
        held = self._gpu_data
        if held is not None and held[0] is gpu and held[1] is images and held[2] is labels:
            return True
        try:
            _DATASET_UPLOAD(gpu.net, images, labels, lut, pad)
        except RuntimeError as e:  # cudaMalloc: out of memory
            if "out of memory" not in str(e):
                raise
            return False
        self._gpu_data = (gpu, images, labels)
        return True

    def _gpu_step(self, x, y, first):
        """(loss, outputs, None): one host batch's whole step on the GPU (the device skips the
        update itself when the loss is not finite)."""
        loss, out, _ = self._gpu_net(x.shape[1:]).net.train_step(x, y, self.optimizer.lr, self._loss_name,
                                                                 self.seed, self.epoch, first,
                                                                 self._smoothing)
        return loss, out, None

    def _gpu_dataset_epoch(self, source, images, labels, lut, pad, batch, count) -> dict:
        """The dataset on the GPU (_gpu_dataset_fits uploaded it), batched there in the order of
        source.order(epoch), a few steps per call so that the progress bar moves (one call per
        epoch when it is not shown)."""
        epoch, source.epoch = source.epoch, source.epoch + 1  # as iterating the loader would
        order = np.ascontiguousarray(source.order(epoch)[:count], dtype=np.int64)
        gpu = self._gpu_net((1, images.shape[1] + 2 * pad, images.shape[2] + 2 * pad))
        tally = _Tally()
        total = -(-count // batch)
        bar = self._bar(total=total)
        per_batch = getattr(self.scheduler, "step_batch", None)
        chunk = max(total, 1) if bar.disable else GPU_CHUNK_STEPS
        for first in range(0, total, chunk):
            steps = range(first, min(first + chunk, total))
            lrs = np.empty(len(steps), np.float32)
            for k, i in enumerate(steps):  # each step's rate, set as the CPU path sets it
                if per_batch is not None:
                    per_batch(self.epoch + i / total)
                lrs[k] = self.optimizer.lr
            losses, correct, applied = gpu.net.train_indices(
                order[first * batch:(steps[-1] + 1) * batch], batch, lrs, self._loss_name,
                self.on_nonfinite == "raise", seed=self.seed, epoch=self.epoch, first=first * batch,
                smoothing=self._smoothing)
            self._steps += len(steps)
            for k, i in enumerate(steps):
                if not applied[k]:
                    if self.on_nonfinite == "skip":
                        tally.skipped += 1
                        continue
                    if per_batch is not None:  # the rate of the failing step, as on the CPU
                        per_batch(self.epoch + i / total)
                    bar.close()
                    self._nonfinite(float(losses[k]), i)
                n = min(batch, count - i * batch)
                tally.add(float(losses[k]), int(correct[k]), n)
            tally.show(bar)
            bar.update(len(steps))
        bar.close()
        self._seen = tally.seen
        return tally.record()

    def fit(self, train, *, epochs: int, validation=None) -> History:
        """Trains until `epochs` epochs are finished in total (a resumed run continues)."""
        pad = digit_pad(self.model)
        loader = _batches("train", train, self.batch_size, shuffle=True, seed=self.seed,
                          augment=self.augment, pad=pad)
        if validation is not None:
            _batches("validation", validation, self.batch_size, pad=pad)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        device = self.device
        if device == "cuda":
            check_training(self.model, self.optimizer, self.loss_fn, self._fused)
        self._gpu_data = None  # a dataset is uploaded once per fit
        self.stop_training = False
        self.has_validation = validation is not None  # what a val_* monitor checks for
        # checkpoint= is a ModelCheckpoint that runs first, so that the file is written before
        # any other callback sees the epoch.
        hooks = ([ModelCheckpoint(self.checkpoint)] if self.checkpoint is not None else []) + self.callbacks
        for cb in hooks:
            cb.trainer = self
        call_hook(hooks, "on_train_begin", self)
        while self.epoch < epochs and not self.stop_training:
            loader.set_epoch(self.epoch)
            record = {"epoch": self.epoch + 1, "lr": self.optimizer.lr}
            record.update(self.train_epoch(loader))
            if self.scheduler is not None:
                self.scheduler.step()
            if validation is not None:
                val = evaluate(self.model, validation, loss=self.loss_fn, device=device, tta=self.tta)
                record["val_loss"], record["val_accuracy"] = val["loss"], val["accuracy"]
            self.epoch += 1
            self.history.append(record)
            self._warn_if_chance(record)
            if self.progress and not _live_progress():
                _log_epoch(record, epochs)
            if any(call_hook(hooks, "on_epoch_end", self.epoch, dict(record))):
                self.stop_training = True
        call_hook(hooks, "on_train_end", self)
        return self.history


def fit(model, train, *, epochs: int, batch_size: int | None = None,
        optimizer=None, validation=None, loss=None, scheduler=None,
        seed: int = DEFAULT_RECIPE["seed"], threads: int | None = None,
        progress: bool = True, checkpoint=None, on_nonfinite: str = "raise",
        fused: bool = True, augment=None, recipe=None, device=None,
        callbacks=None, tta=None) -> History:
    """Trains `model` on `train` and returns its History.

    train (and validation): an (images, labels) tuple, where images are uint8 digits
    (N, 28, 28), padded to 32x32 and normalised as MNIST, or float (N, C, H, W) used as given;
    or a DataLoader or any re-iterable of (x, y) batches of those.

    recipe (a name in pylenet.recipe.RECIPES, a dict like DEFAULT_RECIPE, or None: the model's
    own, e.g. "lecun98" for LeNet5(variant="lecun98")) supplies what is not given: batch_size,
    augment, the loss's label smoothing and, without an optimizer, its optimizer (SGD with
    momentum and weight decay, or Adam) and, unless a scheduler is given, its schedule over
    `epochs`, as `pylenet train --recipe` does. augment: None (the recipe's), "none", a name in
    pylenet.data.AUGMENTS or an Augment. loss None is the model's default_loss (cross-entropy
    with the recipe's label smoothing, or "rbf_map" for LeNet5(variant="lecun98")). validation
    is evaluated after each epoch;
    checkpoint, if given, is rewritten atomically after every epoch. device: "cpu", "cuda",
    "auto" or None (the model's .device); see Trainer. callbacks: a list of
    pylenet.callbacks.Callback (on_train_begin, on_epoch_end, which may stop training, and
    on_train_end). tta: the validation's test-time augmentation (None: the recipe's; see
    evaluate).
    """
    recipe = get_recipe(recipe, model)
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    augment = recipe["augment"] if augment is None else augment
    tta = recipe["tta"] if tta is None else tta
    if loss is None:  # the model's default loss, with the recipe's label smoothing
        loss = make_loss(default_loss(model), recipe=recipe)
    if optimizer is None:
        optimizer = make_optimizer(model.parameters(), recipe=recipe)
        if scheduler is None and isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool):
            scheduler = make_scheduler(optimizer, epochs, recipe=recipe)
    trainer = Trainer(model, optimizer, loss=loss, scheduler=scheduler, batch_size=batch_size,
                      seed=seed, threads=threads, progress=progress, checkpoint=checkpoint,
                      on_nonfinite=on_nonfinite, fused=fused, augment=augment, device=device,
                      callbacks=callbacks, tta=tta)
    return trainer.fit(train, epochs=epochs, validation=validation)


def _forward(model, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Network outputs for one float32 batch: on the GPU for device "cuda", else in the core's
    fused net when it can run the model."""
    if device == "cuda":
        return gpu_net_for(model, x.shape[1:]).forward(x)
    fused = cpu_net_for(model, x.shape[1:])
    if fused is not None:  # one core call, nothing cached for backward
        return fused.forward(x)
    was_training = model.training
    model.eval()
    try:
        return model.forward(x)
    finally:
        model.train(was_training)


def _inference_device(model, device) -> str:
    """evaluate's and predict's device: None is the model's; "auto" is the GPU when one can be
    used and can run the model (gpu.unsupported), else the CPU."""
    resolved = resolve_device(device, default=getattr(model, "device", "cpu"))
    if resolved == "cuda" and device == "auto" and unsupported(model) is not None:
        return "cpu"
    return resolved


def evaluate(model, data, *, batch_size: int = 1000, loss=None, device=None, tta=None) -> dict:
    """{"accuracy", "loss", "confusion"} of `model` on `data` (as fit takes it); rows = true label.
    loss None is the model's default_loss; predictions are the argmax of its class scores.
    device: "cpu", "cuda" (the network runs on the GPU, the loss on the host), "auto" (the GPU
    when one can run the model) or None (the model's .device). tta: None, a name in
    pylenet.tta.TTAS or (dy, dx) shifts: predictions are then the argmax of the softmax of the
    class scores averaged over the input and its shifted copies (test-time augmentation);
    "loss" stays the unshifted input's."""
    device = _inference_device(model, device)
    batches = _batches("data", data, _check_batch_size(batch_size), once=True, pad=digit_pad(model))
    loss_fn = get_loss(default_loss(model) if loss is None else loss)
    views = get_tta(tta)

    def scores(x):
        return class_scores(model, _forward(model, x, device))
    confusion, total, seen = None, 0.0, 0
    for x, y in batches:
        out = _forward(model, x, device)
        if confusion is None:
            confusion = np.zeros((out.shape[1], out.shape[1]), dtype=np.int64)
        if len(y) and (y.min() < 0 or y.max() >= out.shape[1]):
            raise ValueError(f"data: labels must lie in 0..{out.shape[1] - 1} (the model's "
                             f"classes), found {y.min()}..{y.max()}")
        batch_loss, _ = loss_fn(out, y)
        total += batch_loss * len(y)
        seen += len(y)
        predicted = class_scores(model, out)
        if views:
            predicted = tta_probabilities(scores, x, views, first=predicted)
        np.add.at(confusion, (y, predicted.argmax(axis=1)), 1)
    if not seen:
        raise ValueError("data is empty")
    return {"accuracy": float(np.trace(confusion) / confusion.sum()), "loss": total / seen,
            "confusion": confusion}


def _num_classes(model) -> int:
    config = getattr(model, "config", None) or {}
    if "num_classes" in config:
        return int(config["num_classes"])
    linear = [layer for _, layer in getattr(model, "layers", []) if hasattr(layer, "out_features")]
    return linear[-1].out_features if linear else 0


def predict(model, images, *, batch_size: int = 1000, device=None) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64 (N,), probabilities float32 (N, C)), always; one (28, 28) digit counts as N=1.
    The probabilities are the softmax of the model's class scores (pylenet.engine.class_scores).

    images: uint8 digits (N, 28, 28) or (28, 28), prepared as in training (padded to 32x32,
    normalised); float (N, C, H, W) used as given; or an iterable of x or (x, y) batches.
    device: "cpu", "cuda", "auto" (the GPU when one can run the model) or None (the model's .device).
    """
    device = _inference_device(model, device)
    batch_size = _check_batch_size(batch_size)
    if isinstance(images, np.ndarray):
        x = images[None] if images.dtype == np.uint8 and images.ndim == 2 else images
        if x.dtype == np.uint8 and (x.ndim != 3 or x.shape[1:] != (28, 28)):
            raise ValueError(f"predict: uint8 images must be (28, 28) or (N, 28, 28), got shape "
                             f"{images.shape} (float32 (N, C, H, W) inputs are used as given)")
        _check_input("predict", x)
        fused = None
        if x.dtype == np.uint8:
            pad = digit_pad(model)
            shape = (1, 28 + 2 * pad, 28 + 2 * pad)
            fused = gpu_net_for(model, shape) if device == "cuda" else cpu_net_for(model, shape)
        if fused is not None and len(x):  # padding, normalisation, network and softmax in one core call
            probs = fused.predict_proba(x, _LUT, pad)
        else:
            chunks = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
            probs = _predict_batches(model, chunks, _num_classes(model), device)
    elif isinstance(images, (str, bytes, dict)) or not hasattr(images, "__iter__"):
        raise TypeError(f"predict: images must be a numpy array or an iterable of batches, got "
                        f"{type(images).__name__}")
    else:
        chunks = (b[0] if isinstance(b, (tuple, list)) and len(b) == 2 else b for b in images)
        probs = _predict_batches(model, chunks, _num_classes(model), device)
    return probs.argmax(axis=1).astype(np.int64, copy=False), probs


def _predict_batches(model, chunks, num_classes: int, device: str = "cpu") -> np.ndarray:
    probs = [ops.softmax(class_scores(model, _forward(model, _as_input("predict", x, digit_pad(model)), device)))
             for x in chunks]
    probs = [p for p in probs if len(p)]
    return np.concatenate(probs) if probs else np.zeros((0, num_classes), np.float32)
