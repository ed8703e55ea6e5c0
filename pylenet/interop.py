"""PyTorch round trip: to_torch copies a pylenet model into torch.nn modules; from_torch reads
any nn.Sequential (or module whose children run in order) of the supported layers back.

torch is optional and imported only when one of these functions is called. The mapping is the
core registry's (pylenet._core.layer_kinds()): each kind names its torch.nn class, and its
attributes are that class's arguments of the same names, so the layers covered are exactly
the registry's kinds that have a torch class.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from pylenet.engine import describe
from pylenet.layers import KINDS, LAYER_CLASSES, Parameter, Sequential
from pylenet.models import ACTIVATIONS, POOLINGS, LeNet5

TORCH_EXTRA = "pip install 'pylenet[torch]'"
# The registry kind of each torch.nn class that has one.
TORCH_KINDS = {info["torch"]: kind for kind, info in KINDS.items() if info["torch"]}
# Settings of those torch classes that pylenet has no counterpart for: each must hold the
# value given here (PyTorch's default), or from_torch refuses the layer, naming it.
_TORCH_FIXED = {
    "Conv2d": {"dilation": (1, 1), "groups": 1, "padding_mode": "zeros"},
    "MaxPool2d": {"padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
    "AvgPool2d": {"padding": 0, "ceil_mode": False, "divisor_override": None},
    "BatchNorm2d": {"track_running_stats": True},
    "BatchNorm1d": {"track_running_stats": True},
    "Flatten": {"start_dim": 1, "end_dim": -1},
}
# Input shapes from_torch tries, after the first layer's channels, when it is not told one.
_GUESSED_SIZES = (28, 32)

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


def layer_chain(model, prefix: str = "", need: str = "torch") -> list[tuple[str, object, str, dict]]:
    """(dotted name, layer, kind, attributes) of every leaf layer in order; TypeError for a
    layer with no `need` ("torch" or "onnx") mapping in the registry."""
    if not isinstance(model, Sequential):
        raise TypeError(f"expected a pylenet Sequential (e.g. LeNet5), got {type(model).__name__}")
    chain = []
    for name, layer in model.layers:
        if isinstance(layer, Sequential):
            chain += layer_chain(layer, f"{prefix}{name}.", need)
            continue
        desc = describe(layer)
        if desc is None or not KINDS[desc[0]][need]:
            supported = sorted(info["class"] for info in KINDS.values() if info[need])
            raise TypeError(f"layer {prefix}{name!s} is a {type(layer).__name__}, which cannot be "
                            f"exported; supported: {', '.join(supported)} and Sequential")
        chain.append((prefix + name, layer, desc[0], desc[1]))
    return chain


def _state_items(layer) -> list[tuple[str, np.ndarray]]:
    """A layer's parameters and buffers by their own names (weight, bias, running_mean, ...)."""
    return [(name, v.data if isinstance(v, Parameter) else v) for name, v in layer._state_items()]


# ----------------------------------------------------------------------------------- to_torch

def to_torch(model):
    """A torch.nn.Sequential (eval mode, float32) computing the same function as `model`.

    Module names mirror pylenet's, so its state_dict keys are model.state_dict()'s names
    (parameters and buffers); the input is what model.forward takes (for LeNet5: normalised
    float32 (N, 1, 32, 32)).
    """
    torch = _torch()
    layer_chain(model)  # refuses an unsupported layer before anything is built
    with torch.no_grad():
        return _to_torch(torch, model).eval()


def _to_torch(torch, model):
    """The nn.Sequential for one (possibly nested) pylenet Sequential."""
    mods = OrderedDict()
    for name, layer in model.layers:
        if isinstance(layer, Sequential):
            mods[name] = _to_torch(torch, layer)
            continue
        kind, attrs = describe(layer)
        m = getattr(torch.nn, KINDS[kind]["torch"])(**attrs)
        state = m.state_dict()
        for key, value in _state_items(layer):
            if key not in state or tuple(state[key].shape) != value.shape:
                raise ValueError(f"layer {name}: {key} has shape {value.shape}, torch's "
                                 f"{type(m).__name__} expects {tuple(state[key].shape) if key in state else 'none'}")
            state[key] = torch.from_numpy(np.array(value))
        m.load_state_dict(state)
        mods[name] = m
    return torch.nn.Sequential(mods)


# --------------------------------------------------------------------------------- from_torch

def from_torch(source, *, activation: str | None = None, pooling: str | None = None,
               input_shape: tuple | None = None):
    """A pylenet model holding the layers and weights of a PyTorch one.

    source: an nn.Module, or the state_dict of a LeNet-5. A module that is a LeNet-5 (two
    unpadded 5x5 convolutions 1->6 and 6->16, then Linear 400->120 or a 5x5 Conv2d for C5,
    120->84, 84->classes; activations as layers or in its forward) comes back as LeNet5, its
    activation and pooling read from its layers or given here. Any other nn.Sequential, or
    module whose children run in order, of the layers the registry maps (Conv2d, Linear,
    MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), BatchNorm2d/1d, Dropout, ReLU, Sigmoid, Tanh,
    Flatten, ...) comes back as a Sequential with the same layer names and state_dict keys.
    Its outputs are checked against the module's own on one random batch of input_shape
    (default: (C, 28, 28) or (C, 32, 32), whichever the layers fit), which becomes the
    Sequential's input_shape (how fit, evaluate and predict pad 28x28 digits); ValueError names
    what cannot be mapped.
    """
    torch = _torch()
    for arg, value, options in (("activation", activation, ACTIVATIONS), ("pooling", pooling, POOLINGS)):
        if value is not None and value not in options:
            raise ValueError(f"from_torch: {arg} must be one of {sorted(options)}, got {value!r}")
    if isinstance(source, Mapping):
        return _lenet_from_state(torch, source, activation, pooling)
    if not isinstance(source, torch.nn.Module):
        raise TypeError(f"from_torch: expected a torch.nn.Module or a state_dict mapping, "
                        f"got {type(source).__name__}")
    try:
        found_act, found_pool = _inspect_lenet(torch, source)
        return _lenet_from_state(torch, source.state_dict(), _agree("activation", activation, found_act),
                                 _agree("pooling", pooling, found_pool))
    except _NotLeNet:
        pass
    if activation is not None or pooling is not None:
        raise ValueError("from_torch: activation and pooling choose LeNet5's layers, but the module is "
                         "not a LeNet-5; its own layers say which they are")
    return _sequential_from_module(torch, source, input_shape)


class _NotLeNet(Exception):
    """The module is not LeNet-5 shaped (the general path reads it instead)."""


def _agree(what: str, given, found):
    """The argument when given, else what the module showed; ValueError when the two differ."""
    if given is not None and found is not None and given != found:
        raise ValueError(f"from_torch: {what}={given!r}, but the module's own layers use {found!r}")
    return given if given is not None else found


def _leaves(torch, module, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted name, module) of every leaf module in order, through nested containers."""
    children = list(module.named_children())
    if not children:
        return [(prefix.rstrip(".") or type(module).__name__, module)]
    out = []
    for name, child in children:
        out += _leaves(torch, child, f"{prefix}{name}.")
    return out


def _inspect_lenet(torch, module):
    """(activation, pooling) of a LeNet-5 shaped module (None where it shows none); _NotLeNet
    when its layers are not LeNet-5's."""
    nn = torch.nn
    acts, pools = set(), set()
    for name, m in _leaves(torch, module):
        if isinstance(m, nn.Conv2d):
            padding = (0, 0) if m.padding == "valid" else tuple(m.padding)
            if tuple(m.stride) != (1, 1) or padding != (0, 0) or tuple(m.dilation) != (1, 1) or m.groups != 1:
                raise _NotLeNet
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
            st = m.stride if isinstance(m.stride, tuple) else (m.stride,) * 2
            pd = m.padding if isinstance(m.padding, tuple) else (m.padding,) * 2
            if ks != (2, 2) or st != (2, 2) or pd != (0, 0) or m.ceil_mode:
                raise _NotLeNet
            pools.add("max" if isinstance(m, nn.MaxPool2d) else "avg")
        elif isinstance(m, (nn.ReLU, nn.Tanh, nn.Sigmoid)):
            acts.add({nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}[type(m)])
        elif not isinstance(m, (nn.Linear, nn.Flatten, nn.Identity)):
            raise _NotLeNet
    if len(acts) > 1 or len(pools) > 1:
        raise _NotLeNet
    try:
        _lenet_weights(torch, module.state_dict())
    except ValueError:
        raise _NotLeNet from None
    return (acts.pop() if acts else None), (pools.pop() if pools else None)


def _lenet_from_state(torch, state: Mapping, activation, pooling) -> LeNet5:
    """The LeNet5 of a LeNet-5 state_dict, with the given (or pylenet's default) activation and pooling."""
    weights = _lenet_weights(torch, state)
    model = LeNet5(activation=activation or "relu", pooling=pooling or "max",
                   num_classes=weights["output.weight"].shape[0])
    for name, param in model.named_parameters():
        param.data[...] = weights[name]
    return model


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


def _one(where: str, what: str, value):
    """An int from a torch setting that may be a pair ((5, 5) -> 5); ValueError for an
    unequal pair or 'same' padding."""
    if value == "valid":
        return 0
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"{where} has {what} {tuple(value)}; pylenet's layers take one value for "
                             f"both directions")
        value = value[0]
    if isinstance(value, str):
        raise ValueError(f"{where} has {what} {value!r}; pylenet takes a number")
    return value


def _layer_from_torch(torch, name: str, m):
    """The pylenet layer of one torch leaf module, with its weights and buffers copied."""
    cls = type(m).__name__
    where = f"from_torch: layer {name!r} ({cls})"
    kind = TORCH_KINDS.get(cls)
    if kind is None:
        supported = ", ".join(sorted(TORCH_KINDS))
        raise ValueError(f"{where} has no pylenet counterpart; from_torch maps {supported} "
                         f"(in an nn.Sequential or a module whose children run in order)")
    for attr, want in _TORCH_FIXED.get(cls, {}).items():
        have = getattr(m, attr, want)
        if (tuple(have) if isinstance(have, (tuple, list)) else have) != want and not (
                isinstance(want, tuple) and _one(where, attr, have) == want[0]):
            raise ValueError(f"{where} has {attr}={have!r}; pylenet supports only {want!r}")
    attrs = {}
    for attr in KINDS[kind]["attrs"]:
        value = getattr(m, attr["name"])
        if attr["name"] == "bias":
            value = value is not None
        elif attr["type"] == "int":
            value = _one(where, attr["name"], value)
        attrs[attr["name"]] = value
    layer = LAYER_CLASSES[KINDS[kind]["class"]](**attrs)
    state = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
             for k, v in m.state_dict().items()}
    ours = dict(_state_items(layer))
    for key, value in ours.items():
        if key not in state or state[key].shape != value.shape:
            raise ValueError(f"{where}: {key} has shape {state[key].shape if key in state else 'none'}, "
                             f"expected {value.shape}")
        value[...] = state[key]
    return layer


def _sequential_from_module(torch, module, input_shape) -> Sequential:
    """The general path: each leaf in order as a pylenet layer, checked against the module."""
    leaves = _leaves(torch, module)
    model = Sequential(*((name, _layer_from_torch(torch, name, m)) for name, m in leaves))
    shapes = [tuple(input_shape)] if input_shape is not None else _guess_shapes(model)
    why = ""
    for shape in shapes:
        try:
            out = model.output_shape(shape)
        except ValueError as e:
            if input_shape is not None:
                raise ValueError(f"from_torch: the layers do not fit input_shape {shape}: {e}") from None
            why = f": {e}"
            continue
        if len(out) == 1:
            _check_against(torch, module, model, shape)
            if len(shape) == 3:  # fit, evaluate and predict then pad digits to the shape found
                model.input_shape = tuple(int(d) for d in shape)
            return model
        why = f": they end in {out} per sample, not (features,)"
    raise ValueError(f"from_torch: could not tell the input shape the layers take (tried {shapes}"
                     f"{why}); pass input_shape=(C, H, W)")


def _guess_shapes(model) -> list[tuple]:
    """(C, 28, 28) and (C, 32, 32), C the first convolution's or BatchNorm2d's channels."""
    channels = 1
    for _, layer in model.layers:
        if hasattr(layer, "in_channels") or hasattr(layer, "num_features"):
            channels = getattr(layer, "in_channels", None) or layer.num_features
            break
    return [(channels, s, s) for s in _GUESSED_SIZES]


def _check_against(torch, module, model, shape: tuple) -> None:
    """ValueError unless the pylenet model computes what the module's own forward does on one
    random batch (both in evaluation mode): the children must run in order, without other
    operations between them."""
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    was_training, model_training = module.training, model.training
    module.eval()
    model.eval()
    try:
        with torch.no_grad():
            theirs = module(torch.from_numpy(x)).detach().cpu().numpy()
        ours = model.forward(x)
    finally:
        module.train(was_training)
        model.train(model_training)
    if theirs.shape != ours.shape or not np.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * (1 + np.abs(theirs).max())):
        raise ValueError(f"from_torch: the module's forward does not compute its children in order "
                         f"(its output {theirs.shape} differs from the layers run one after another); "
                         f"from_torch reads an nn.Sequential or a module whose forward calls its "
                         f"children in order and nothing else")
