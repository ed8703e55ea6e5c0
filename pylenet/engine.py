"""The CPU backend: hands a Python-assembled layer chain to the core's fused network
(pylenet._core.Net). Its GPU twin is pylenet.gpu.GpuNet; both read the same descriptions.

The graph stays a Sequential of Python layers; this module only describes it to the core,
which then runs a whole batch's forward, loss and backward in one call with the GIL released,
splitting the batch across threads (bit-identical results for any thread count).
"""
from __future__ import annotations

import operator

import numpy as np

from pylenet import _core
from pylenet.layers import KINDS, Parameter, Sequential

# The core's registry (core/net/registry.h): kind name -> its class, attributes, parameters and
# buffers. A layer class takes part by naming its kind in `core_kind`; its description is its
# attributes as the registry lists them, so no list of layers is kept here.
LAYER_KINDS = KINDS
LOSS_KINDS = _core.loss_kinds()
PENALTY_KINDS = tuple(k for k, info in KINDS.items() if info["penalty_output"])  # scores = -outputs


def describe(layer) -> tuple | None:
    """The core's (kind, {attribute: value}) of a built-in layer, or None if unsupported.

    Only a class that itself declares `core_kind` is run by the core: a subclass that
    overrides forward without declaring one falls back to the layer-by-layer path."""
    kind = type(layer).__dict__.get("core_kind")
    return (kind, layer.core_attrs()) if kind in KINDS else None


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
    it: per layer, its kind's params), read afresh on each call so that a replaced Parameter
    or array is always the one used."""
    return [(layer, name) for _, layer in model.layers
            for name in KINDS[layer.core_kind]["params"] if isinstance(getattr(layer, name, None), Parameter)]


def buffer_slots(model: Sequential) -> list[tuple]:
    """(layer, attribute) of every buffer the core reads and moves (running statistics), in
    the core's order."""
    return [(layer, name) for _, layer in model.layers for name in KINDS[layer.core_kind]["buffers"]]


def tracked_batches(model: Sequential) -> list:
    """The layers that count their training batches (BatchNorm's num_batches_tracked)."""
    return [layer for _, layer in model.layers if KINDS[layer.core_kind]["batch_coupled"]]


def supports(model) -> bool:
    """True when every layer of `model` is one the core can run fused."""
    return isinstance(model, Sequential) and all(describe(l) is not None for _, l in model.layers)


class CpuNet:
    """The CPU's view of a Sequential of built-in layers, for inputs of `input_shape`: the
    core's fused network with the model's parameters and buffers (pylenet.gpu.GpuNet is the
    GPU's)."""

    def __init__(self, model: Sequential, input_shape: tuple = (1, 32, 32)):
        if not supports(model):
            raise TypeError("the fused network needs a Sequential of pylenet's built-in layers")
        self.model = model
        self.net = _core.Net([describe(layer) for _, layer in model.layers], tuple(input_shape))
        # What the core network was built from: cpu_net_for rebuilds it when any of this changes.
        self.key, self.input_shape = _key(model), tuple(input_shape)
        self._slots, self._buffer_slots = param_slots(model), buffer_slots(model)
        self._tracked = tracked_batches(model)

    @property
    def params(self) -> list[Parameter]:
        """The model's parameters in the core's order."""
        return [getattr(layer, name) for layer, name in self._slots]

    @property
    def buffers(self) -> list[np.ndarray]:
        """The model's buffers (running statistics) in the core's order."""
        return [getattr(layer, name) for layer, name in self._buffer_slots]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network outputs (N, classes) for x (N, C, H, W), in evaluation mode; keeps nothing."""
        return self.net.forward(x, [p.data for p in self.params], self.buffers)

    def predict_proba(self, images: np.ndarray, lut: np.ndarray, pad: int) -> np.ndarray:
        """Softmax of the class scores for raw uint8 images (N, h, w), prepared in the core (one call)."""
        return self.net.predict_u8(images, lut, pad, [p.data for p in self.params], self.buffers)

    def input_gradient(self, x: np.ndarray, dout: np.ndarray) -> np.ndarray:
        """dx (N, C, H, W): the gradient of sum(dout * outputs) with respect to x, the network
        in evaluation mode, by the core's backward pass (nothing else changes)."""
        return self.net.input_gradient(x, dout, [p.data for p in self.params], self.buffers)

    def train_step(self, x: np.ndarray, labels: np.ndarray, loss: str = "cross_entropy",
                   noise: tuple = (0, 0, 0), smoothing: float = 0.0):
        """(mean loss, outputs): forward (training mode), loss and backward; overwrites every
        parameter's .grad, moves the running statistics and counts the batch. noise: Dropout's
        (seed, epoch, index in the epoch of the batch's first sample); smoothing: the label
        smoothing of "cross_entropy" (pylenet.losses.CrossEntropyLoss)."""
        params = self.params  # the core writes into each .grad in place (Parameter's rule)
        seed, epoch, first = noise
        result = self.net.train_step(x, labels, [p.data for p in params], [p.grad_buffer() for p in params],
                                     loss, self.buffers, seed, epoch, first, smoothing)
        for layer in self._tracked:
            layer.num_batches_tracked += 1
        return result

    # Data-parallel training (pylenet.distributed): workers share a batch by whole blocks.
    @property
    def gradient_size(self) -> int:
        """Floats in one block's gradient row: every parameter's gradient, flattened, in order."""
        return self.net.gradient_size

    def block_gradients(self, x: np.ndarray, labels: np.ndarray, N: int, b0: int, b1: int,
                        loss: str = "cross_entropy", noise: tuple = (0, 0, 0), smoothing: float = 0.0):
        """(grads (b1-b0, gradient_size), loss sums float64 (b1-b0,), outputs (n, classes)) of
        the blocks [b0, b1) of a batch of N (the split of train_step: _core.batch_blocks(N)
        blocks); x and labels hold only those blocks' samples, noise is the whole batch's.
        Adding all the batch's rows in block order (_core.sum_blocks) gives train_step's
        gradients bit for bit, and mean_loss of all its loss sums train_step's loss."""
        seed, epoch, first = noise
        return self.net.block_gradients(x, labels, N, b0, b1, [p.data for p in self.params], loss,
                                        seed, epoch, first, smoothing)

    def mean_loss(self, losses: np.ndarray, N: int, loss: str = "cross_entropy") -> float:
        """A batch's mean loss from all its blocks' loss sums (train_step's arithmetic)."""
        return self.net.mean_loss(losses, N, loss)

    def set_gradients(self, row: np.ndarray) -> None:
        """Overwrites every parameter's .grad from one flat gradient row (block_gradients' layout)."""
        if len(row) != self.gradient_size:
            raise ValueError(f"set_gradients: the row holds {len(row)} floats, the parameters "
                             f"{self.gradient_size}")
        offset = 0
        for p in self.params:
            g = p.grad_buffer()
            g[...] = row[offset:offset + g.size].reshape(g.shape)
            offset += g.size


def _settings(cls):
    """operator.attrgetter of the attributes a layer of class `cls` is described by (None when
    there are none): a cpu_net_for call reads them to see whether the cached network still fits."""
    if cls not in _SETTINGS:
        attrs = [a["name"] for a in KINDS.get(cls.__dict__.get("core_kind"), {}).get("attrs", [])]
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


def fits(key: tuple, model) -> bool:
    """Whether `model`'s layers are still the ones `key` was taken from, with the same settings."""
    layers, settings = key
    # list == list compares the layer objects in C (by identity: layers define no __eq__).
    if [layer for _, layer in model.layers] != layers:
        return False
    for get, layer, values in settings:
        if get(layer) != values:
            return False
    return True


def cpu_net_for(model, input_shape: tuple = (1, 32, 32)) -> CpuNet | None:
    """The model's CpuNet (cached on it and rebuilt when a layer or its settings change),
    or None if it has other layers."""
    if not isinstance(model, Sequential):
        return None
    cached = model.__dict__.get("_cpu_net")
    if cached is not None and cached.input_shape == tuple(input_shape) and fits(cached.key, model):
        return cached
    if not supports(model):
        return None
    net = CpuNet(model, input_shape)
    model.__dict__["_cpu_net"] = net
    return net
