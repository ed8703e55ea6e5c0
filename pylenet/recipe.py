"""The default training recipe, defined once: fit()'s defaults and `pylenet train`'s flags both read it."""
from __future__ import annotations

from pylenet.optim import SGD, Adam, CosineLR, StepLR

# SGD with momentum and weight decay under a cosine schedule: 99% on MNIST in a few epochs.
DEFAULT_RECIPE = {
    "epochs": 10,
    "batch_size": 64,
    "optimizer": "sgd",
    "lr": {"sgd": 0.02, "adam": 1e-3},   # per optimizer
    "momentum": 0.9,                     # SGD only
    "weight_decay": 5e-4,
    "schedule": "cosine",                # "cosine" | "step" | "none", stepped per epoch
    "loss": "cross_entropy",
    "seed": 0,
}
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "none")


def make_optimizer(params, name: str = DEFAULT_RECIPE["optimizer"], *, lr: float | None = None,
                   momentum: float = DEFAULT_RECIPE["momentum"],
                   weight_decay: float = DEFAULT_RECIPE["weight_decay"]):
    """The recipe's optimizer over `params`; lr None picks the recipe's rate for that optimizer."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    lr = DEFAULT_RECIPE["lr"][name] if lr is None else lr
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def make_scheduler(optimizer, epochs: int, name: str = DEFAULT_RECIPE["schedule"]):
    """The recipe's per-epoch schedule over `epochs` epochs, or None for "none"."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")
    if name == "cosine":
        return CosineLR(optimizer, T_max=max(int(epochs), 1))
    if name == "step":
        return StepLR(optimizer, step_size=max(int(epochs) // 3, 1), gamma=0.1)
    return None
