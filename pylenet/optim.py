"""Optimisers (SGD with momentum/Nesterov/weight decay, Adam) and learning-rate schedules.

Update rules follow torch.optim so that recipes carry over. Parameters are updated in place.
`state_dict()` / `load_state_dict()` hold what a checkpoint needs to resume exactly.
"""
from __future__ import annotations

import math

import numpy as np

from pylenet import _core
from pylenet.layers import Parameter


def _check_params(params) -> list[Parameter]:
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"optimizer: parameter {i} is a {type(p).__name__}, not a "
                            "pylenet Parameter (pass model.parameters())")
    return params


def _check_nonneg(name: str, value) -> float:
    value = float(value)
    if not value >= 0.0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class Optimizer:
    """Shared bookkeeping: parameters, learning rate, state arrays keyed by name."""

    def __init__(self, params, lr: float):
        self.params = _check_params(params)
        self.lr = _check_nonneg("lr", lr)
        self.state: dict[str, np.ndarray] = {}
        self.steps = 0

    def zero_grad(self) -> None:
        """Sets every parameter's gradient to zero."""
        for p in self.params:
            p.grad[...] = 0.0

    def config(self) -> dict:
        """The hyper-parameters, JSON-serialisable."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"config": hyper-parameters and step count, "state": name -> array}."""
        return {"config": {**self.config(), "steps": self.steps},
                "state": {k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, sd: dict) -> None:
        """Restores what state_dict() returned (type and shapes checked)."""
        cfg = dict(sd["config"])
        if cfg.get("type") != self.config()["type"]:
            raise ValueError(f"optimizer state is for {cfg.get('type')!r}, not {self.config()['type']!r}")
        self.steps = int(cfg.pop("steps", 0))
        cfg.pop("type")
        for key, value in cfg.items():
            setattr(self, key, tuple(value) if isinstance(value, list) else value)
        state = {}
        for key, arr in sd["state"].items():
            index = int(key.split(".")[1])
            if index >= len(self.params) or arr.shape != self.params[index].data.shape:
                raise ValueError(f"optimizer state {key!r} of shape {arr.shape} does not fit the model")
            state[key] = np.ascontiguousarray(arr, dtype=np.float32)
        self.state = state

    def _buffer(self, kind: str, i: int) -> np.ndarray:
        key = f"{kind}.{i}"
        if key not in self.state:
            self.state[key] = np.zeros_like(self.params[i].data)
        return self.state[key]


class SGD(Optimizer):
    """SGD: g = grad + wd*p; buf = momentum*buf + g; p -= lr * (g + momentum*buf if nesterov else buf)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum = _check_nonneg("momentum", momentum)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")

    def config(self):
        return {"type": "sgd", "lr": self.lr, "momentum": self.momentum,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay}

    def step(self) -> None:
        """One update of every parameter from its .grad (one core pass per parameter)."""
        for i, p in enumerate(self.params):
            buf = None
            first = False
            if self.momentum:
                key = f"momentum.{i}"
                buf = self.state.get(key)
                if buf is None:  # the first step starts the buffer at g, as torch does
                    buf = self.state[key] = np.empty_like(p.data)
                    first = True
            _core.sgd_update(p.data, buf, p.grad, self.lr, self.momentum, self.weight_decay,
                             self.nesterov, first)
        self.steps += 1


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay adds wd*p to the gradient."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adam: betas must be two numbers in [0, 1), got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = _check_nonneg("eps", eps)
        self.weight_decay = _check_nonneg("weight_decay", weight_decay)

    def config(self):
        return {"type": "adam", "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def step(self) -> None:
        """One update of every parameter from its .grad (one core pass per parameter)."""
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1 ** self.steps, 1.0 - b2 ** self.steps
        for i, p in enumerate(self.params):
            _core.adam_update(p.data, self._buffer("m", i), self._buffer("v", i), p.grad, self.lr,
                              b1, b2, self.eps, self.weight_decay, c1, c2)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


class LRScheduler:
    """Sets optimizer.lr from the epoch count; call step() once at the end of each epoch."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        """Advances one epoch and updates the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict:
        """JSON-serialisable state."""
        return {"type": type(self).__name__, "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, sd: dict) -> None:
        """Restores state_dict() and the optimizer's current learning rate."""
        self.base_lr = float(sd["base_lr"])
        self.last_epoch = int(sd["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"CosineLR: T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def lr_at(self, epoch):
        e = min(epoch, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * e / self.T_max)) / 2


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from start_factor * base_lr to base_lr over `warmup` epochs (fractional),
    then cosine decay to eta_min at T_max epochs. The Trainer calls step_batch(fractional
    epoch) before every batch, so the rate changes per step; step() still ends each epoch."""

    def __init__(self, optimizer: Optimizer, T_max: int, warmup: float = 0.0,
                 eta_min: float = 0.0, start_factor: float = 0.1):
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"WarmupCosineLR: T_max must be >= 1, got {T_max}")
        if not 0.0 <= warmup <= T_max:
            raise ValueError(f"WarmupCosineLR: warmup must be in [0, T_max], got {warmup}")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"WarmupCosineLR: start_factor must be in [0, 1], got {start_factor}")
        self.T_max, self.warmup = int(T_max), float(warmup)
        self.eta_min, self.start_factor = float(eta_min), float(start_factor)
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, epoch):
        e = min(float(epoch), self.T_max)
        if e < self.warmup:
            return self.base_lr * (self.start_factor + (1 - self.start_factor) * e / self.warmup)
        span = self.T_max - self.warmup
        t = (e - self.warmup) / span if span > 0 else 1.0
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t)) / 2

    def step_batch(self, epoch: float) -> None:
        """Sets the rate for the step that starts at fractional epoch `epoch`."""
        self.optimizer.lr = self.lr_at(epoch)
