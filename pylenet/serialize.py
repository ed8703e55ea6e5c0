"""Saving and loading LeNet-5 models and their training state through pylenet.checkpoint."""
from __future__ import annotations

from pathlib import Path

from pylenet.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint


def save_model(path, model, *, optimizer=None, scheduler=None, epoch: int = 0,
               extra: dict | None = None) -> Path:
    """Atomically writes the model's architecture and weights, plus optimizer/scheduler state."""
    extra = dict(extra or {})
    if scheduler is not None:
        extra["scheduler"] = scheduler.state_dict()
    ckpt = Checkpoint(
        arch=dict(model.config),
        params={name: p.data for name, p in model.named_parameters()},
        optimizer=optimizer.state_dict() if optimizer is not None else None,
        epoch=int(epoch),
        extra=extra,
    )
    return save_checkpoint(path, ckpt)


def model_from_checkpoint(ckpt: Checkpoint, path) -> "LeNet5":  # noqa: F821
    """Builds the model a checkpoint describes and copies its weights in (shapes checked)."""
    from pylenet.models import LeNet5

    arch = dict(ckpt.arch)
    name = arch.pop("name", None)
    if name != "LeNet5":
        raise CheckpointError(f"checkpoint {path} holds a {name!r} architecture, not 'LeNet5'")
    try:
        model = LeNet5(**arch)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an architecture this pylenet cannot build "
                              f"({arch}): {e}") from e
    expected = dict(model.named_parameters())
    if set(expected) != set(ckpt.params):
        missing = sorted(set(expected) - set(ckpt.params))
        unexpected = sorted(set(ckpt.params) - set(expected))
        raise CheckpointError(f"checkpoint {path} does not match LeNet5({arch}): "
                              f"missing {missing}, unexpected {unexpected}")
    for name, param in expected.items():
        value = ckpt.params[name]
        if value.shape != param.data.shape:
            raise CheckpointError(f"checkpoint {path}: {name} has shape {value.shape}, "
                                  f"LeNet5({arch}) expects {param.data.shape}")
        param.data[...] = value
    return model


def load_model(path):
    """The LeNet5 stored at `path` (FileNotFoundError, or CheckpointError naming the problem)."""
    return model_from_checkpoint(load_checkpoint(path), path)
