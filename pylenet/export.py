"""ONNX export: a pylenet model as an ONNX graph (dynamic batch axis), checked and written atomically.

Built with the optional `onnx` package (pip install 'pylenet[onnx]'), imported only here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pylenet._version import __version__
from pylenet.checkpoint import atomic_write
from pylenet.data import MNIST_MEAN, MNIST_STD
from pylenet import _core
from pylenet.interop import layer_chain
from pylenet.layers import KINDS

ONNX_EXTRA = "pip install 'pylenet[onnx]'"
# Opset 13 and IR version 7 (onnx 1.8) are the oldest that hold every op used here, so that
# older runtimes load the file too; onnx.helper would otherwise stamp its own newest IR version.
OPSET = 13
IR_VERSION = 7
BATCH = "N"      # the name of the dynamic batch axis
MNIST_PAD = 2    # 28x28 digits zero-padded to LeNet-5's 32x32 input (as pylenet.train.PAD)


class ExportError(ValueError):
    """The exported file could not be written; the message names the file and the reason."""


def _onnx():
    """The onnx module, or an ImportError that names the extra to install."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package, which is not installed: {ONNX_EXTRA}") from e
    return onnx


def preprocessing_note(baked_in: bool) -> dict:
    """How raw MNIST pixels become the network's input, as stored in the file's metadata."""
    return {
        "baked_in": baked_in,
        "pad": MNIST_PAD, "mean": MNIST_MEAN, "std": MNIST_STD,
        "formula": (f"x = (pixel / 255 - {MNIST_MEAN}) / {MNIST_STD} in float32, on each 28x28 "
                    f"uint8 digit (0 = background) zero-padded by {MNIST_PAD} to 32x32 first"),
    }


def build_onnx(model, *, preprocess: bool = False, input_shape: tuple = (1, 32, 32)):
    """The model as a checked onnx.ModelProto; preprocess=True bakes MNIST padding and normalisation in."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    chain = layer_chain(model, need="onnx")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    if preprocess and input_shape != (1, 32, 32):
        raise ValueError(f"preprocess=True makes an MNIST pipeline (28x28 digits padded to "
                         f"1x32x32), but the model's input_shape is {input_shape}")
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.array(array, order="C"), name))  # 0-d stays 0-d
        return name

    if preprocess:
        graph_input = helper.make_tensor_value_info("pixels", TensorProto.UINT8, [BATCH, 28, 28])
        p = MNIST_PAD
        # Pad the raw pixels with 0, then normalise: the same values as pylenet's lookup table,
        # whose entry for pixel 0 fills the pad. Division then subtraction then division in
        # float32, in the table's order, gives bit-identical inputs.
        nodes += [
            helper.make_node("Unsqueeze", ["pixels", const("pre.axes", np.array([1], np.int64))], ["pre.nchw"]),
            helper.make_node("Cast", ["pre.nchw"], ["pre.float"], to=TensorProto.FLOAT),
            helper.make_node("Pad", ["pre.float", const("pre.pads", np.array([0, 0, p, p, 0, 0, p, p], np.int64))],
                             ["pre.padded"], mode="constant"),
            helper.make_node("Div", ["pre.padded", const("pre.255", np.array(255, np.float32))], ["pre.unit"]),
            helper.make_node("Sub", ["pre.unit", const("pre.mean", np.array(MNIST_MEAN, np.float32))], ["pre.centred"]),
            helper.make_node("Div", ["pre.centred", const("pre.std", np.array(MNIST_STD, np.float32))], ["input"]),
        ]
    else:
        graph_input = helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, *input_shape])

    # The chain is checked by the core for this input (shapes, parameter shapes) before any node.
    params = _checked_params(chain, input_shape)
    x, shape = "input", input_shape
    for i, (name, layer, kind, attrs) in enumerate(chain):
        y = "logits" if i == len(chain) - 1 else f"{name}.out"
        nodes.append(_node(helper, const, KINDS[kind], name, layer, attrs, params[i], x, y))
        shape = tuple(layer.output_shape(shape))
        x = y
    if len(shape) != 1 or not chain:
        raise ValueError(f"the model must end in (N, classes) logits, but its output per sample "
                         f"has shape {shape}")

    graph = helper.make_graph(nodes, type(model).__name__, [graph_input],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, shape[0]])],
                              initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="pylenet",
                              producer_version=__version__,
                              doc_string=f"{model!r}; outputs logits (softmax gives probabilities)")
    meta = {
        "pylenet.version": __version__,
        "pylenet.architecture": json.dumps(getattr(model, "config", None)),
        "pylenet.input": (f"pixels: uint8 ({BATCH}, 28, 28), raw MNIST digits" if preprocess else
                          f"input: float32 ({BATCH}, {', '.join(map(str, input_shape))}), normalised"),
        "pylenet.output": f"logits: float32 ({BATCH}, {shape[0]})",
        "pylenet.preprocessing": json.dumps(preprocessing_note(preprocess)),
    }
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _checked_params(chain, input_shape) -> list[dict]:
    """Per layer, {parameter or buffer name: float32 array}, after the core has checked the
    chain for input_shape (ValueError naming the layer) and every array's shape."""
    net = _core.Net([(kind, attrs) for _, _, kind, attrs in chain], tuple(input_shape))
    shapes = iter(net.param_shapes)
    out = []
    for name, layer, kind, _ in chain:
        arrays = {}
        for pname in KINDS[kind]["params"]:
            p = getattr(layer, pname, None)
            if p is None:
                continue
            expected = next(shapes)
            if p.data.shape != expected:
                raise ValueError(f"layer {name}: {pname} has shape {p.data.shape}, expected {expected}")
            arrays[pname] = np.asarray(p.data, np.float32)
        for bname in KINDS[kind]["buffers"]:
            arrays[bname] = np.asarray(getattr(layer, bname), np.float32)
        out.append(arrays)
    return out


def _node(helper, const, info: dict, name: str, layer, attrs: dict, arrays: dict, x: str, y: str):
    """One ONNX node for a layer, by the ONNX operator its registry kind names."""
    op = info["onnx"]
    if op in ("Conv", "Gemm"):
        args = [x, const(f"{name}.weight", arrays["weight"])]
        if "bias" in arrays:
            args.append(const(f"{name}.bias", arrays["bias"]))
        if op == "Gemm":
            return helper.make_node("Gemm", args, [y], transB=1)
        k, s, p = attrs["kernel_size"], attrs["stride"], attrs["padding"]
        return helper.make_node("Conv", args, [y], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    if op in ("MaxPool", "AveragePool"):
        k, s = attrs["kernel_size"], attrs["stride"]
        return helper.make_node(op, [x], [y], kernel_shape=[k, k], strides=[s, s])
    if op == "Flatten":
        return helper.make_node(op, [x], [y], axis=1)
    if op == "BatchNormalization":  # evaluation: the running statistics normalise
        c = attrs["num_features"]
        scale = arrays.get("weight", np.ones(c, np.float32))
        shift = arrays.get("bias", np.zeros(c, np.float32))
        args = [x, const(f"{name}.scale", scale), const(f"{name}.shift", shift),
                const(f"{name}.running_mean", arrays["running_mean"]),
                const(f"{name}.running_var", arrays["running_var"])]
        return helper.make_node(op, args, [y], epsilon=float(attrs["eps"]), momentum=1.0 - float(attrs["momentum"]))
    if op == "Dropout":  # inference: the identity (no training_mode input)
        return helper.make_node(op, [x, const(f"{name}.ratio", np.array(attrs["p"], np.float32))], [y])
    # Element-wise operators (and GlobalAveragePool): the kind's attributes that ONNX names.
    extra = {a["onnx"]: attrs[a["name"]] for a in info["attrs"] if a["onnx"]}
    return helper.make_node(op, [x], [y], **extra)


def export_onnx(model, path, *, preprocess: bool = False, input_shape: tuple = (1, 32, 32)) -> Path:
    """Write `model` as an ONNX file at `path` (temp file, fsync, rename) and return the path.

    The input is what model.forward takes (float32 (N, 1, 32, 32), normalised as the metadata
    says), or with preprocess=True raw uint8 digits (N, 28, 28); the output is logits (N, C).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"export_onnx: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    data = build_onnx(model, preprocess=preprocess, input_shape=input_shape).SerializeToString()
    write_atomic(path, data, what="ONNX model")
    return path


def write_atomic(path: Path, data: bytes, *, what: str = "file") -> None:
    """Write bytes to a temp file next to path, fsync and rename: path is either old or complete."""
    atomic_write(path, lambda f: f.write(data),
                 lambda why: ExportError(f"cannot write {what} {path}: {why}"))
