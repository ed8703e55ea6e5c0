"""ONNX export: onnxruntime reproduces pylenet's logits on real MNIST; metadata; bad input; atomic writes."""
import json
import os
import sys

import numpy as np
import pytest

import pylenet
from pylenet import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential, Tanh
from pylenet.cli import main
from pylenet.export import ExportError
from trained_models import VARIANTS, logit_tolerance, mnist_test, trained_lenet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def session(path):
    """A one-thread onnxruntime session (the machine's cores are shared with the core's threads)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("activation,pooling", VARIANTS)
@pytest.mark.parametrize("preprocess", [False, True], ids=["normalised", "uint8"])
def test_onnxruntime_matches_pylenet_on_the_mnist_test_set(activation, pooling, preprocess,
                                                           mnist_dir, tmp_path):
    images, x, labels = mnist_test(str(mnist_dir))
    model = trained_lenet(activation, pooling, str(mnist_dir))
    path = pylenet.export_onnx(model, tmp_path / "lenet5.onnx", preprocess=preprocess)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    ref = model.forward(x)
    out = session(path).run(["logits"], {"pixels": images} if preprocess else {"input": x})[0]
    diff = np.abs(out - ref)
    print(f"ONNX {activation}/{pooling} preprocess={preprocess}: max |diff| {diff.max():.3g}, "
          f"max |logit| {np.abs(ref).max():.3g}")
    assert out.shape == (10000, 10) and out.dtype == np.float32
    assert (diff <= logit_tolerance(ref)).all(), diff.max()
    np.testing.assert_array_equal(out.argmax(axis=1), ref.argmax(axis=1))
    if activation == "relu":  # the trained model is a real classifier, not a constant
        assert (ref.argmax(axis=1) == labels).mean() > 0.85


def test_the_batch_axis_is_dynamic(mnist_dir, tmp_path):
    _, x, _ = mnist_test(str(mnist_dir))
    model = trained_lenet("relu", "max", str(mnist_dir))
    path = pylenet.export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 1, 32, 32]
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in out_dims] == ["N", 10]
    sess = session(path)
    for n in (1, 7, 256):
        out = sess.run(None, {"input": x[:n]})[0]
        assert out.shape == (n, 10)
        assert (np.abs(out - model.forward(x[:n])) <= logit_tolerance(out)).all()


def test_metadata_documents_the_input_normalisation(tmp_path):
    model = pylenet.LeNet5(activation="tanh", pooling="avg", num_classes=7, seed=3)
    for preprocess in (False, True):
        proto = onnx.load(str(pylenet.export_onnx(model, tmp_path / "m.onnx", preprocess=preprocess)))
        meta = {p.key: p.value for p in proto.metadata_props}
        assert json.loads(meta["pylenet.architecture"]) == model.config
        assert meta["pylenet.version"] == pylenet.__version__ == proto.producer_version
        note = json.loads(meta["pylenet.preprocessing"])
        assert note["baked_in"] is preprocess
        assert (note["pad"], note["mean"], note["std"]) == (2, 0.1307, 0.3081)
        assert "pixel / 255" in note["formula"]
        assert meta["pylenet.output"] == "logits: float32 (N, 7)"
        assert meta["pylenet.input"].startswith("pixels: uint8" if preprocess else "input: float32")
        assert proto.opset_import[0].version == 13 and proto.ir_version == 7


def test_the_documented_normalisation_reproduces_the_baked_in_one(mnist_dir, tmp_path):
    """Following the metadata's formula by hand gives exactly the tensor pylenet feeds the network."""
    images, x, _ = mnist_test(str(mnist_dir))
    proto = onnx.load(str(pylenet.export_onnx(pylenet.LeNet5(), tmp_path / "m.onnx")))
    note = json.loads({p.key: p.value for p in proto.metadata_props}["pylenet.preprocessing"])
    p = note["pad"]
    padded = np.pad(images[:50], ((0, 0), (p, p), (p, p))).astype(np.float32)[:, None]
    by_hand = (padded / np.float32(255) - np.float32(note["mean"])) / np.float32(note["std"])
    np.testing.assert_array_equal(by_hand, x[:50])


def test_a_general_sequential_with_strides_padding_and_no_bias(tmp_path):
    rng = np.random.default_rng(5)
    model = Sequential(
        ("stem", Sequential(("conv", Conv2d(3, 4, 3, stride=2, padding=1, bias=False, rng=rng)),
                            ("act", Tanh()))),
        ("pool", MaxPool2d(3, stride=2)),
        ("conv2", Conv2d(4, 5, 2, padding=2, rng=rng)),
        ("relu", ReLU()),
        ("avg", AvgPool2d(2)),
        ("flat", Flatten()),
        ("fc", Linear(30, 3, bias=False, rng=rng)),  # 5@3x2 -> 3
    ).eval()
    x = rng.standard_normal((6, 3, 13, 11)).astype(np.float32)
    ref = model.forward(x)
    assert ref.shape == (6, 3)
    path = pylenet.export_onnx(model, tmp_path / "seq.onnx", input_shape=(3, 13, 11))
    out = session(path).run(None, {"input": x})[0]
    assert (np.abs(out - ref) <= logit_tolerance(ref)).all()
    names = [i.name for i in onnx.load(str(path)).graph.initializer]
    assert names == ["stem.conv.weight", "conv2.weight", "conv2.bias", "fc.weight"]


# ---------------------------------------------------------------------------------- bad input

class Dropout(Module):
    """A layer pylenet's core does not know."""

    def forward(self, x):
        return x


def test_an_unsupported_layer_is_a_type_error_and_writes_nothing(tmp_path):
    model = pylenet.LeNet5()
    model.layers.insert(8, ("drop", Dropout()))
    with pytest.raises(TypeError, match=r"layer drop is a Dropout, which cannot be exported"):
        pylenet.export_onnx(model, tmp_path / "m.onnx")
    assert listing(tmp_path) == []
    with pytest.raises(TypeError, match="expected a pylenet Sequential"):
        pylenet.export_onnx(Linear(3, 2), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="path must be a str"):
        pylenet.export_onnx(pylenet.LeNet5(), 3)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("model,input_shape,message", [
    # The core's own checks of the chain, with the messages fit and the fused network give.
    (Sequential(Conv2d(3, 4, 3), Flatten(), Linear(4 * 30 * 30, 2)), (1, 32, 32),
     r"layer 0 \(Conv2d\) in_channels \(3\) does not match channels coming in \(1\)"),
    (Sequential(Flatten(), Linear(10, 2)), (1, 32, 32),
     r"layer 1 \(Linear\) in_features \(10\) does not match features coming in \(1024\)"),
    (Sequential(Conv2d(1, 2, 3)), (1, 8, 8), r"the last layer must output \(features,\), got \(2, 6, 6\)"),
    (Sequential(Flatten(), MaxPool2d(2)), (1, 8, 8), r"layer 1 \(MaxPool2d\) needs \(C, H, W\) input"),
    (Sequential(Conv2d(1, 2, 9), Flatten()), (1, 8, 8),
     r"layer 0 \(Conv2d\) kernel_size 9 is larger than the padded input 8x8"),
    (Sequential(Flatten(), Linear(64, 2)), (1, 8), r"input_shape must be \(C, H, W\)"),
])
def test_inconsistent_shapes_are_value_errors(model, input_shape, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        pylenet.export_onnx(model, tmp_path / "m.onnx", input_shape=input_shape)
    assert listing(tmp_path) == []


def test_a_parameter_of_the_wrong_shape_is_named(tmp_path):
    model = pylenet.LeNet5()
    model.layers[0][1].weight.data = np.zeros((6, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"layer C1: weight has shape \(6, 1, 3, 3\), expected \(6, 1, 5, 5\)"):
        pylenet.export_onnx(model, tmp_path / "m.onnx")


def test_preprocess_needs_an_mnist_shaped_model(tmp_path):
    model = Sequential(Flatten(), Linear(48, 2))
    with pytest.raises(ValueError, match="preprocess=True makes an MNIST pipeline"):
        pylenet.export_onnx(model, tmp_path / "m.onnx", preprocess=True, input_shape=(3, 4, 4))


def test_an_unwritable_path_is_an_export_error_and_leaves_no_file(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ExportError, match=r"cannot write ONNX model .*a_file/m.onnx: cannot create its folder"):
        pylenet.export_onnx(pylenet.LeNet5(), tmp_path / "a_file" / "m.onnx")
    (tmp_path / "a_dir").mkdir()
    with pytest.raises(ExportError, match=r"cannot write ONNX model .*a_dir"):
        pylenet.export_onnx(pylenet.LeNet5(), tmp_path / "a_dir")
    assert listing(tmp_path) == ["a_dir", "a_file"] and listing(tmp_path / "a_dir") == []


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(failing, tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the user's previous export")
    import pylenet.export as export

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, fd, mode):
                self.f = real_fdopen(fd, mode)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[:100])
                boom()

        monkeypatch.setattr(export.os, "fdopen", Full)
    else:
        monkeypatch.setattr(export.os, failing, boom)
    with pytest.raises(ExportError, match="No space left on device"):
        pylenet.export_onnx(pylenet.LeNet5(), path)
    assert path.read_bytes() == b"the user's previous export"
    assert listing(tmp_path) == ["m.onnx"]


def test_ctrl_c_during_the_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import pylenet.export as export

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(export.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        pylenet.export_onnx(pylenet.LeNet5(), tmp_path / "m.onnx")
    assert listing(tmp_path) == []


def test_missing_onnx_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'pylenet\[onnx\]'"):
        pylenet.export_onnx(pylenet.LeNet5(), tmp_path / "m.onnx")
    ckpt = pylenet.LeNet5().save(tmp_path / "model.ckpt")
    assert main(["export", "--model", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pylenet[onnx]" in err
    assert listing(tmp_path) == ["model.ckpt"]


# ------------------------------------------------------------------------------------- the CLI

def test_cli_export_writes_a_model_that_matches_the_checkpoint(mnist_dir, tmp_path, capsys):
    images, x, _ = mnist_test(str(mnist_dir))
    model = trained_lenet("tanh", "avg", str(mnist_dir))
    ckpt = model.save(tmp_path / "model.ckpt")
    out = tmp_path / "exports" / "lenet5.onnx"
    assert main(["export", "--model", str(ckpt), "--onnx", str(out), "--preprocess"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}" in stdout and "uint8 pixels (N, 28, 28)" in stdout
    logits = session(out).run(None, {"pixels": images[:500]})[0]
    ref = model.forward(x[:500])
    assert (np.abs(logits - ref) <= logit_tolerance(ref)).all()


def test_cli_export_of_a_corrupt_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    ckpt = pylenet.LeNet5().save(tmp_path / "model.ckpt")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(ckpt), "--onnx", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pylenet: error: checkpoint") and err.count("\n") == 1
    assert "corrupt" in err
    assert not out.exists() and listing(tmp_path) == ["model.ckpt"]


@pytest.mark.parametrize("argv,message", [
    (["--model", "{ckpt}"], "give --onnx FILE and/or --torch FILE"),
    (["--model", "{ckpt}", "--torch", "{out}", "--preprocess"], "--preprocess shapes the ONNX input"),
    (["--model", "{ckpt}", "--onnx", "{ckpt}"], "never overwrites its own checkpoint"),
    (["--model", "{ckpt}", "--onnx", "{out}", "--torch", "{out}"], "must be three different files"),
    (["--model", "{missing}", "--onnx", "{out}"], "nope.ckpt: no such file; it takes a checkpoint"),
    (["--model", "{ckpt}", "--onnx", "{ckpt}/m.onnx"], "cannot write ONNX model"),
])
def test_cli_export_errors_are_one_line(argv, message, tmp_path, capsys):
    ckpt = pylenet.LeNet5().save(tmp_path / "model.ckpt")
    names = {"ckpt": ckpt, "missing": tmp_path / "nope.ckpt", "out": tmp_path / "m.onnx"}
    assert main(["export", *[a.format(**names) for a in argv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pylenet: error:") and message in err and err.count("\n") == 1
    assert listing(tmp_path) == ["model.ckpt"]
    assert pylenet.LeNet5.load(ckpt).config == pylenet.LeNet5().config


def test_cli_export_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: pylenet export" in out and "--preprocess" in out and "--torch FILE" in out
