"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) as the paper's stage list."""
from __future__ import annotations

import numpy as np

from pylenet.checkpoint import CheckpointError, load_checkpoint
from pylenet.layers import (AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential,
                            Sigmoid, Tanh)
from pylenet.serialize import model_from_checkpoint, register_architecture, save_model

ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
POOLINGS = {"max": MaxPool2d, "avg": AvgPool2d}


def _choice(name: str, value, options: dict):
    if value not in options:
        raise ValueError(f"LeNet5: {name} must be one of {sorted(options)}, got {value!r}")
    return options[value]


class LeNet5(Sequential):
    """LeNet-5 for 1x32x32 inputs (MNIST's 28x28 zero-padded by 2).

    activation="sigmoid" is the classic form: the logistic 1/(1+exp(-x)) after C1, C3, F5 and
    F6. "relu" (the default) and "tanh" swap that function; pooling picks max or average
    subsampling. Keyword-only arguments; all initial weights come from default_rng(seed).
    """

    def __init__(self, *, activation: str = "relu", pooling: str = "max", num_classes: int = 10,
                 seed: int = 0):
        act = _choice("activation", activation, ACTIVATIONS)
        pool = _choice("pooling", pooling, POOLINGS)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ValueError(f"LeNet5: num_classes must be an int >= 2, got {num_classes!r}")
        self.config = {"name": "LeNet5", "activation": activation, "pooling": pooling,
                       "num_classes": int(num_classes), "seed": int(seed)}
        rng = np.random.default_rng(seed)
        super().__init__(
            ("C1", Conv2d(1, 6, 5, rng=rng)),      # 1@32x32 -> 6@28x28
            ("A1", act()),
            ("S2", pool(2)),                       # 6@28x28 -> 6@14x14
            ("C3", Conv2d(6, 16, 5, rng=rng)),     # 6@14x14 -> 16@10x10
            ("A3", act()),
            ("S4", pool(2)),                       # 16@10x10 -> 16@5x5
            ("flatten", Flatten()),                # 16@5x5 -> 400
            ("F5", Linear(400, 120, rng=rng)),     # C5: a 5x5 conv over 5x5 maps = full connection
            ("A5", act()),
            ("F6", Linear(120, 84, rng=rng)),      # 120 -> 84
            ("A6", act()),
            ("output", Linear(84, num_classes, rng=rng)),  # 84 -> 10 logits
        )

    def save(self, path, *, optimizer=None, scheduler=None, epoch: int = 0, extra: dict | None = None):
        """Writes weights, architecture and (optionally) training state atomically to `path`."""
        return save_model(path, self, optimizer=optimizer, scheduler=scheduler, epoch=epoch, extra=extra)

    @classmethod
    def load(cls, path) -> "LeNet5":
        """Rebuilds a LeNet5 from a checkpoint written by save() (pylenet.load_model takes any)."""
        ckpt = load_checkpoint(path)
        name = ckpt.arch.get("name")
        if name != "LeNet5":
            raise CheckpointError(f"checkpoint {path} holds a {name!r} architecture, not 'LeNet5' "
                                  f"(pylenet.load_model rebuilds any saved Sequential)")
        return model_from_checkpoint(ckpt, path)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "name")
        return f"LeNet5({args})"


register_architecture("LeNet5", LeNet5)
