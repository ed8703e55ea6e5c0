"""A model's network on the GPU: a cached pylenet._core.GpuNet beside the host Parameters.

The host arrays stay the source of truth. Each call uploads what changed (GpuNet.set_params
compares against what it last saw), and training downloads the weights and the optimiser
state back into the Parameters and the optimizer after every epoch, so that checkpoints,
export and serving read the same host arrays as after CPU training. Like engine.fused_for,
the GpuNet is cached on the model and rebuilt when a layer or its settings change.
"""
from __future__ import annotations

import numpy as np

from pylenet import _core
from pylenet.device import emulating, require_cuda
from pylenet.engine import LOSS_KINDS, _describe, _fits, _key, loss_name, loss_smoothing, param_slots
from pylenet.layers import Sequential
from pylenet.optim import SGD, Adam

# The optimizers the GPU runs, by the update rule they use (a subclass keeping it is accepted),
# and the names of their state slots, as GpuNet orders them and pylenet.optim keys them.
_OPTIMIZERS = {SGD.step: ("sgd", ("momentum",)), Adam.step: ("adam", ("m", "v"))}


def unsupported(model) -> str | None:
    """Why `model` cannot run on the GPU (a sentence), or None when it can: the GPU runs a
    Sequential of pylenet's built-in layers as one network, like the CPU's fused engine."""
    if not isinstance(model, Sequential):
        return f"it is a {type(model).__name__}, not a Sequential (wrap it: Sequential(layer))"
    for name, layer in model.layers:
        if _describe(layer) is None:
            return f"its layer {name!r} ({type(layer).__name__}) is not one of pylenet's built-in layers"
    return None


def require_supported(model) -> None:
    """TypeError saying why, unless `model` can run on the GPU."""
    why = unsupported(model)
    if why is not None:
        raise TypeError(f"device 'cuda' runs a Sequential of pylenet's built-in layers as one GPU "
                        f"network, but {why}; use device='cpu' for this model")


def check_training(model, optimizer, loss_fn, fused: bool = True) -> None:
    """The errors of training `model` on the GPU with `optimizer` and `loss_fn`, raised before
    any work: the model, the optimizer (pylenet's SGD or Adam over the model's parameters),
    the loss (a built-in one) and fused (the GPU has no layer-by-layer path)."""
    require_supported(model)
    if not fused:
        raise ValueError("fused=False runs the layer-by-layer path, which exists on the CPU only; "
                         "it cannot be combined with device='cuda'")
    if type(optimizer).step not in _OPTIMIZERS:
        raise TypeError(f"device 'cuda' runs pylenet.optim.SGD and Adam on the GPU, got "
                        f"{type(optimizer).__name__}; use one of those or device='cpu'")
    ids = [id(p) for p in optimizer.params]
    if sorted(ids) != sorted(id(p) for p in model.parameters()):
        raise ValueError("device 'cuda' updates every parameter of the model on the GPU, so the "
                         "optimizer must hold exactly model.parameters()")
    if loss_name(loss_fn) is None:
        raise TypeError(f"device 'cuda' computes the built-in losses {sorted(LOSS_KINDS)} on the "
                        f"GPU, got {type(loss_fn).__name__}; use one of those or device='cpu'")
    if loss_smoothing(loss_fn):
        raise ValueError(f"device 'cuda' computes cross-entropy without label smoothing, got "
                         f"{loss_fn!r}; use label_smoothing=0 or device='cpu'")


class GpuModel:
    """The GPU's view of a Sequential of built-in layers, for inputs of `input_shape`."""

    def __init__(self, model: Sequential, input_shape: tuple = (1, 32, 32), *, emulate: bool = False):
        require_supported(model)
        descs = [_describe(layer) for _, layer in model.layers]
        self.net = _core.GpuNet(descs, tuple(input_shape), emulate=emulate)
        self.model = model
        # What the GpuNet was built from: gpu_for rebuilds it when any of this changes.
        self.key, self.input_shape, self.emulate = _key(model), tuple(input_shape), emulate
        self._slots = param_slots(model)
        self._fresh_state = None  # (steps) when the optimizer was uploaded without state

    @property
    def params(self) -> list:
        """The model's parameters in the core's order."""
        return [getattr(layer, name) for layer, name in self._slots]

    # ---------------------------------------------------------------- host <-> device

    def upload(self) -> None:
        """Gives the device the host parameters (only those that changed are copied)."""
        self.net.set_params([p.data for p in self.params])

    def download(self) -> None:
        """Copies the device parameters into the host Parameters' arrays (in place)."""
        for p, value in zip(self.params, self.net.get_params()):
            p.data[...] = value

    def _positions(self, optimizer) -> list[int]:
        """optimizer.params index of each of the net's parameters (check_training made sure
        the two hold the same Parameters)."""
        index = {id(p): i for i, p in enumerate(optimizer.params)}
        return [index[id(p)] for p in self.params]

    def upload_optimizer(self, optimizer) -> None:
        """Gives the device the optimizer's settings, state and step count."""
        kind, slots = _OPTIMIZERS[type(optimizer).step]
        if kind == "sgd":
            self.net.set_optimizer("sgd", momentum=optimizer.momentum,
                                   weight_decay=optimizer.weight_decay, nesterov=optimizer.nesterov)
        else:
            self.net.set_optimizer("adam", weight_decay=optimizer.weight_decay,
                                   betas=optimizer.betas, eps=optimizer.eps)
        keys = [[f"{slot}.{i}" for i in self._positions(optimizer)]
                for slot in slots[:self.net.state_slots]]
        if keys and all(k in optimizer.state for row in keys for k in row):
            state = [[optimizer.state[k] for k in row] for row in keys]
            self._fresh_state = None
        else:  # no state yet (SGD's buffer starts at the first gradient, Adam's moments at 0)
            state, self._fresh_state = None, optimizer.steps
        self.net.set_optimizer_state(state, optimizer.steps)

    def download_optimizer(self, optimizer) -> None:
        """Copies the device's optimizer state and step count into `optimizer`, keyed as
        pylenet.optim keys it ("momentum.i", "m.i", "v.i"), so its state_dict is the CPU's."""
        steps = self.net.optimizer_steps
        # A state that never saw an update stays absent, as on the CPU.
        if self._fresh_state is None or steps != self._fresh_state:
            _, slots = _OPTIMIZERS[type(optimizer).step]
            positions = self._positions(optimizer)
            for slot, arrays in zip(slots, self.net.get_optimizer_state()):
                for i, value in zip(positions, arrays):
                    optimizer.state[f"{slot}.{i}"] = np.ascontiguousarray(value, dtype=np.float32)
        optimizer.steps = int(steps)

    # ---------------------------------------------------------------- inference

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network outputs (N, classes) for x (N, C, H, W), computed on the device."""
        self.upload()
        return self.net.forward(x)

    def predict_proba(self, images: np.ndarray, lut: np.ndarray, pad: int) -> np.ndarray:
        """Softmax of the class scores for raw uint8 images (N, h, w), prepared on the device."""
        self.upload()
        return self.net.predict_u8(images, lut, pad)


def gpu_for(model, input_shape: tuple = (1, 32, 32)) -> GpuModel:
    """The model's GpuModel (cached on it; rebuilt when a layer or its settings, the input shape
    or PYLENET_CUDA_EMULATE change). CudaUnavailableError when CUDA cannot be used, TypeError
    when the model is not a Sequential of built-in layers, ValueError for an invalid chain or a
    layer kind without CUDA kernels."""
    emulate = emulating()
    input_shape = tuple(input_shape)
    cached = model.__dict__.get("_gpu") if isinstance(model, Sequential) else None
    if (cached is not None and cached.input_shape == input_shape and cached.emulate == emulate
            and _fits(cached.key, model)):
        return cached  # its layers were checked when it was built, and have not changed
    require_supported(model)
    if not emulate:
        require_cuda()
    cached = model.__dict__.pop("_gpu", None)  # the old network's device memory goes first
    del cached
    gpu = GpuModel(model, input_shape, emulate=emulate)
    model.__dict__["_gpu"] = gpu
    return gpu
