"""Hands a Python-assembled layer chain to the core's fused network (pylenet._core.Net).

The graph stays a Sequential of Python layers; this module only describes it to the core,
which then runs a whole batch's forward, loss and backward in one call with the GIL released,
splitting the batch across threads (bit-identical results for any thread count).
"""
from __future__ import annotations

import numpy as np

from pylenet import _core
from pylenet.layers import (AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Parameter, ReLU,
                            Sequential, Sigmoid, Tanh)
from pylenet.losses import CrossEntropyLoss, MSELoss

_SIMPLE = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh", Flatten: "flatten"}


def _describe(layer) -> tuple | None:
    """The core's (kind, in, out, kernel, stride, pad, bias) tuple, or None if unsupported."""
    kind = type(layer)
    if kind in _SIMPLE:
        return (_SIMPLE[kind], 0, 0, 0, 1, 0, False)
    if kind is Conv2d:
        return ("conv2d", layer.in_channels, layer.out_channels, layer.kernel_size,
                layer.stride, layer.padding, layer.bias is not None)
    if kind in (MaxPool2d, AvgPool2d):
        return ("maxpool2d" if kind is MaxPool2d else "avgpool2d", 0, 0, layer.kernel_size,
                layer.stride, 0, False)
    if kind is Linear:
        return ("linear", layer.in_features, layer.out_features, 0, 1, 0, layer.bias is not None)
    return None


def loss_name(loss) -> str | None:
    """"cross_entropy" / "mse" for the built-in losses the core fuses, else None."""
    if type(loss) is CrossEntropyLoss:
        return "cross_entropy"
    if type(loss) is MSELoss:
        return "mse"
    return None


class FusedNet:
    """The core's view of a Sequential of built-in layers, for inputs of `input_shape`."""

    def __init__(self, model: Sequential, input_shape: tuple = (1, 32, 32)):
        descs = [_describe(layer) for _, layer in model.layers] if isinstance(model, Sequential) else [None]
        if any(d is None for d in descs):
            raise TypeError("FusedNet needs a Sequential of pylenet's built-in layers")
        self.model = model
        self.net = _core.Net(descs, tuple(input_shape))
        # What the core network was built from: fused_for rebuilds it when any of this changes.
        self.key = _key(model, input_shape)
        # (layer, attribute) of every parameter in the core's order, read afresh on each call
        # so that a replaced Parameter or array is always the one used.
        self._slots = [(layer, name) for _, layer in model.layers
                       for name in ("weight", "bias") if isinstance(getattr(layer, name, None), Parameter)]

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
        """Softmax outputs for raw uint8 images (N, h, w), prepared in the core (one call)."""
        return self.net.predict_u8(images, lut, pad, [p.data for p in self.params])

    def train_step(self, x: np.ndarray, labels: np.ndarray, loss: str = "cross_entropy"):
        """(mean loss, outputs): forward, loss and backward; overwrites every parameter's .grad."""
        params = self.params  # the core writes into each .grad in place (Parameter's rule)
        return self.net.train_step(x, labels, [p.data for p in params],
                                   [p.grad_buffer() for p in params], loss)


def _key(model, input_shape) -> tuple:
    """The layers (identity and description) and input shape a FusedNet is built from."""
    return (tuple(input_shape),) + tuple((id(layer), _describe(layer)) for _, layer in model.layers)


def fused_for(model, input_shape: tuple = (1, 32, 32)) -> FusedNet | None:
    """The model's FusedNet (cached on it and rebuilt when a layer or its settings change),
    or None if it has other layers."""
    if not isinstance(model, Sequential):
        return None
    key = _key(model, input_shape)
    cached = model.__dict__.get("_fused")
    if cached is not None and cached.key == key:
        return cached
    if any(d is None for _, d in key[1:]):
        return None
    fused = FusedNet(model, input_shape)
    model.__dict__["_fused"] = fused
    return fused
