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
def offline_and_thread_count(monkeypatch, restore_threads):
    """No test may reach the network; --threads changes a process-wide setting (restored)."""
    monkeypatch.setenv("PYLENET_MNIST_MIRRORS", OFFLINE_MIRROR)


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
    for key in ("epochs", "batch_size", "optimizer", "momentum", "weight_decay", "schedule", "seed"):
        assert getattr(args, key) == DEFAULT_RECIPE[key], key
    # --loss unset means the model's default loss: the recipe's for the modern LeNet-5
    from pylenet.train import default_loss
    assert args.loss is None and default_loss(LeNet5()) == DEFAULT_RECIPE["loss"]
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

@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "serve"])
def test_missing_checkpoint_is_a_one_line_error_naming_the_model(command, tmp_path, capsys):
    extra = {"predict": ["x.png"], "export": ["--onnx", tmp_path / "m.onnx"]}.get(command, [])
    line = assert_one_line_error(*run_cli(capsys, command, "--model", tmp_path / "nope.ckpt", *extra))
    assert line.startswith(f"pylenet: error: --model {tmp_path / 'nope.ckpt'}: no such file;")
    assert "checkpoint written by `pylenet train`" in line
    line = assert_one_line_error(*run_cli(capsys, "evaluate", "--model", tmp_path))
    assert "not a file" in line
    line = assert_one_line_error(*run_cli(capsys, "train", "--resume", tmp_path / "old.ckpt",
                                          "--out", tmp_path / "out", "--no-progress"))
    assert line.startswith(f"pylenet: error: --resume {tmp_path / 'old.ckpt'}: no such file")
    assert not (tmp_path / "out").exists()


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pylenet {pylenet.__version__}"


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


def test_a_data_dir_without_the_files_names_them_and_creates_nothing(trained, tmp_path, capsys, monkeypatch):
    # A typo in --data used to download MNIST into the typo (and make it); now nothing is
    # fetched or created unless --download says so.
    monkeypatch.setattr("pylenet.data._download", lambda *a: pytest.fail("downloaded"))
    typo = tmp_path / "typo" / "mnist"
    line = assert_one_line_error(*run_cli(capsys, "train", "--data", typo, "--epochs", 1,
                                          "--out", tmp_path / "out", "--no-progress"))
    assert f"--data {typo} (no such folder) lacks the mnist files train-images-idx3-ubyte.gz, " \
           "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz" in line
    assert "--download" in line
    assert not (tmp_path / "typo").exists() and not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    line = assert_one_line_error(*run_cli(capsys, "evaluate", "--model", trained / "model.ckpt",
                                          "--data", tmp_path / "empty", "--dataset", "kmnist"))
    assert line.endswith(f"--data {tmp_path / 'empty'} lacks the kmnist files t10k-images-idx3-ubyte.gz, "
                         "t10k-labels-idx1-ubyte.gz (or their uncompressed copies); pass the folder "
                         "that holds them, add --download to fetch them into it, or leave out --data "
                         "to use the per-user cache")


def write_idx_folder(folder, files, n_train=96, n_test=40, seed=0):
    """A folder of generated MNIST-format files under the given (train..., test...) names."""
    import gzip
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):  # a learnable pattern: a bar whose row is the label
            images[i, 4 + 2 * y:6 + 2 * y, 4:24] = 255
        img_name, lab_name = files[split]
        (folder / img_name).write_bytes(gzip.compress(
            bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes() + images.tobytes()))
        (folder / lab_name).write_bytes(gzip.compress(
            bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes() + labels.tobytes()))
    return folder


@pytest.mark.parametrize("dataset", ["fashion-mnist", "kmnist", "emnist-digits"])
def test_train_and_evaluate_on_any_folder_of_idx_files(dataset, tmp_path, capsys):
    from pylenet.data import DATASETS
    folder = write_idx_folder(tmp_path / dataset, DATASETS[dataset].files)
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--data", folder, "--dataset", dataset, "--epochs", 2,
                                "--out", out, "--no-progress", "--threads", 1, "--batch-size", 16)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_images"] == 96 and np.array(metrics["confusion"]).sum() == 40
    code, stdout, err = run_cli(capsys, "evaluate", "--model", out / "model.ckpt", "--data", folder,
                                "--dataset", dataset, "--json")
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == metrics["test_accuracy"]


def test_download_into_a_data_dir_only_when_asked(tmp_path, capsys, monkeypatch, files_server):
    import hashlib

    from pylenet import data
    source = write_idx_folder(tmp_path / "served", data.MNIST_FILES)
    files = {p.name: p.read_bytes() for p in source.iterdir()}

    server, _ = files_server
    server.files = files
    real = data.DATASETS["fashion-mnist"]
    sums = {n: ("file", real.checksums[n][1], hashlib.md5(b).hexdigest()) for n, b in files.items()}
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", data.Dataset(
        "fashion-mnist", real.files, sums, (f"http://127.0.0.1:{server.server_address[1]}/f/",)))
    target = tmp_path / "fashion"
    args = ["train", "--data", target, "--dataset", "fashion-mnist", "--epochs", 1,
            "--out", tmp_path / "run", "--no-progress", "--threads", 1]
    assert_one_line_error(*run_cli(capsys, *args))
    assert not target.exists()
    code, _, err = run_cli(capsys, *args, "--download")
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == sorted(files)


def test_train_never_overwrites_an_earlier_runs_checkpoint(trained, mnist_dir, tmp_path, capsys):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "model.ckpt").write_bytes((trained / "model.ckpt").read_bytes())
    before = (out / "model.ckpt").read_bytes()
    line = assert_one_line_error(*run_cli(capsys, *train_args(mnist_dir, out)))
    assert f"--out {out} already holds model.ckpt" in line and f"--resume {out / 'model.ckpt'}" in line
    assert (out / "model.ckpt").read_bytes() == before and sorted(os.listdir(out)) == ["model.ckpt"]
    # Resuming that very checkpoint in place is what the message suggests, and works.
    code, _, err = run_cli(capsys, *train_args(mnist_dir, out, "--resume", out / "model.ckpt", epochs=2))
    assert code == 0, err
    assert load_checkpoint(out / "model.ckpt").epoch == 2


def test_a_run_that_fails_before_writing_leaves_no_out_folder(mnist_dir, tmp_path, capsys, monkeypatch):
    def disk_full(self, path=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pylenet.Trainer, "save", disk_full)
    out = tmp_path / "new" / "run"
    line = assert_one_line_error(*run_cli(capsys, *train_args(mnist_dir, out)))
    assert "No space left on device" in line
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    assert_one_line_error(*run_cli(capsys, *train_args(mnist_dir, existing)))
    assert existing.is_dir()  # a folder the user made is never removed


def test_progress_in_a_log_is_one_line_per_epoch(mnist_dir, tmp_path):
    """Without a terminal there are no bars; each epoch has one line, on stdout, and the end
    of the run does not repeat them."""
    proc = subprocess.run(
        [sys.executable, "-m", "pylenet", "train", "--data", str(mnist_dir), "--epochs", "2",
         "--limit", "300", "--out", str(tmp_path / "run"), "--threads", "1"],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr, repr(proc.stderr[:300])
    assert not [line for line in proc.stderr.splitlines() if line.startswith("epoch ")], proc.stderr
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1", "2"], proc.stdout
    assert "test acc" in epochs[0] and "\r" not in proc.stdout


@pytest.mark.parametrize("progress", [[], ["--no-progress"]], ids=["progress", "no-progress"])
def test_a_killed_run_keeps_its_finished_epochs_in_the_log_and_the_csv(mnist_dir, tmp_path, progress):
    """stdout to a file (block-buffered), stderr too; kill -9 once two epochs are in the CSV:
    every finished epoch has its line in the log and its row in the CSV."""
    log, err, table = tmp_path / "train.log", tmp_path / "train.err", tmp_path / "epochs.csv"
    out = tmp_path / "run"
    env = subprocess_env()
    env.pop("PYTHONUNBUFFERED", None)  # a user's default: stdout to a file is block-buffered
    with open(log, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pylenet", "train", "--data", str(mnist_dir), "--epochs", "50",
             "--limit", "500", "--out", str(out), "--threads", "1", "--csv", str(table), *progress],
            env=env, cwd=tmp_path, stdout=stdout, stderr=stderr)
        try:
            deadline = time.monotonic() + 90
            while not (table.exists() and len(table.read_text().splitlines()) >= 3):  # header + 2
                assert proc.poll() is None, f"train exited early: {err.read_text()}"
                assert time.monotonic() < deadline, "no two finished epochs within 90 s"
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before it could be killed"
            proc.kill()  # SIGKILL: no handler, no flush at exit
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    import csv
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    finished = load_checkpoint(out / "model.ckpt").epoch
    assert 2 <= len(rows) <= finished < 50  # the checkpoint is written first, then the rows
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"^epoch +(\d+) +loss (\S+) ", log.read_text(), re.M)}
    for row in rows:  # each row's epoch has its line, with the same loss
        assert lines.get(int(row["epoch"])) == f"{float(row['loss']):.4f}", (row, log.read_text())
    assert sorted(lines) == list(range(1, len(lines) + 1)) and len(lines) <= finished
    assert "Traceback" not in err.read_text()


def test_early_stop_and_csv_flags(mnist_dir, tmp_path, capsys):
    """With a learning rate of 0 the test accuracy never improves: --early-stop 1 stops after
    epoch 2, and --csv has a row for each of the two epochs."""
    table = tmp_path / "log.csv"
    code, out, err = run_cli(capsys, *train_args(mnist_dir, tmp_path / "run", "--limit", 300, "--lr", 0,
                                                 "--weight-decay", 0, "--early-stop", 1, "--csv", table,
                                                 epochs=5))
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["early_stop"] == {"patience": 1, "stopped_epoch": 2, "best_epoch": 1,
                                     "best_val_accuracy": metrics["history"][0]["val_accuracy"]}
    assert "stopped early after epoch 2" in out and "at epoch 1, was not bettered in 1 epoch" in out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == ["1", "2"]
    assert table.read_text().splitlines()[0].startswith("epoch,lr,loss,accuracy,")
    assert len(table.read_text().splitlines()) == 3
    assert load_checkpoint(tmp_path / "run" / "model.ckpt").epoch == 2


@pytest.mark.parametrize("args,message", [
    (["--early-stop", "0"], "--early-stop must be >= 1 (epochs without a better test accuracy before stopping), got 0"),
    (["--csv", "."], "--csv . is a folder; give the path of a file to write"),
])
def test_bad_callback_flags_are_one_line_errors(args, message, tmp_path, capsys):
    line = assert_one_line_error(*run_cli(capsys, "train", "--out", tmp_path / "run", "--no-progress", *args))
    assert line == f"pylenet: error: {message}"
    assert not (tmp_path / "run").exists()


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

def _sigint_as_at_a_terminal():
    """Ctrl-C's default in the child: a suite started in the background (`cmd &` in a script)
    passes SIGINT on ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_and_leaves_a_loadable_checkpoint(mnist_dir, tmp_path):
    out = tmp_path / "run"
    ckpt_path = out / "model.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pylenet", "train", "--data", str(mnist_dir), "--epochs", "50",
         "--limit", "500", "--out", str(out), "--no-progress", "--threads", "1"],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_at_a_terminal)
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
