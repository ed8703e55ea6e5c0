"""Saving and loading models (LeNet5 or any Sequential of built-in layers) through pylenet.checkpoint.

A checkpoint's `arch` says how to rebuild the model: a LeNet5's config ({"name": "LeNet5",
"activation": ..., ...}), or {"name": "Sequential", "layers": [{"name", "type", args...}]} for
any other Sequential. Named architectures (LeNet5) register their class here from their own
module, so this module imports no model and models.py imports only this one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pylenet import layers as L
from pylenet.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

# A built-in layer is stored as its registry class name and its registry attributes (the
# core's layer_kinds(): PyTorch's argument names), which are its constructor's keyword
# arguments; "bias" is stored as whether the layer has one, tables as lists of rows.
def _layer_args(kind: str) -> tuple:
    """The stored attributes of a layer of registry kind `kind`, in constructor order."""
    return tuple(a["name"] for a in L.KINDS[kind]["attrs"])


def _json_value(value):
    """A layer attribute as the JSON value its constructor takes back."""
    if isinstance(value, L.Parameter):
        return True
    if value is None:
        return False
    if isinstance(value, tuple):  # a fixed table: connections, centres
        return [_json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return int(value)


_ARCHITECTURES: dict = {}


def register_architecture(name: str, cls) -> None:
    """Lets checkpoints whose arch["name"] is `name` rebuild as cls(**the rest of arch)."""
    _ARCHITECTURES[name] = cls


def architecture(model) -> dict:
    """The JSON description a checkpoint stores to rebuild `model` (TypeError if it cannot)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config.get("name") in _ARCHITECTURES:
        return dict(config)
    if not isinstance(model, L.Sequential):
        raise TypeError(f"cannot save a {type(model).__name__}: checkpoints hold LeNet5 or a "
                        f"Sequential of built-in layers")
    specs = []
    for name, layer in model.layers:
        cls = type(layer).__name__
        if L.LAYER_CLASSES.get(cls) is not type(layer):
            raise TypeError(f"cannot save layer {name!r} ({type(layer).__name__}): checkpoints "
                            f"hold only the built-in layers {sorted(L.LAYER_CLASSES)}")
        spec = {"name": name, "type": cls}
        for arg in _layer_args(layer.core_kind):
            spec[arg] = _json_value(getattr(layer, arg))
        specs.append(spec)
    arch = {"name": "Sequential", "layers": specs}
    if model.input_shape is not None:
        arch["input_shape"] = list(model.input_shape)
    return arch


def build_model(arch: dict, path="checkpoint"):
    """A freshly initialised model for a checkpoint's arch (CheckpointError if it is not buildable)."""
    arch = dict(arch)
    name = arch.pop("name", None)
    try:
        if name in _ARCHITECTURES:
            return _ARCHITECTURES[name](**arch)
        if name == "Sequential" and set(arch) in ({"layers"}, {"layers", "input_shape"}) \
                and isinstance(arch["layers"], list):
            return L.Sequential(*(_build_layer(spec) for spec in arch["layers"]),
                                input_shape=arch.get("input_shape"))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} has an architecture this pylenet cannot build "
                              f"({arch}): {e}") from e
    raise CheckpointError(f"checkpoint {path} holds a {name!r} architecture; this pylenet builds "
                          f"{sorted(_ARCHITECTURES) + ['Sequential']}")


def _build_layer(spec: dict):
    if not isinstance(spec, dict) or spec.get("type") not in L.LAYER_CLASSES or "name" not in spec:
        raise ValueError(f"bad layer entry {spec!r}")
    cls = L.LAYER_CLASSES[spec["type"]]
    args = _layer_args(cls.core_kind)
    if set(spec) != {"name", "type", *args}:
        raise ValueError(f"layer {spec['name']!r} ({spec['type']}) needs exactly the fields {list(args)}")
    return (str(spec["name"]), cls(**{a: spec[a] for a in args}))


def save_model(path, model, *, optimizer=None, scheduler=None, epoch: int = 0,
               extra: dict | None = None) -> Path:
    """Atomically writes the model's architecture and weights, plus optimizer/scheduler state."""
    extra = dict(extra or {})
    if scheduler is not None:
        extra["scheduler"] = scheduler.state_dict()
    ckpt = Checkpoint(
        arch=architecture(model),
        params=model.state_dict(),  # the parameters and the buffers (running statistics)
        optimizer=optimizer.state_dict() if optimizer is not None else None,
        epoch=int(epoch),
        extra=extra,
    )
    return save_checkpoint(path, ckpt)


def model_from_checkpoint(ckpt: Checkpoint, path):
    """Builds the model a checkpoint describes and copies its weights in (keys and shapes checked)."""
    model = build_model(ckpt.arch, path)
    try:
        model.load_state_dict(ckpt.params)
    except (TypeError, ValueError) as e:
        what = repr(model) if "\n" not in repr(model) else f"its {len(model)}-layer Sequential"
        raise CheckpointError(f"checkpoint {path} does not match {what}: {e}") from e
    return model


def load_model(path):
    """The model stored at `path` (FileNotFoundError, or CheckpointError naming the problem)."""
    return model_from_checkpoint(load_checkpoint(path), path)
