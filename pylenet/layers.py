"""Layers on the core ops: each caches in `forward` what its `backward` needs.

Parameters and gradients are numpy float32 arrays. `backward(dy)` returns the gradient with
respect to the layer's input and overwrites (never accumulates) each parameter's `.grad` in
place (see Parameter), as the fused engine does.
"""
from __future__ import annotations

import math

import numpy as np

from pylenet import ops


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
    """Base class: forward/backward, named parameters, train/eval mode."""

    training = True

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

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: copy of the parameter's array} in named_parameters() order, like PyTorch's."""
        return {name: p.data.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list, list]:
        """Copies arrays into the parameters by name; returns (missing, unexpected) key lists.

        Every key and shape is checked before anything is written, so a bad state changes
        nothing. strict=True refuses missing or unexpected keys (ValueError naming them);
        shapes must always match.
        """
        if not hasattr(state, "keys") or not hasattr(state, "__getitem__"):
            raise TypeError(f"load_state_dict: state must be a mapping of name -> array, got "
                            f"{type(state).__name__}")
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise ValueError(f"load_state_dict: missing {missing}, unexpected {unexpected} "
                             f"(the model has {list(params)})")
        values = {}
        for name in params:
            if name in state:
                value = state[name]
                if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                    raise TypeError(f"load_state_dict: {name} must be a numeric numpy array, got "
                                    f"{getattr(value, 'dtype', type(value).__name__)}")
                if value.shape != params[name].data.shape:
                    raise ValueError(f"load_state_dict: {name} has shape {value.shape}, the model "
                                     f"expects {params[name].data.shape}")
                values[name] = value
        for name, value in values.items():
            params[name].data[...] = value
        return missing, unexpected

    def num_parameters(self) -> int:
        """Total count of trainable scalars."""
        return int(sum(p.data.size for p in self.parameters()))

    def zero_grad(self) -> None:
        """Sets every parameter's gradient to zero."""
        for p in self.parameters():
            p.grad[...] = 0.0

    def train(self, mode: bool = True) -> "Module":
        """Switches to training mode (caches for backward); returns self."""
        self.training = mode
        return self

    _device = "cpu"

    @property
    def device(self) -> str:
        """Where fit, evaluate and predict run this model by default: "cpu" or "cuda"."""
        return self._device

    def to(self, device) -> "Module":
        """Sets the device the model runs on ("cpu", "cuda", "cuda:0" or "auto"); returns self.

        The parameters stay numpy arrays on the host either way; on "cuda" a copy lives on the
        GPU while fit, evaluate and predict run, and training writes the results back. Raises
        pylenet.CudaUnavailableError (saying why) when CUDA cannot be used, and TypeError for a
        model the GPU cannot run (anything but a Sequential of built-in layers)."""
        from pylenet.device import resolve_device
        device = resolve_device(device)
        if device == "cuda":
            from pylenet.gpu import require_supported
            require_supported(self)
        self._set_device(device)
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

    def eval(self) -> "Module":
        """Switches to inference mode (no caches kept); returns self."""
        return self.train(False)

    def __call__(self, x):
        return self.forward(x)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"


def _uniform(rng: np.random.Generator, shape: tuple, bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


class Conv2d(Module):
    """2-D convolution, weight (K, C, R, R); PyTorch's default init U(+-1/sqrt(C*R*R))."""

    core_kind = "conv2d"  # its entry in the core registry (pylenet.engine)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, bias: bool = True, rng: np.random.Generator | None = None):
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.stride = _positive_int("stride", stride)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
            raise TypeError(f"padding must be an int, got {type(padding).__name__} {padding!r}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = int(padding)
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = Parameter(_uniform(rng, (out_channels, in_channels, kernel_size, kernel_size), bound))
        self.bias = Parameter(_uniform(rng, (out_channels,), bound)) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.conv2d_forward(x, self.weight.data, b, self.stride, self.padding)

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError("Conv2d.backward called without a forward in training mode")
        dx, dw, db = ops.conv2d_backward(self._x, self.weight.data, dy, self.stride, self.padding)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def output_shape(self, in_shape):
        c, h, w = in_shape
        k, p, s = self.kernel_size, self.padding, self.stride
        return (self.out_channels, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Linear(Module):
    """Fully connected y = x W^T + b, weight (O, I); init U(+-1/sqrt(I)) as PyTorch."""

    core_kind = "linear"  # its entry in the core registry (pylenet.engine)

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 rng: np.random.Generator | None = None):
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        rng = rng if rng is not None else np.random.default_rng()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter(_uniform(rng, (out_features, in_features), bound))
        self.bias = Parameter(_uniform(rng, (out_features,), bound)) if bias else None
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        b = self.bias.data if self.bias is not None else None
        return ops.linear_forward(x, self.weight.data, b)

    def backward(self, dy):
        if self._x is None:
            raise RuntimeError("Linear.backward called without a forward in training mode")
        dx, dw, db = ops.linear_backward(self._x, self.weight.data, dy)
        self.weight.set_grad(dw)
        if self.bias is not None:
            self.bias.set_grad(db)
        return dx

    def output_shape(self, in_shape):
        return (self.out_features,)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class _Pool(Module):
    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.stride = _positive_int("stride", stride if stride is not None else kernel_size)
        self._shape = None

    def output_shape(self, in_shape):
        c, h, w = in_shape
        k, s = self.kernel_size, self.stride
        return (c, (h - k) // s + 1, (w - k) // s + 1)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class MaxPool2d(_Pool):
    """Max pooling; keeps the argmax for backward (gradient 1 at the max, 0 elsewhere)."""

    core_kind = "maxpool2d"  # its entry in the core registry (pylenet.engine)

    def forward(self, x):
        y, argmax = ops.maxpool2d_forward(x, self.kernel_size, self.stride)
        self._shape, self._argmax = (x.shape, argmax) if self.training else (None, None)
        return y

    def backward(self, dy):
        if self._shape is None:
            raise RuntimeError("MaxPool2d.backward called without a forward in training mode")
        return ops.maxpool2d_backward(dy, self._argmax, self._shape)


class AvgPool2d(_Pool):
    """Average pooling (the paper's subsampling without its trainable coefficient)."""

    core_kind = "avgpool2d"  # its entry in the core registry (pylenet.engine)

    def forward(self, x):
        self._shape = np.shape(x) if self.training else None
        return ops.avgpool2d_forward(x, self.kernel_size, self.stride)

    def backward(self, dy):
        if self._shape is None:
            raise RuntimeError("AvgPool2d.backward called without a forward in training mode")
        return ops.avgpool2d_backward(dy, self._shape, self.kernel_size, self.stride)


class ReLU(Module):
    """max(x, 0)."""

    core_kind = "relu"  # its entry in the core registry (pylenet.engine)

    _x = None

    def forward(self, x):
        self._x = x if self.training else None
        return ops.relu_forward(x)

    def backward(self, dy):
        return ops.relu_backward(self._cached(self._x), dy)


class _FromOutput(Module):
    """An activation whose derivative is a function of its output y (sigmoid, tanh)."""

    _y = None
    _forward = _backward = None  # the ops pair, set by each subclass

    def forward(self, x):
        y = type(self)._forward(x)
        self._y = y if self.training else None
        return y

    def backward(self, dy):
        return type(self)._backward(self._cached(self._y), dy)


class Sigmoid(_FromOutput):
    """The logistic sigmoid 1 / (1 + exp(-x)); backward dy * y * (1 - y)."""

    core_kind = "sigmoid"  # its entry in the core registry (pylenet.engine)

    _forward, _backward = ops.sigmoid_forward, ops.sigmoid_backward


class Tanh(_FromOutput):
    """tanh(x); backward dy * (1 - y^2)."""

    core_kind = "tanh"  # its entry in the core registry (pylenet.engine)

    _forward, _backward = ops.tanh_forward, ops.tanh_backward


class ScaledTanh(_FromOutput):
    """LeCun 1998's squashing function 1.7159 tanh(2x/3) (f(+-1) = +-1); backward from the output."""

    core_kind = "scaled_tanh"  # its entry in the core registry (pylenet.engine)

    _forward, _backward = ops.scaled_tanh_forward, ops.scaled_tanh_backward


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

    core_kind = "masked_conv2d"  # its entry in the core registry (pylenet.engine)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, connections,
                 stride: int = 1, padding: int = 0, bias: bool = True,
                 rng: np.random.Generator | None = None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=bias, rng=rng)
        self.connections = _connection_table(connections, self.out_channels, self.in_channels)
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
        if self._x is None:
            raise RuntimeError("MaskedConv2d.backward called without a forward in training mode")
        dx, dw, db = ops.masked_conv2d_backward(self._x, self.weight.data, self.mask, dy,
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

    core_kind = "subsample2d"  # its entry in the core registry (pylenet.engine)

    def __init__(self, channels: int, kernel_size: int = 2, stride: int | None = None, *,
                 bias: bool = True, rng: np.random.Generator | None = None):
        super().__init__(kernel_size, stride)
        self.channels = _positive_int("channels", channels)
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


class RBF(Module):
    """Euclidean RBF output units (LeCun 1998): y_i = sum_j (x_j - centres[i][j])^2.

    The outputs are penalties (the smallest is the prediction; pylenet.engine.class_scores
    turns them into scores). The centres (out_features, in_features) are fixed, not a
    Parameter: kept as a tuple of tuples, never trained.
    """

    core_kind = "rbf"  # its entry in the core registry (pylenet.engine)

    def __init__(self, in_features: int, out_features: int, *, centres):
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        self.centres = tuple(tuple(float(v) for v in row) for row in centres)
        if len(self.centres) != out_features or any(len(r) != in_features for r in self.centres):
            raise ValueError(f"RBF: centres must be {out_features} rows of {in_features} numbers")
        self._x = None

    def forward(self, x):
        self._x = x if self.training else None
        return ops.rbf_forward(x, self.centres)

    def backward(self, dy):
        return ops.rbf_backward(self._cached(self._x), self.centres, dy)

    def output_shape(self, in_shape):
        return (self.out_features,)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}"


class Rescale(Module):
    """y = scale * x + shift with two fixed numbers, no parameters: maps pylenet's normalised
    input onto another range (LeNet5(variant="lecun98"): the paper's -0.1 / 1.175 levels)."""

    core_kind = "rescale"  # its entry in the core registry (pylenet.engine)

    def __init__(self, scale: float, shift: float):
        self.scale, self.shift = float(scale), float(shift)

    @property
    def scale_shift(self) -> tuple:
        """(scale, shift), as the core takes them."""
        return (self.scale, self.shift)

    def forward(self, x):
        return ops.rescale_forward(x, self.scale, self.shift)

    def backward(self, dy):
        return ops.rescale_backward(dy, self.scale)

    def extra_repr(self):
        return f"scale={self.scale:.6g}, shift={self.shift:.6g}"


class Flatten(Module):
    """(N, C, H, W) -> (N, C*H*W); a view, no copy."""

    core_kind = "flatten"  # its entry in the core registry (pylenet.engine)

    _shape = None

    def forward(self, x):
        x = np.asarray(x)
        self._shape = x.shape if self.training else None
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return np.asarray(dy).reshape(self._cached(self._shape))

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)


class Sequential(Module):
    """Named layers run in order; backward runs them in reverse."""

    def __init__(self, *layers):
        self.layers: list[tuple[str, Module]] = []
        for i, item in enumerate(layers):
            name, layer = item if isinstance(item, tuple) else (str(i), item)
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} ({name!r}) is not a layer: {layer!r}")
            self.layers.append((name, layer))

    def forward(self, x):
        for _, layer in self.layers:
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

    def train(self, mode: bool = True):
        self.training = mode
        for _, layer in self.layers:
            layer.train(mode)
        return self

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

    def summary(self, input_shape: tuple = (1, 32, 32)) -> str:
        """A table of layer name, type, output shape and parameter count."""
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
