"""Layers on the core ops: each caches in `forward` what its `backward` needs.

Every built-in layer is one kind of the core's registry (`core_kind`; pylenet._core.layer_kinds()),
which defines its attributes, their defaults and valid ranges, its parameters and buffers and its
shape rule: the constructors and `output_shape` ask the core, so the checks are the fused
engine's own. Parameters and gradients are numpy float32 arrays. `backward(dy)` returns the
gradient with respect to the layer's input and overwrites (never accumulates) each parameter's
`.grad` in place (see Parameter), as the fused engine does.

Modes, as in PyTorch: `model.train()` (the default) uses a batch's own statistics in BatchNorm
(and moves the running ones) and drops out in Dropout; `model.eval()` uses the running
statistics and passes Dropout through. fit() trains; evaluate() and predict() evaluate.
"""
from __future__ import annotations

import math

import numpy as np

from pylenet import _core, ops

# The registry, as the core defines it (kind name -> its class, attributes, params, buffers).
KINDS = _core.layer_kinds()


class Parameter:
    """A trainable float32 array and its gradient (same shape; zeros until a backward).

    One rule for `.grad` on both paths (layer by layer and the fused engine): a backward
    writes the new gradient into the existing `.grad` array in place, so a caller holding it
    sees the new values; only when `.grad` is not a writeable C-contiguous float32 array of
    the parameter's shape is it replaced by a fresh one.
    """

    def __init__(self, data: np.ndarray):
        self.data = np.ascontiguousarray(data, dtype=np.float32)
        self.grad = np.zeros_like(self.data)

    def grad_buffer(self) -> np.ndarray:
        """`.grad` if a backward can write into it in place, else a fresh zeroed array set as `.grad`."""
        g = self.grad
        if not (isinstance(g, np.ndarray) and g.dtype == np.float32 and g.shape == self.data.shape
                and g.flags.c_contiguous and g.flags.writeable):
            self.grad = g = np.zeros_like(self.data)
        return g

    def set_grad(self, value: np.ndarray) -> None:
        """Stores a freshly computed gradient by the rule above (copied into `.grad`)."""
        np.copyto(self.grad_buffer(), value)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape})"


class Module:
    """Base class: forward/backward, named parameters and buffers, train/eval mode."""

    training = True
    # Names of the module's buffers (state that is not trained, e.g. running statistics), in
    # state_dict order; each is a numpy array attribute, or None when the module has none.
    _buffer_names: tuple = ()

    def _cached(self, value):
        """What forward cached for backward; RuntimeError when there is none."""
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward in "
                               "training mode")
        return value

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, in_shape: tuple) -> tuple:
        """Shape of one sample's output given one sample's input shape (no batch dim)."""
        return in_shape

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        """(name, Parameter) pairs in a fixed order, e.g. ("weight", ...), ("bias", ...)."""
        return [(prefix + name, p) for name, p in vars(self).items() if isinstance(p, Parameter)]

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in the order of named_parameters()."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        """(name, array) pairs of the buffers (e.g. BatchNorm's running statistics), in order."""
        return [(prefix + name, getattr(self, name)) for name in self._buffer_names
                if getattr(self, name, None) is not None]

    def buffers(self) -> list[np.ndarray]:
        """The buffers, in the order of named_buffers()."""
        return [b for _, b in self.named_buffers()]

    def _state_items(self, prefix: str = "") -> list[tuple[str, object]]:
        """(name, Parameter or buffer array) in state_dict order: per module, its parameters
        then its buffers, as PyTorch orders them."""
        return self.named_parameters(prefix) + self.named_buffers(prefix)

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: copy of the parameter or buffer array}, keyed and ordered as PyTorch's."""
        return {name: (v.data if isinstance(v, Parameter) else v).copy()
                for name, v in self._state_items()}

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list, list]:
        """Copies arrays into the parameters and buffers by name; returns (missing, unexpected).

        Every key and shape is checked before anything is written, so a bad state changes
        nothing. strict=True refuses missing or unexpected keys (ValueError naming them);
        shapes must always match.
        """
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"load_state_dict: state must be a mapping of name -> array, got "
                            f"{type(state).__name__}")
        items = dict(self._state_items())
        missing = [k for k in items if k not in state]
        unexpected = [k for k in state if k not in items]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing {missing}, unexpected {unexpected} "
                             f"(the model has {list(items)})")
        values = {}
        for name, target in items.items():
            if name in state:
                value = state[name]
                array = target.data if isinstance(target, Parameter) else target
                if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                    raise TypeError(f"load_state_dict: {name} must be a numeric numpy array, got "
                                    f"{getattr(value, 'dtype', type(value).__name__)}")
                if value.shape != array.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the model "
                                     f"expects {array.shape}")
                values[name] = value
        for name, value in values.items():
            target = items[name]
            (target.data if isinstance(target, Parameter) else target)[...] = value
        return missing, unexpected

    def num_parameters(self) -> int:
        """Total count of trainable scalars."""
        return int(sum(p.data.size for p in self.parameters()))

    def zero_grad(self) -> None:
        """Sets every parameter's gradient to zero."""
        for p in self.parameters():
            p.grad[...] = 0.0

    def train(self, mode: bool = True) -> "Module":
        """Switches to training mode (batch statistics, dropout; caches for backward); returns self."""
        self.training = bool(mode)
        return self

    def eval(self) -> "Module":
        """Switches to evaluation mode (running statistics, no dropout, no caches); returns self."""
        return self.train(False)

    _device = "cpu"

    @property
    def device(self) -> str:
        """Where fit, evaluate and predict run this model by default: "cpu" or "cuda"."""
        return self._device

    def to(self, device) -> "Module":
        """Records the device the model runs on ("cpu", "cuda", "cuda:0" or "auto"); returns self.

        It checks the name (ValueError) and that CUDA can be used (pylenet.CudaUnavailableError,
        saying why), nothing about the model: the parameters stay numpy arrays on the host,
        and on "cuda" a copy lives on the GPU while fit, evaluate and predict run, which raise
        TypeError for a model the GPU cannot run."""
        from pylenet.device import resolve_device
        self._set_device(resolve_device(device))
        return self

    def cuda(self, device=None) -> "Module":
        """to("cuda"); device may be None, 0, "cuda" or "cuda:0" (pylenet uses one GPU, device 0)."""
        if device is None or (type(device) is int and device == 0):
            device = "cuda"
        elif type(device) is int:
            raise ValueError(f"cuda({device}): pylenet runs on one GPU, device 0")
        return self.to(device)

    def cpu(self) -> "Module":
        """to("cpu")."""
        return self.to("cpu")

    def _set_device(self, device: str) -> None:
        self._device = device

    def __call__(self, x):
        return self.forward(x)

    # The backends a model caches on itself (engine.CpuNet, gpu.GpuNet): core objects that are
    # rebuilt on demand, so a pickled or copied model leaves them out.
    _CACHES = ("_cpu_net", "_gpu")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in self._CACHES}

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


class CoreLayer(Module):
    """A layer of one kind of the core's registry: its attributes are checked by the core
    (_core.check_layer) and its output shape is the core's shape rule."""

    core_kind: str  # each class's entry in the core registry (pylenet._core.layer_kinds())

    def _set_attrs(self, **values) -> dict:
        """Checks the attributes with the core (TypeError/ValueError naming a bad one), fills in
        the defaults and sets them on the layer; returns them. A "bias" attribute is only
        whether the layer has one: the layer keeps its Parameter (or None) under that name."""
        checked = _core.check_layer(self.core_kind, values)
        for name, value in checked.items():
            if name != "bias":
                setattr(self, name, value)
        return checked

    def core_attrs(self) -> dict:
        """The layer's attributes as the core takes them (bias: whether it has one)."""
        out = {}
        for attr in KINDS[self.core_kind]["attrs"]:
            value = getattr(self, attr["name"])
            if attr["name"] == "bias":
                value = value is not None
            out[attr["name"]] = value
        return out

    def output_shape(self, in_shape):
        return tuple(_core.layer_output_shape(self.core_kind, self.core_attrs(), tuple(in_shape)))


def _uniform(rng: np.random.Generator, shape: tuple, bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


class Conv2d(CoreLayer):
    """2-D convolution, weight (K, C, R, R); PyTorch's default init U(+-1/sqrt(C*R*R))."""

    core_kind = "conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, bias: bool = True, rng: np.random.Generator | None = None):
        self._set_attrs(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        stride=stride, padding=padding, bias=bias)
        rng = rng if rng is not None else np.random.default_rng()
        k, c = self.kernel_size, self.in_channels
        bound = 1.0 / math.sqrt(c * k * k)
        self.weight = Parameter(_uniform(rng, (self.out_channels, c, k, k), bound))
        self.bias = Parameter(_uniform(rng, (self.out_channels,), bound)) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.conv2d_forward(x, self.weight.data, b, self.stride, self.padding)

    def backward(self, dy):
        x = self._cached(self._x)
        dx, dw, db = ops.conv2d_backward(x, self.weight.data, dy, self.stride, self.padding)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Linear(CoreLayer):
    """Fully connected y = x W^T + b, weight (O, I); init U(+-1/sqrt(I)) as PyTorch."""

    core_kind = "linear"

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 rng: np.random.Generator | None = None):
        self._set_attrs(in_features=in_features, out_features=out_features, bias=bias)
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(_uniform(rng, (self.out_features, self.in_features), bound))
        self.bias = Parameter(_uniform(rng, (self.out_features,), bound)) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.linear_forward(x, self.weight.data, b)

    def backward(self, dy):
        x = self._cached(self._x)
        dx, dw, db = ops.linear_backward(x, self.weight.data, dy)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class _Pool(CoreLayer):
    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        self._set_attrs(kernel_size=kernel_size, stride=stride)
        self._shape = None

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool):
    """Max pooling; keeps the argmax for backward (gradient 1 at the max, 0 elsewhere)."""

    core_kind = "maxpool2d"
    _argmax = None

    def forward(self, x):
        y, argmax = ops.maxpool2d_forward(x, self.kernel_size, self.stride)
        self._shape, self._argmax = (x.shape, argmax) if self.training else (None, None)
        return y

    def backward(self, dy):
        shape = self._cached(self._shape)
        return ops.maxpool2d_backward(dy, self._argmax, shape)


class AvgPool2d(_Pool):
    """Average pooling (the paper's subsampling without its trainable coefficient)."""

    core_kind = "avgpool2d"

    def forward(self, x):
        self._shape = np.shape(x) if self.training else None
        return ops.avgpool2d_forward(x, self.kernel_size, self.stride)

    def backward(self, dy):
        return ops.avgpool2d_backward(dy, self._cached(self._shape), self.kernel_size, self.stride)


class AdaptiveAvgPool2d(CoreLayer):
    """Global average pooling, PyTorch's AdaptiveAvgPool2d(1): (C, H, W) -> (C, 1, 1), the mean
    of each map. output_size must be 1 (the only size pylenet runs)."""

    core_kind = "global_avgpool2d"

    def __init__(self, output_size: int = 1):
        self._set_attrs(output_size=output_size)
        self._shape = None

    def forward(self, x):
        self._shape = np.shape(x) if self.training else None
        return ops.global_avgpool2d_forward(x)

    def backward(self, dy):
        return ops.global_avgpool2d_backward(dy, self._cached(self._shape))

    def extra_repr(self):
        return f"output_size={self.output_size}"


class _Elementwise(CoreLayer):
    """An element-wise kind: forward and backward run the core's formula for it (the one the
    fused engine and the GPU run), its float attributes (if any) in registry order."""

    _x = _y = None

    def _ab(self) -> tuple:
        values = [float(getattr(self, a["name"])) for a in KINDS[self.core_kind]["attrs"]]
        return tuple(values + [0.0, 0.0])[:2]

    def forward(self, x):
        y = ops.elementwise_forward(self.core_kind, x, *self._ab())
        self._x, self._y = (x, y) if self.training else (None, None)
        return y

    def backward(self, dy):
        y = self._cached(self._y)
        return ops.elementwise_backward(self.core_kind, self._x, y, dy, *self._ab())


class ReLU(_Elementwise):
    """max(x, 0); NaN stays NaN."""

    core_kind = "relu"


class Sigmoid(_Elementwise):
    """The logistic sigmoid 1 / (1 + exp(-x)); backward dy * y * (1 - y)."""

    core_kind = "sigmoid"


class Tanh(_Elementwise):
    """tanh(x); backward dy * (1 - y^2)."""

    core_kind = "tanh"


class LeakyReLU(_Elementwise):
    """x for x > 0, else negative_slope * x (PyTorch's default slope 0.01)."""

    core_kind = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01):
        self._set_attrs(negative_slope=negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope:g}"


class ScaledTanh(_Elementwise):
    """LeCun 1998's squashing function 1.7159 tanh(2x/3) (f(+-1) = +-1); backward from the output."""

    core_kind = "scaled_tanh"


class Rescale(_Elementwise):
    """y = scale * x + shift with two fixed numbers, no parameters: maps pylenet's normalised
    input onto another range (LeNet5(variant="lecun98"): the paper's -0.1 / 1.175 levels)."""

    core_kind = "rescale"

    def __init__(self, scale: float, shift: float):
        self._set_attrs(scale=scale, shift=shift)

    @property
    def scale_shift(self) -> tuple:
        """(scale, shift)."""
        return (self.scale, self.shift)

    def extra_repr(self):
        return f"scale={self.scale:.6g}, shift={self.shift:.6g}"


def _connection_table(connections, rows: int, cols: int) -> tuple:
    """connections as a tuple of `rows` tuples of `cols` ints, each 0 or 1 (ValueError otherwise)."""
    table = tuple(tuple(int(v) for v in row) for row in connections)
    if len(table) != rows or any(len(row) != cols for row in table):
        raise ValueError(f"connections must be {rows} rows (out_channels) of {cols} 0/1 entries "
                         f"(in_channels), got {[len(row) for row in table]}")
    if any(v not in (0, 1) for row in table for v in row):
        raise ValueError("connections must hold only 0 and 1")
    return table


class MaskedConv2d(Conv2d):
    """Conv2d whose output map k reads only the input maps c with connections[k][c] == 1 (the
    1998 C3's Table I, pylenet.lecun98.C3_CONNECTIONS).

    The weight keeps its (K, C, R, R) shape; forward uses weight * mask and backward masks the
    weight gradient, so the unconnected planes, zeroed here, stay 0 under any optimizer (weight
    decay included). num_parameters counts only the connected weights and the biases.
    """

    core_kind = "masked_conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, connections,
                 stride: int = 1, padding: int = 0, bias: bool = True,
                 rng: np.random.Generator | None = None):
        table = _connection_table(connections, out_channels, in_channels)
        self._set_attrs(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size,
                        stride=stride, padding=padding, bias=bias, connections=table)
        self.connections = table
        rng = rng if rng is not None else np.random.default_rng()
        k = self.kernel_size
        bound = 1.0 / math.sqrt(in_channels * k * k)
        self.weight = Parameter(_uniform(rng, (out_channels, in_channels, k, k), bound))
        self.bias = Parameter(_uniform(rng, (out_channels,), bound)) if bias else None
        self._x = None
        self.weight.data *= self.mask[:, :, None, None]

    @property
    def mask(self) -> np.ndarray:
        """The connection table as a float32 (K, C) array of 0s and 1s."""
        return np.array(self.connections, dtype=np.float32)

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.masked_conv2d_forward(x, self.weight.data, self.mask, b, self.stride, self.padding)

    def backward(self, dy):
        x = self._cached(self._x)
        dx, dw, db = ops.masked_conv2d_backward(x, self.weight.data, self.mask, dy,
                                                self.stride, self.padding)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def num_parameters(self) -> int:
        """Connected weights (kernel_size^2 per connection) plus the biases."""
        k = self.kernel_size
        return int(sum(map(sum, self.connections))) * k * k + (self.out_channels if self.bias is not None else 0)

    def extra_repr(self):
        return super().extra_repr() + f", connections={int(sum(map(sum, self.connections)))}"


class Subsample2d(_Pool):
    """LeCun 1998's trainable subsampling (S2, S4): y[c] = weight[c] * (window sum of x[c]) +
    bias[c]; weight and bias (C,), initialised U(+-1/sqrt(kernel_size^2)) as the fan-in rule."""

    core_kind = "subsample2d"

    def __init__(self, channels: int, kernel_size: int = 2, stride: int | None = None, *,
                 bias: bool = True, rng: np.random.Generator | None = None):
        self._set_attrs(channels=channels, kernel_size=kernel_size, stride=stride, bias=bias)
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / self.kernel_size
        self.weight = Parameter(_uniform(rng, (self.channels,), bound))
        self.bias = Parameter(_uniform(rng, (self.channels,), bound)) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.subsample2d_forward(x, self.weight.data, b, self.kernel_size, self.stride)

    def backward(self, dy):
        x = self._cached(self._x)
        dx, dw, db = ops.subsample2d_backward(x, self.weight.data, dy, self.kernel_size, self.stride)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def extra_repr(self):
        return f"{self.channels}, " + super().extra_repr()


class RBF(CoreLayer):
    """Euclidean RBF output units (LeCun 1998): y_i = sum_j (x_j - centres[i][j])^2.

    The outputs are penalties (the smallest is the prediction; pylenet.engine.class_scores
    turns them into scores). The centres (out_features, in_features) are fixed, not a
    Parameter: kept as a tuple of tuples, never trained.
    """

    core_kind = "rbf"

    def __init__(self, in_features: int, out_features: int, *, centres):
        centres = tuple(tuple(float(v) for v in row) for row in centres)
        if len(centres) != out_features or any(len(r) != in_features for r in centres):
            raise ValueError(f"RBF: centres must be {out_features} rows of {in_features} numbers")
        self._set_attrs(in_features=in_features, out_features=out_features, centres=centres)
        self.centres = centres
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        return ops.rbf_forward(x, self.centres)

    def backward(self, dy):
        return ops.rbf_backward(self._cached(self._x), self.centres, dy)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class Flatten(CoreLayer):
    """(N, C, H, W) -> (N, C*H*W); a view, no copy."""

    core_kind = "flatten"

    _shape = None

    def forward(self, x):
        x = np.asarray(x)
        self._shape = x.shape if self.training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return np.asarray(dy).reshape(self._cached(self._shape))


class _BatchNorm(CoreLayer):
    """Batch normalisation with PyTorch's semantics: in training, each channel is normalised
    by the batch's mean and biased variance (over the whole batch, whatever the thread count)
    and the running statistics move by `momentum` towards the mean and the unbiased variance;
    in evaluation the running statistics normalise. weight (gamma, ones) and bias (beta,
    zeros) when affine. Buffers running_mean (zeros), running_var (ones) and
    num_batches_tracked (int64), as PyTorch names them."""

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = True):
        self._set_attrs(num_features=num_features, eps=eps, momentum=momentum, affine=affine)
        c = self.num_features
        self.weight = Parameter(np.ones(c, np.float32)) if self.affine else None
        self.bias = Parameter(np.zeros(c, np.float32)) if self.affine else None
        self.running_mean = np.zeros(c, np.float32)
        self.running_var = np.ones(c, np.float32)
        self.num_batches_tracked = np.zeros((), np.int64)
        self._saved = None

    def forward(self, x):
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        if not self.training:
            self._saved = None
            return ops.batchnorm_forward_eval(x, w, b, self.running_mean, self.running_var, self.eps)
        y, mean, invstd, rm, rv = ops.batchnorm_forward_train(x, w, b, self.running_mean, self.running_var,
                                                              self.momentum, self.eps)
        self.running_mean[...] = rm
        self.running_var[...] = rv
        self.num_batches_tracked += 1
        self._saved = (x, mean, invstd)
        return y

    def backward(self, dy):
        x, mean, invstd = self._cached(self._saved)
        w = self.weight.data if self.weight is not None else None
        dx, dw, db = ops.batchnorm_backward(x, dy, mean, invstd, w, self.eps)
        if self.weight is not None:
            self.weight.set_grad(dw)
            self.bias.set_grad(db)
        return dx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps:g}, momentum={self.momentum:g}, affine={self.affine}"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (C, H, W) maps over the batch and the H x W positions."""

    core_kind = "batchnorm2d"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of flat (C,) features over the batch (input (N, C))."""

    core_kind = "batchnorm1d"


class Dropout(CoreLayer):
    """Dropout (PyTorch's inverted dropout): in training each value is zeroed with probability
    p and the rest are scaled by 1/(1-p); in evaluation the input passes through unchanged.

    The mask is a hash of (seed, epoch, the layer's position, the sample's index in the epoch,
    the element), so the same run gives the same bits for any thread count, on the fused engine
    and layer by layer alike. fit() sets seed, epoch and sample indices for every step; a
    forward outside fit draws from (0, 0, a counter that each call advances).
    """

    core_kind = "dropout"

    def __init__(self, p: float = 0.5):
        self._set_attrs(p=p)
        self.noise = (0, 0, 0)  # (seed, epoch, index of the next sample)
        self.position = 0       # the layer's index in its Sequential (set by Sequential.forward)
        self._key = None

    def forward(self, x):
        if not self.training:
            self._key = None
            return x
        seed, epoch, first = self.noise
        self._key = (seed, epoch, self.position, first)
        self.noise = (seed, epoch, first + len(x))
        return ops.dropout_forward(x, self.p, seed, epoch, self.position, first)

    def backward(self, dy):
        seed, epoch, position, first = self._cached(self._key)
        return ops.dropout_backward(dy, self.p, seed, epoch, position, first)

    def extra_repr(self):
        return f"p={self.p:g}"


class Sequential(Module):
    """Named layers run in order; backward runs them in reverse.

    input_shape (C, H, W), optional: what one sample looks like. fit, evaluate and predict pad
    uint8 MNIST digits (28x28) to it, e.g. (1, 28, 28) for none; without it, to LeNet-5's
    32x32. summary() starts from it."""

    input_shape = None

    def __init__(self, *layers, input_shape: tuple | None = None):
        if input_shape is not None:
            shape = tuple(input_shape)
            if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape):
                raise ValueError(f"Sequential: input_shape must be (C, H, W) of positive ints, got {input_shape!r}")
            self.input_shape = tuple(int(d) for d in shape)
        self.layers: list[tuple[str, Module]] = []
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} ({name!r}) is not a layer: {layer!r}")
            self.layers.append((name, layer))

    def forward(self, x):
        for i, (_, layer) in enumerate(self.layers):
            if isinstance(layer, Dropout):
                layer.position = i  # its noise stream: the same index the fused engine uses
            x = layer.forward(x)
        return x

    def backward(self, dy):
        for _, layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def named_parameters(self, prefix: str = ""):
        out = []
        for name, layer in self.layers:
            out += layer.named_parameters(f"{prefix}{name}.")
        return out

    def named_buffers(self, prefix: str = ""):
        out = []
        for name, layer in self.layers:
            out += layer.named_buffers(f"{prefix}{name}.")
        return out

    def _state_items(self, prefix: str = ""):
        out = []
        for name, layer in self.layers:
            out += layer._state_items(f"{prefix}{name}.")
        return out

    def train(self, mode: bool = True):
        self.training = bool(mode)
        for _, layer in self.layers:
            layer.train(mode)
        return self

    def set_noise(self, seed: int, epoch: int, first: int) -> None:
        """Sets where every Dropout draws its next mask from: the run's seed, the epoch and the
        index in the epoch of the next batch's first sample (fit calls it for every step)."""
        for _, layer in self.layers:
            if isinstance(layer, Dropout):
                layer.noise = (int(seed), int(epoch), int(first))
            elif isinstance(layer, Sequential):
                layer.set_noise(seed, epoch, first)

    def _set_device(self, device: str) -> None:
        self._device = device
        for _, layer in self.layers:
            layer._set_device(device)

    def output_shape(self, in_shape):
        for _, layer in self.layers:
            in_shape = layer.output_shape(in_shape)
        return in_shape

    def num_parameters(self) -> int:
        """Total count of trainable scalars, as each layer counts them (a MaskedConv2d counts
        only its connected weights)."""
        return sum(layer.num_parameters() for _, layer in self.layers)

    def summary(self, input_shape: tuple | None = None) -> str:
        """A table of layer name, type, output shape and parameter count, from input_shape (the
        model's own, else (1, 32, 32))."""
        input_shape = input_shape or self.input_shape or (1, 32, 32)
        rows = [("layer", "type", "output shape", "params"), ("input", "", "x".join(map(str, input_shape)), "")]
        shape = tuple(input_shape)
        for name, layer in self.layers:
            shape = layer.output_shape(shape)
            rows.append((name, repr(layer), "x".join(map(str, shape)), f"{layer.num_parameters():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"total trainable parameters: {self.num_parameters():,}")
        return "\n".join(lines)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({name}): {layer!r}" for name, layer in self.layers)
        return f"{type(self).__name__}(\n{inner}\n)"


# The built-in layer class of each registry kind, by the class name the registry gives.
LAYER_CLASSES = {info["class"]: globals()[info["class"]] for info in KINDS.values()
                 if info["class"] in globals()}
