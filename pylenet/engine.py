"""Hands a Python-assembled layer chain to the core's fused network (pylenet._core.Net).

The graph stays a Sequential of Python layers; this module only describes it to the core,
which then runs a whole batch's forward, loss and backward in one call with the GIL released,
splitting the batch across threads (bit-identical results for any thread count).
"""
from __future__ import annotations

import operator

import numpy as np

from pylenet import _core
from pylenet.layers import Parameter, Sequential

# The core's registry (core/registry.h): kind name -> {Net tuple slot: layer attribute}. A
# layer class takes part by naming its kind in `core_kind`; its description is read from the
# attributes the registry names, so no list of layers is kept here.
LAYER_KINDS = _core.layer_kinds()
LOSS_KINDS = _core.loss_kinds()
PENALTY_KINDS = _core.penalty_kinds()  # kinds whose outputs are penalties: scores = -outputs
_SLOTS = ("in", "out", "kernel", "stride", "pad", "bias", "const")
_DEFAULTS = (0, 0, 0, 1, 0, False, None)
_BIAS = _SLOTS.index("bias")


def _reader(kind: str):
    """A function from a layer of `kind` to its Net tuple (kind, in, out, kernel, stride, pad,
    bias, const); const is the layer's fixed array (a tuple of numbers or of rows) or None."""
    fields = LAYER_KINDS[kind]
    getters = [(fields.get(slot), default) for slot, default in zip(_SLOTS, _DEFAULTS)]

    def read(layer) -> tuple:
        values = [getattr(layer, attr) if attr else default for attr, default in getters]
        if fields.get("bias"):
            values[_BIAS] = values[_BIAS] is not None  # the bias Parameter, or None
        return (kind, *values)
    return read


_READERS = {kind: _reader(kind) for kind in LAYER_KINDS}


def _describe(layer) -> tuple | None:
    """The core's (kind, in, out, kernel, stride, pad, bias) tuple, or None if unsupported.

    Only a class that itself declares `core_kind` is run by the core: a subclass that
    overrides forward without declaring one falls back to the layer-by-layer path."""
    read = _READERS.get(type(layer).__dict__.get("core_kind"))
    return read(layer) if read else None


def outputs_penalties(model) -> bool:
    """Whether the model's outputs are penalties, the smallest the likeliest: its last layer's
    kind is one of PENALTY_KINDS (the RBF output of LeNet5(variant="lecun98"))."""
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    return type(layers[-1][1]).__dict__.get("core_kind") in PENALTY_KINDS


def class_scores(model, out: np.ndarray) -> np.ndarray:
    """Class scores (higher = likelier) from the model's outputs (N, C): the outputs
    themselves, or minus them when they are penalties. Predictions are their argmax and
    probabilities their softmax, on every path (the core's predict_u8 applies the same rule)."""
    return -out if outputs_penalties(model) else out


def loss_smoothing(loss) -> float:
    """The label smoothing a loss object asks the core for (CrossEntropyLoss's), else 0."""
    return float(getattr(loss, "label_smoothing", 0.0) or 0.0)


def loss_name(loss) -> str | None:
    """The core's name for a loss whose class itself declares one of LOSS_KINDS as `core_kind`
    (a custom loss, even one subclassing a built-in, runs layer by layer), else None."""
    name = type(loss).__dict__.get("core_kind")
    return name if name in LOSS_KINDS else None


def param_slots(model: Sequential) -> list[tuple]:
    """(layer, attribute) of every parameter in the core's order (the CPU and GPU nets share
    it), read afresh on each call so that a replaced Parameter or array is always the one used."""
    return [(layer, name) for _, layer in model.layers
            for name in ("weight", "bias") if isinstance(getattr(layer, name, None), Parameter)]


class FusedNet:
    """The core's view of a Sequential of built-in layers, for inputs of `input_shape`."""

    def __init__(self, model: Sequential, input_shape: tuple = (1, 32, 32)):
        descs = [_describe(layer) for _, layer in model.layers] if isinstance(model, Sequential) else [None]
        if any(d is None for d in descs):
            raise TypeError("FusedNet needs a Sequential of pylenet's built-in layers")
        self.model = model
        self.net = _core.Net(descs, tuple(input_shape))
        # What the core network was built from: fused_for rebuilds it when any of this changes.
        self.key, self.input_shape = _key(model), input_shape
        self._slots = param_slots(model)

    @property
    def params(self) -> list[Parameter]:
        """The model's parameters in the core's order."""
        return [getattr(layer, name) for layer, name in self._slots]

    @staticmethod
    def supports(model) -> bool:
        """True when every layer of `model` is one the core can run fused."""
        return isinstance(model, Sequential) and all(_describe(l) is not None for _, l in model.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network outputs (N, classes) for x (N, C, H, W); keeps nothing for backward."""
        return self.net.forward(x, [p.data for p in self.params])

    def predict_proba(self, images: np.ndarray, lut: np.ndarray, pad: int) -> np.ndarray:
        """Softmax of the class scores for raw uint8 images (N, h, w), prepared in the core (one call)."""
        return self.net.predict_u8(images, lut, pad, [getattr(layer, name).data for layer, name in self._slots])

    def train_step(self, x: np.ndarray, labels: np.ndarray, loss: str = "cross_entropy",
                   smoothing: float = 0.0):
        """(mean loss, outputs): forward, loss and backward; overwrites every parameter's .grad.
        smoothing: the label smoothing of "cross_entropy" (pylenet.losses.CrossEntropyLoss)."""
        params = self.params  # the core writes into each .grad in place (Parameter's rule)
        return self.net.train_step(x, labels, [p.data for p in params],
                                   [p.grad_buffer() for p in params], loss, smoothing)


def _settings(cls):
    """operator.attrgetter of the attributes a layer of class `cls` is described by (None when
    there are none): a fused_for call reads them to see whether the cached network still fits."""
    if cls not in _SETTINGS:
        attrs = list(LAYER_KINDS.get(cls.__dict__.get("core_kind"), {}).values())
        _SETTINGS[cls] = operator.attrgetter(*attrs) if attrs else None
    return _SETTINGS[cls]


_SETTINGS: dict = {}


def _key(model) -> tuple:
    """(the layers, then per layer with settings its getter and the values read): what a cached
    network was built from (a replaced bias Parameter also counts as a change; rebuilding then
    is harmless)."""
    layers = [layer for _, layer in model.layers]
    settings = [(get, layer, get(layer)) for layer in layers
                for get in (_settings(type(layer)),) if get is not None]
    return layers, settings


def _fits(key: tuple, model) -> bool:
    """Whether `model`'s layers are still the ones `key` was taken from, with the same settings."""
    layers, settings = key
    # list == list compares the layer objects in C (by identity: layers define no __eq__).
    if [layer for _, layer in model.layers] != layers:
        return False
    for get, layer, values in settings:
        if get(layer) != values:
            return False
    return True


def fused_for(model, input_shape: tuple = (1, 32, 32)) -> FusedNet | None:
    """The model's FusedNet (cached on it and rebuilt when a layer or its settings change),
    or None if it has other layers."""
    if not isinstance(model, Sequential):
        return None
    cached = model.__dict__.get("_fused")
    if cached is not None and cached.input_shape == input_shape and _fits(cached.key, model):
        return cached
    if not FusedNet.supports(model):
        return None
    fused = FusedNet(model, input_shape)
    model.__dict__["_fused"] = fused
    return fused
