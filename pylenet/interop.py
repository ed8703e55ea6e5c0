"""PyTorch round trip: to_torch copies a pylenet model into torch.nn modules, from_torch reads a LeNet-5 back.

torch is optional and imported only when one of these functions is called. Both directions
use the layer descriptions of pylenet.engine, so they cover exactly the layers the core runs:
Conv2d, Linear, MaxPool2d, AvgPool2d, ReLU, Tanh, Sigmoid and Flatten, in (nested) Sequentials.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from pylenet.engine import _describe
from pylenet.layers import Sequential
from pylenet.models import ACTIVATIONS, POOLINGS, LeNet5

TORCH_EXTRA = "pip install 'pylenet[torch]'"

# LeNet5's trainable layers in order, and the weight shape each has for 10 classes; the last
# layer's first dimension is the number of classes. C5 may be a Conv2d(16, 120, 5) instead of
# a Linear(400, 120): over a 5x5 input the two are the same map.
_LENET_LAYERS = (("C1", (6, 1, 5, 5)), ("C3", (16, 6, 5, 5)), ("F5", (120, 400)),
                 ("F6", (84, 120)), ("output", (None, 84)))


def _torch():
    """The torch module, or an ImportError that names the extra to install."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"pylenet.interop needs PyTorch, which is not installed: {TORCH_EXTRA}") from e
    return torch


# The core kinds that ONNX and PyTorch export write out.
_EXPORTABLE = ("conv2d", "linear", "maxpool2d", "avgpool2d", "relu", "tanh", "sigmoid", "flatten")


def layer_chain(model, prefix: str = "") -> list[tuple[str, object, tuple]]:
    """(dotted name, layer, core description) of every leaf layer in order; TypeError for an unsupported one."""
    if not isinstance(model, Sequential):
        raise TypeError(f"expected a pylenet Sequential (e.g. LeNet5), got {type(model).__name__}")
    chain = []
    for name, layer in model.layers:
        if isinstance(layer, Sequential):
            chain += layer_chain(layer, f"{prefix}{name}.")
            continue
        desc = _describe(layer)
        if desc is not None and desc[0] not in _EXPORTABLE:  # the lecun98 layers
            desc = None
        if desc is None:
            raise TypeError(f"layer {prefix}{name!s} is a {type(layer).__name__}, which cannot be "
                            f"exported; supported: Conv2d, Linear, MaxPool2d, AvgPool2d, ReLU, "
                            f"Tanh, Sigmoid, Flatten and Sequential")
        chain.append((prefix + name, layer, desc[:7]))  # no fixed array in these kinds
    return chain


# ----------------------------------------------------------------------------------- to_torch

def to_torch(model):
    """A torch.nn.Sequential (eval mode, float32) computing the same function as `model`.

    Module names mirror pylenet's, so its state_dict keys are model.named_parameters() names;
    the input is what model.forward takes (for LeNet5: normalised float32 (N, 1, 32, 32)).
    """
    torch = _torch()
    layer_chain(model)  # refuses an unsupported layer before anything is built
    with torch.no_grad():
        return _to_torch(torch, model).eval()


def _to_torch(torch, model):
    """The nn.Sequential for one (possibly nested) pylenet Sequential."""
    nn = torch.nn
    mods = OrderedDict()
    for name, layer in model.layers:
        if isinstance(layer, Sequential):
            mods[name] = _to_torch(torch, layer)
            continue
        kind, in_f, out_f, kernel, stride, pad, bias = _describe(layer)[:7]
        if kind == "conv2d":
            m = nn.Conv2d(in_f, out_f, kernel, stride=stride, padding=pad, bias=bias)
        elif kind == "linear":
            m = nn.Linear(in_f, out_f, bias=bias)
        elif kind == "maxpool2d":
            m = nn.MaxPool2d(kernel, stride=stride)
        elif kind == "avgpool2d":
            m = nn.AvgPool2d(kernel, stride=stride)
        else:
            m = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
                 "flatten": nn.Flatten}[kind]()
        for pname in ("weight", "bias"):
            p = getattr(layer, pname, None)
            if p is not None and hasattr(p, "data"):
                target = getattr(m, pname)
                if tuple(target.shape) != p.data.shape:
                    raise ValueError(f"layer {name}: {pname} has shape {p.data.shape}, expected "
                                     f"{tuple(target.shape)}")
                target.copy_(torch.from_numpy(np.array(p.data, dtype=np.float32)))
        mods[name] = m
    return nn.Sequential(mods)


# --------------------------------------------------------------------------------- from_torch

def from_torch(source, *, activation: str | None = None, pooling: str | None = None) -> LeNet5:
    """The pylenet LeNet5 holding the weights of a PyTorch LeNet-5 (an nn.Module or its state_dict).

    Expects unpadded Conv2d 1->6 and 6->16 (5x5), then Linear 400->120 (or a 5x5 Conv2d for C5),
    120->84, 84->classes. activation/pooling default to the module's own layers, else relu/max.
    """
    torch = _torch()
    for arg, value, options in (("activation", activation, ACTIVATIONS), ("pooling", pooling, POOLINGS)):
        if value is not None and value not in options:
            raise ValueError(f"from_torch: {arg} must be one of {sorted(options)}, got {value!r}")
    if isinstance(source, torch.nn.Module):
        found_act, found_pool = _inspect_module(torch, source)
        activation = _agree("activation", activation, found_act)
        pooling = _agree("pooling", pooling, found_pool)
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError(f"from_torch: expected a torch.nn.Module or a state_dict mapping, "
                        f"got {type(source).__name__}")
    weights = _lenet_weights(torch, state)
    model = LeNet5(activation=activation or "relu", pooling=pooling or "max",
                   num_classes=weights["output.weight"].shape[0])
    for name, param in model.named_parameters():
        param.data[...] = weights[name]
    return model


def _agree(what: str, given, found):
    """The argument when given, else what the module showed; ValueError when the two differ."""
    if given is not None and found is not None and given != found:
        raise ValueError(f"from_torch: {what}={given!r}, but the module's own layers use {found!r}")
    return given if given is not None else found


def _inspect_module(torch, module):
    """(activation, pooling) shown by the module's layers (None where it has none); checks their settings."""
    nn = torch.nn
    acts, pools = set(), set()
    for name, m in module.named_modules():
        where = f"from_torch: layer {name or type(module).__name__!r} ({type(m).__name__})"
        if isinstance(m, nn.Conv2d):
            padding = (0, 0) if m.padding == "valid" else tuple(m.padding)
            if tuple(m.stride) != (1, 1) or padding != (0, 0) or tuple(m.dilation) != (1, 1) \
                    or m.groups != 1:
                raise ValueError(
                    f"{where} has stride {tuple(m.stride)}, padding {m.padding}, dilation "
                    f"{tuple(m.dilation)}, groups {m.groups}; LeNet5 needs 1, 0, 1, 1 (it takes "
                    f"32x32 inputs: MNIST's 28x28 zero-padded before normalising)")
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            st = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
            pd = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
            if ks != (2, 2) or st != (2, 2) or pd != (0, 0) or m.ceil_mode:
                raise ValueError(f"{where} has kernel {ks}, stride {st}, padding {pd}, ceil_mode "
                                 f"{m.ceil_mode}; LeNet5 pools 2x2 with stride 2, no padding")
            pools.add("max" if isinstance(m, nn.MaxPool2d) else "avg")
        elif isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            acts.add({nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}[type(m)])
        elif isinstance(m, (nn.Linear, nn.Flatten, nn.Sequential, nn.Identity)) or m is module:
            continue
        elif any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
            raise ValueError(f"{where} is not part of LeNet5 and has weights of its own; "
                             f"from_torch reads Conv2d and Linear layers only")
    for what, found in (("activations", acts), ("poolings", pools)):
        if len(found) > 1:
            raise ValueError(f"from_torch: the module mixes {what} {sorted(found)}; LeNet5 uses one")
    return (acts.pop() if acts else None), (pools.pop() if pools else None)


def _lenet_weights(torch, state: Mapping) -> dict:
    """LeNet5's parameters by name, read from a state_dict in layer order and shape-checked."""
    layers = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"from_torch: state_dict keys must be strings, got {key!r}")
        prefix, _, leaf = key.rpartition(".")
        if leaf not in ("weight", "bias"):
            raise ValueError(f"from_torch: state_dict entry {key!r} is neither a weight nor a bias; "
                             f"LeNet5 has only Conv2d and Linear layers")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        value = np.asarray(value)
        if value.dtype.kind != "f":
            raise TypeError(f"from_torch: {key} has dtype {value.dtype}, expected floating point")
        layers.setdefault(prefix, {})[leaf] = (key, value)
    found = [(p, d["weight"][1].shape) for p, d in layers.items() if "weight" in d]
    convs = [p for p, d in layers.items() if "weight" in d and d["weight"][1].ndim == 4]
    linears = [p for p, d in layers.items() if "weight" in d and d["weight"][1].ndim == 2]
    order = convs + linears
    if len(order) != len(layers) or len(order) != len(_LENET_LAYERS):
        raise ValueError(f"from_torch: expected LeNet-5's 5 weighted layers (2 or 3 Conv2d, then "
                         f"Linear), found {[(p, tuple(s)) for p, s in found]}")
    weights = {}
    for (name, expected), prefix in zip(_LENET_LAYERS, order):
        entry = layers[prefix]
        if "bias" not in entry:
            raise ValueError(f"from_torch: layer {prefix!r} has no bias; LeNet5's layers all have one")
        key, w = entry["weight"]
        if name == "F5" and w.shape == (120, 16, 5, 5):
            w = w.reshape(120, 400)  # C5 as a convolution over the 5x5 maps: same flat order
        shape = (w.shape[0],) + expected[1:] if expected[0] is None else expected
        if w.shape != shape or (name == "output" and w.shape[0] < 2):
            raise ValueError(f"from_torch: {key} has shape {tuple(entry['weight'][1].shape)}, "
                             f"expected {shape} for LeNet5's {name}")
        bkey, b = entry["bias"]
        if b.shape != (shape[0],):
            raise ValueError(f"from_torch: {bkey} has shape {b.shape}, expected ({shape[0]},)")
        weights[f"{name}.weight"] = w.astype(np.float32)
        weights[f"{name}.bias"] = b.astype(np.float32)
    return weights
