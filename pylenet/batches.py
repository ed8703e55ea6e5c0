"""Training and evaluation data as batches: an (images, labels) tuple of arrays, a DataLoader or
any iterable of (x, y), checked and brought to the network's float32 (N, C, H, W) input."""
from __future__ import annotations

import numpy as np

from pylenet.data import MNIST_MEAN, MNIST_STD, _normalize_lut, _prepare, pad_and_normalize

PAD = 2  # MNIST's 28x28 digits zero-padded to LeNet-5's 32x32 input


def digit_pad(model) -> int:
    """The zero padding that takes 28x28 digits to the model's input: from its input_shape
    (1, 28 + 2 pad, 28 + 2 pad) when it declares one, else LeNet-5's PAD."""
    shape = getattr(model, "input_shape", None)
    if shape and shape[0] == 1 and shape[1] == shape[2] and shape[1] >= 28 and (shape[1] - 28) % 2 == 0:
        return (shape[1] - 28) // 2
    return PAD


_LUT = _normalize_lut(MNIST_MEAN, MNIST_STD)  # uint8 pixel value -> its normalised float


def _check_labels(name: str, labels, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name}: labels must have shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: labels must be integers, got {labels.dtype}")
    return labels.astype(np.int64, copy=False)


def _as_input(name: str, x, pad: int = PAD) -> np.ndarray:
    """One batch as the network's float32 (N, C, H, W): uint8 digits are padded by `pad` and
    normalised."""
    _check_input(name, x)
    if x.dtype == np.uint8:
        return pad_and_normalize(x, pad=pad)
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_input(name: str, x) -> None:
    """TypeError/ValueError unless x is uint8 digits (N, 28, 28) or float (N, C, H, W)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: images must be a numpy array, got {type(x).__name__}")
    if x.dtype == np.uint8:
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{name}: uint8 images must have shape (N, 28, 28), got {x.shape} "
                             f"(float32 (N, C, H, W) inputs are used as given)")
        return
    if x.dtype.kind != "f":
        raise TypeError(f"{name}: images must be uint8 digits (N, 28, 28) or float (N, C, H, W), "
                        f"got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"{name}: float images must have shape (N, C, H, W), got {x.shape} "
                         f"(raw (N, 28, 28) digits must be uint8)")


class _ArrayBatches:
    """Seeded, epoch-aware batches of an in-memory (images, labels) pair, like DataLoader."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool, seed: int, augment=None, pad: int = PAD):
        self.name, self.images, self.labels, self.pad = name, images, labels, pad
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.augment = augment  # an Augment (uint8 digits only) or None

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order the next iteration uses."""
        self.epoch = epoch

    def order(self, epoch: int) -> np.ndarray:
        """Sample indices of an epoch: default_rng([seed, epoch]).permutation(N), as DataLoader."""
        n = len(self.images)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self):
        n = len(self.images)
        order = self.order(self.epoch)
        epoch, self.epoch = self.epoch, self.epoch + 1
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            if self.augment is not None:  # the same pass as DataLoader's (data._prepare)
                yield _prepare(self.images, idx, self.pad, _LUT, self.augment, self.seed, epoch), self.labels[idx]
            else:
                yield _as_input(self.name, self.images[idx], self.pad), self.labels[idx]


class _IterableBatches:
    """Any re-iterable of (x, y) batches (a DataLoader, a list, a torch-style loader), checked per batch."""

    def __init__(self, name: str, batches, pad: int = PAD):
        self.name, self.batches, self.pad = name, batches, pad

    def __len__(self):
        try:
            return len(self.batches)
        except TypeError:
            return None

    def set_epoch(self, epoch: int) -> None:
        """Passes the epoch on to a loader that shuffles by epoch (DataLoader)."""
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(self.batches):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"{self.name}: batch {i} must be an (x, y) tuple, got "
                                f"{type(batch).__name__}")
            x = _as_input(f"{self.name} batch {i}", batch[0], self.pad)
            yield x, _check_labels(f"{self.name} batch {i}", batch[1], len(x))


def _batches(name: str, data, batch_size: int, *, shuffle: bool = False, seed: int = 0,
             once: bool = False, augment=None, pad: int = PAD):
    """The batches of `data`: an (images, labels) tuple of arrays, a DataLoader or an iterable of (x, y).

    augment (an Augment or None) applies to an (images, labels) tuple of uint8 digits only."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        images = data[0]
        _check_input(name, images)
        labels = _check_labels(name, data[1], images.shape[0])
        if images.shape[0] == 0:
            raise ValueError(f"{name} is empty")
        if augment is not None and images.dtype != np.uint8:
            raise ValueError(f"{name}: augment distorts uint8 digits (N, 28, 28), got {images.dtype} images")
        return _ArrayBatches(name, images, labels, batch_size, shuffle, seed, augment, pad)
    if augment is not None:
        raise ValueError(f"{name}: augment= applies to an (images, labels) tuple; for a loader, "
                         f"give DataLoader(..., augment=...) instead")
    if isinstance(data, (np.ndarray, str, bytes, dict)) or not hasattr(data, "__iter__"):
        raise TypeError(f"{name} must be an (images, labels) tuple of arrays, a DataLoader or an "
                        f"iterable of (x, y) batches, got {type(data).__name__}")
    if not once and iter(data) is data:
        raise TypeError(f"{name}: a one-shot iterator cannot be read once per epoch; pass a list "
                        f"or a loader object (something iter() can restart)")
    return _IterableBatches(name, data, pad)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)
