"""The `pylenet` command: train/resume/evaluate/predict/info in-process, errors, and Ctrl-C in a subprocess."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import pylenet
from conftest import REPO_ROOT
from pylenet import LeNet5, ops
from pylenet.checkpoint import CheckpointError, load_checkpoint
from pylenet.cli import main

OFFLINE_MIRROR = "http://127.0.0.1:9/"  # the discard port: connection refused at once
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def offline_and_thread_count(monkeypatch):
    """No test may reach the network; --threads changes a process-wide setting, so restore it."""
    monkeypatch.setenv("PYLENET_MNIST_MIRRORS", OFFLINE_MIRROR)
    before = ops.get_num_threads()
    yield
    ops.set_num_threads(before)


def subprocess_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYLENET_MNIST_MIRRORS"] = OFFLINE_MIRROR
    return env


def run_cli(capsys, *argv):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def train_args(mnist_dir, out, *extra, epochs=1):
    return ["train", "--data", mnist_dir, "--epochs", epochs, "--limit", 2000, "--out", out,
            "--no-progress", "--threads", 2, *extra]


@pytest.fixture(scope="module")
def trained(mnist_dir, tmp_path_factory):
    """One `pylenet train --epochs 1 --limit 2000` run shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("cli_train")
    before = ops.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PYLENET_MNIST_MIRRORS", OFFLINE_MIRROR)
            code = main([str(a) for a in train_args(mnist_dir, out)])
    finally:
        ops.set_num_threads(before)
    assert code == 0
    return out


@pytest.fixture(scope="module")
def good_model(mnist_dir, tmp_path_factory):
    """A LeNet5 that reads digits well (fit in Python), for the predict tests."""
    images, labels = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    model = LeNet5(seed=0)
    pylenet.fit(model, (images[:5000], labels[:5000]), epochs=2, progress=False)  # ~0.91 accurate
    return model.save(tmp_path_factory.mktemp("good_model") / "good.ckpt")


def assert_one_line_error(code, out, err):
    assert code == 1, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, f"expected a single-line error, got {len(lines)} lines:\n{err}"
    assert lines[0].startswith("pylenet: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------- train

def test_fit_and_the_cli_share_one_default_recipe(trained, mnist_dir):
    from pylenet.cli import _parser
    from pylenet.recipe import DEFAULT_RECIPE
    args = _parser().parse_args(["train"])
    for key in ("epochs", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "loss", "seed"):
        assert getattr(args, key) == DEFAULT_RECIPE[key], key
    # The same run both ways, bit for bit: `pylenet train` and fit() with no optimizer given.
    images, labels = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    model = LeNet5(seed=0)
    pylenet.fit(model, (images[:2000], labels[:2000]), epochs=1, progress=False, threads=2)
    cli_model = LeNet5.load(trained / "model.ckpt")
    for name, value in model.state_dict().items():
        assert np.array_equal(cli_model.state_dict()[name], value), name

def test_train_writes_checkpoint_metrics_and_plot(trained, mnist_dir):
    ckpt = load_checkpoint(trained / "model.ckpt")
    assert ckpt.epoch == 1
    assert ckpt.arch == {"name": "LeNet5", "activation": "relu", "pooling": "max",
                         "num_classes": 10, "seed": 0}
    assert ckpt.optimizer["config"]["type"] == "sgd"

    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) >= {"model", "epochs", "history", "test_accuracy", "test_loss", "confusion",
                            "wall_time_s", "threads", "train_images"}
    assert metrics["model"] == ckpt.arch
    assert metrics["epochs"] == 1 and metrics["train_images"] == 2000 and metrics["threads"] == 2
    assert metrics["wall_time_s"] > 0
    (record,) = metrics["history"]
    assert record["epoch"] == 1 and record["lr"] == 0.02  # the default recipe's base lr
    assert set(record) >= {"loss", "accuracy", "time", "val_loss", "val_accuracy"}
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10_000
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / 10_000)
    assert record["val_accuracy"] == metrics["test_accuracy"]
    assert metrics["test_accuracy"] > 0.15  # chance is 0.1; one epoch of the default recipe reaches well above it

    # The saved model is the one the metrics describe.
    test = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    assert pylenet.evaluate(LeNet5.load(trained / "model.ckpt"), test)["accuracy"] == metrics["test_accuracy"]

    png = (trained / "curves.png").read_bytes()
    assert png.startswith(PNG_MAGIC)
    with Image.open(trained / "curves.png") as img:
        img.verify()
    with Image.open(trained / "curves.png") as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 100
    assert not list(trained.glob(".*.tmp*")), "temporary files left behind"


def test_train_prints_a_summary(mnist_dir, tmp_path, capsys):
    code, out, err = run_cli(capsys, *train_args(mnist_dir, tmp_path, "--limit", 300))
    assert code == 0, err
    assert re.search(r"^epoch +1 +loss \d+\.\d{4} +train acc [\d.]+% +test acc [\d.]+%", out, re.M), out
    assert re.search(r"test accuracy [\d.]+% after 1 epochs", out), out
    assert str(tmp_path / "model.ckpt") in out
    assert "training LeNet5(" in err and "on 300 images" in err
    assert "Traceback" not in err


def test_resume_continues_to_the_total_epoch_count_bit_identically(trained, mnist_dir, tmp_path, capsys):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    code, out, err = run_cli(capsys, *train_args(mnist_dir, resumed, "--resume", trained / "model.ckpt",
                                                 epochs=2))
    assert code == 0, err
    assert f"resuming from {trained / 'model.ckpt'} at epoch 1" in err
    assert load_checkpoint(resumed / "model.ckpt").epoch == 2
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert [r["epoch"] for r in metrics["history"]] == [1, 2]
    first = json.loads((trained / "metrics.json").read_text())["history"][0]
    assert metrics["history"][0] == first  # epoch 1 comes from the checkpoint, not retrained

    # The same two epochs in one run. The default cosine schedule gives epoch 1 the base lr
    # whatever T_max is, so resuming a 1-epoch run to 2 epochs follows the straight run's lrs.
    assert run_cli(capsys, *train_args(mnist_dir, straight, epochs=2))[0] == 0
    a, b = load_checkpoint(straight / "model.ckpt"), load_checkpoint(resumed / "model.ckpt")
    assert [r["lr"] for r in a.extra["history"]] == [r["lr"] for r in b.extra["history"]]
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name]), name
    for key, value in a.optimizer["state"].items():
        assert np.array_equal(value, b.optimizer["state"][key]), key


# ---------------------------------------------------------------------------------- evaluate

def test_evaluate_prints_accuracy_and_confusion_table(trained, mnist_dir, capsys):
    code, out, err = run_cli(capsys, "evaluate", "--model", trained / "model.ckpt", "--data", mnist_dir)
    assert code == 0, err
    metrics = json.loads((trained / "metrics.json").read_text())
    lines = out.strip("\n").splitlines()
    assert lines[0] == (f"test accuracy {100 * metrics['test_accuracy']:.2f}%  "
                        f"loss {metrics['test_loss']:.4f}  (10000 images)")
    assert lines[1].split() == ["true\\pred"] + [str(i) for i in range(10)]
    assert len(lines) == 12
    table = np.array([[int(v) for v in line.split()] for line in lines[2:]])
    assert table.shape == (10, 11)
    assert list(table[:, 0]) == list(range(10))
    np.testing.assert_array_equal(table[:, 1:], np.array(metrics["confusion"]))


def test_evaluate_json_parses(trained, mnist_dir, capsys):
    code, out, err = run_cli(capsys, "evaluate", "--model", trained / "model.ckpt", "--data", mnist_dir,
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(result) == {"accuracy", "loss", "confusion"}
    assert result["accuracy"] == metrics["test_accuracy"]
    assert result["confusion"] == metrics["confusion"]


# ----------------------------------------------------------------------------------- predict

def digit_files(mnist_dir, folder, count=4):
    """MNIST test digits scaled up 4x, inverted to dark ink on white, saved as PNG and JPEG."""
    images, labels = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    files = []
    for i in range(count):
        big = Image.fromarray(255 - images[i]).resize((112, 112), Image.Resampling.BICUBIC)
        for ext in ("png", "jpg"):
            path = folder / f"digit{i}_{labels[i]}.{ext}"
            big.save(path, quality=92) if ext == "jpg" else big.save(path)
            files.append((path, int(labels[i])))
    return files


def test_predict_prints_label_and_probability_per_file(good_model, mnist_dir, tmp_path, capsys):
    files = digit_files(mnist_dir, tmp_path)
    code, out, err = run_cli(capsys, "predict", "--model", good_model, *[p for p, _ in files])
    assert code == 0, err
    lines = out.strip("\n").splitlines()
    assert len(lines) == len(files)
    for line, (path, label) in zip(lines, files):
        m = re.fullmatch(rf"{re.escape(str(path))}: (\d) \(probability (0\.\d{{3}}|1\.000)\)", line)
        assert m, line
        assert int(m.group(1)) == label, f"{path.name} read as {m.group(1)}"
        assert float(m.group(2)) > 0.5


def test_predict_reports_bad_files_and_keeps_going(good_model, mnist_dir, tmp_path, capsys):
    good, label = digit_files(mnist_dir, tmp_path, count=1)[0]
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    code, out, err = run_cli(capsys, "predict", "--model", good_model, tmp_path / "missing.png", good, blank)
    assert code == 1
    assert out.strip().startswith(f"{good}: {label} (probability")
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("pylenet: error: ") for line in lines), err
    assert "missing.png" in lines[0] and "no digit found" in lines[1]
    assert "Traceback" not in err


# -------------------------------------------------------------------------------- info, help

def test_info_prints_build_lines(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    fields = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert fields["openmp"] in ("True", "False")
    assert fields["simd_used"] and fields["simd_compiled"]
    assert fields["simd_used"] in fields["simd_compiled"]
    assert fields["version"] == pylenet.__version__


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"],
                                  ["predict", "--help"], ["info", "--help"]], ids=" ".join)
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: pylenet" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ errors

def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    line = assert_one_line_error(*run_cli(capsys, "evaluate", "--model", tmp_path / "nope.ckpt"))
    assert "nope.ckpt" in line


def test_corrupted_checkpoint_is_a_one_line_error(trained, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"this is not a checkpoint\n" * 10)
    line = assert_one_line_error(*run_cli(capsys, "predict", "--model", bad, "x.png"))
    assert str(bad) in line and "corrupt" in line
    data = bytearray((trained / "model.ckpt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte inside an array
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    line = assert_one_line_error(*run_cli(capsys, "evaluate", "--model", flipped))
    assert str(flipped) in line


def test_nonexistent_data_dir_is_a_one_line_error(tmp_path, capsys):
    line = assert_one_line_error(*run_cli(capsys, "train", "--data", tmp_path / "no_mnist_here",
                                          "--epochs", 1, "--out", tmp_path / "out", "--no-progress"))
    assert "train-images-idx3-ubyte.gz" in line


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "--epochs must be >= 0, got -1"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
])
def test_bad_numbers_are_one_line_errors(args, message, tmp_path, capsys):
    line = assert_one_line_error(*run_cli(capsys, "train", "--out", tmp_path, "--no-progress", *args))
    assert line == f"pylenet: error: {message}"


def test_non_integer_epochs_is_an_argparse_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "abc"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --epochs: invalid int value: 'abc'" in err and "Traceback" not in err


def test_subprocess_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00" * 64)
    proc = subprocess.run([sys.executable, "-m", "pylenet", "evaluate", "--model", str(bad)],
                          env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("pylenet: error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_subprocess_module_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pylenet", "info"], env=subprocess_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^openmp: (True|False)$", proc.stdout, re.M)
    assert re.search(r"^simd_used: \S", proc.stdout, re.M)


# ------------------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_exits_130_and_leaves_a_loadable_checkpoint(mnist_dir, tmp_path):
    out = tmp_path / "run"
    ckpt_path = out / "model.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylenet", "train", "--data", str(mnist_dir), "--epochs", "50",
         "--limit", "500", "--out", str(out), "--no-progress", "--threads", "1"],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"train exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "no finished epoch within 60 s"
            try:
                if load_checkpoint(ckpt_path).epoch >= 1:
                    break
            except (FileNotFoundError, CheckpointError):
                pass
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if str(ckpt_path) in line and "interrupted" in line]
    assert len(lines) == 1, stderr
    epoch = int(re.search(r"holds epoch (\d+)", lines[0]).group(1))
    ckpt = load_checkpoint(ckpt_path)
    assert 1 <= ckpt.epoch == epoch < 50
    assert len(ckpt.extra["history"]) == epoch
    model = LeNet5.load(ckpt_path)
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    assert not list(out.glob(".*.tmp")), "a temporary checkpoint was left behind"
