"""Losses: each call returns (loss as a float, gradient with respect to the model output)."""
from __future__ import annotations

import numpy as np

from pylenet import ops


class CrossEntropyLoss:
    """Softmax cross-entropy, mean over the batch; gradient (softmax - t) / N.

    The target t is onehot(label), or with label_smoothing s in [0, 1] the smoothed
    (1 - s) onehot + s / C, as torch's CrossEntropyLoss(label_smoothing=s). The fused core
    step runs either (Net.train_step's smoothing); the GPU runs s = 0 only."""

    name = "cross_entropy"
    core_kind = "cross_entropy"  # the fused engine runs it (core/registry.h)

    def __init__(self, label_smoothing: float = 0.0):
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)) \
                or not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be a number in [0, 1], "
                             f"got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, logits: np.ndarray, labels: np.ndarray):
        return ops.softmax_cross_entropy(logits, labels, self.label_smoothing)

    def __repr__(self):
        return f"CrossEntropyLoss(label_smoothing={self.label_smoothing})"


class MSELoss:
    """L2 loss: mean over all elements of (output - onehot(labels))^2."""

    name = "mse"
    core_kind = "mse"

    def __call__(self, outputs: np.ndarray, labels: np.ndarray):
        outputs = np.asarray(outputs)
        labels = np.asarray(labels)
        if outputs.ndim != 2:
            raise ValueError(f"MSELoss: outputs must be (N, C), got shape {outputs.shape}")
        n, c = outputs.shape
        if labels.shape != (n,):
            raise ValueError(f"MSELoss: labels must have shape ({n},), got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"MSELoss: labels must lie in [0, {c}), got range "
                             f"[{labels.min()}, {labels.max()}]")
        target = np.zeros((n, c), dtype=np.float32)
        target[np.arange(n), labels] = 1.0
        return ops.mse_loss(outputs, target)


class RBFMAPLoss:
    """LeCun 1998's MAP criterion (eq. 9) on RBF penalties y (N, C), mean over the batch:
    E = y[label] + log(exp(-j) + sum_i exp(-y_i)), j = 0.1. The first term pulls the correct
    class's penalty down; the second pushes the others up, until they pass j."""

    name = "rbf_map"
    core_kind = "rbf_map"  # the fused engine runs it (core/registry.h)

    def __call__(self, y: np.ndarray, labels: np.ndarray):
        return ops.rbf_map_loss(y, labels)


LOSSES = {"cross_entropy": CrossEntropyLoss, "mse": MSELoss, "rbf_map": RBFMAPLoss}


def get_loss(loss) -> CrossEntropyLoss | MSELoss | RBFMAPLoss:
    """A loss object from a name ("cross_entropy", "mse", "rbf_map") or a callable passed through."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        return LOSSES[loss]()
    if not callable(loss):
        raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")
    return loss
