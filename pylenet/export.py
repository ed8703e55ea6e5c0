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
from pylenet.interop import layer_chain

ONNX_EXTRA = "pip install 'pylenet[onnx]'"
# Opset 13 and IR version 7 (onnx 1.8) are the oldest that hold every op used here, so that
# older runtimes load the file too; onnx.helper would otherwise stamp its own newest IR version.
OPSET = 13
IR_VERSION = 7
BATCH = "N"      # the name of the dynamic batch axis
MNIST_PAD = 2    # 28x28 digits zero-padded to LeNet-5's 32x32 input (as pylenet.train.PAD)
_ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


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

    chain = layer_chain(model)
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape}")
    if preprocess and input_shape != (1, 32, 32):
        raise ValueError(f"preprocess=True makes an MNIST pipeline (28x28 digits padded to "
                         f"1x32x32), but the model's input_shape is {input_shape}")
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
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

    x, shape = "input", input_shape
    for i, (name, layer, (kind, in_f, out_f, kernel, stride, pad, bias)) in enumerate(chain):
        y = "logits" if i == len(chain) - 1 else f"{name}.out"
        where = f"layer {name} ({type(layer).__name__})"
        if kind in ("conv2d", "linear"):
            want = len(shape) == 3 if kind == "conv2d" else len(shape) == 1
            if not want or shape[0] != in_f:
                raise ValueError(f"{where} expects {in_f} input {'channels' if kind == 'conv2d' else 'features'}"
                                 f", but receives a tensor of shape {shape} per sample")
            args = [x, const(f"{name}.weight", _param(layer, "weight", name))]
            if bias:
                args.append(const(f"{name}.bias", _param(layer, "bias", name)))
            if kind == "conv2d":
                node = helper.make_node("Conv", args, [y], kernel_shape=[kernel, kernel],
                                        strides=[stride, stride], pads=[pad] * 4)
            else:
                node = helper.make_node("Gemm", args, [y], transB=1)
        elif kind in ("maxpool2d", "avgpool2d"):
            if len(shape) != 3:
                raise ValueError(f"{where} needs (C, H, W) maps, but receives shape {shape} per sample")
            node = helper.make_node("MaxPool" if kind == "maxpool2d" else "AveragePool", [x], [y],
                                    kernel_shape=[kernel, kernel], strides=[stride, stride])
        elif kind == "flatten":
            node = helper.make_node("Flatten", [x], [y], axis=1)
        else:
            node = helper.make_node(_ACTIVATION_OPS[kind], [x], [y])
        nodes.append(node)
        shape = tuple(layer.output_shape(shape))
        if min(shape) < 1:
            raise ValueError(f"{where} turns the input into an empty tensor of shape {shape}")
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


def _param(layer, attr: str, name: str) -> np.ndarray:
    """A layer's parameter as float32, checked against the shape its layer declares."""
    data = np.asarray(getattr(layer, attr).data)
    if attr == "weight":
        expected = ((layer.out_channels, layer.in_channels, layer.kernel_size, layer.kernel_size)
                    if hasattr(layer, "kernel_size") else (layer.out_features, layer.in_features))
    else:
        expected = (getattr(layer, "out_channels", None) or layer.out_features,)
    if data.shape != expected:
        raise ValueError(f"layer {name}: {attr} has shape {data.shape}, expected {expected}")
    return data.astype(np.float32)


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
