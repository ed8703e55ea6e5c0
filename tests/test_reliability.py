"""No lost work, and reproducible work.

Checkpoints: a disk that fills up mid-write (a real tmpfs sized between one and two checkpoints,
when this process may mount one, and always a file object that fails after N bytes) leaves the
previous checkpoint intact and loadable, leaves no temporary file, and raises a CheckpointError
that names the file and the cause; LeNet5.load refuses, with a message saying why, a checkpoint
of another architecture or of a newer format version.

Determinism: the same seed and thread count give bit-identical weights after 2 epochs on a
2000-image slice of real MNIST, and so do 1 and 2 threads (the core is designed to be
thread-count invariant), through the fused engine and through the layer-by-layer path.
"""
import os
import subprocess

import numpy as np
import pytest

import pylenet
import pylenet.checkpoint as ck
from pylenet import ops
from pylenet.checkpoint import CheckpointError


def weights(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def assert_same_weights(a, b, what):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape
        if a[name].tobytes() != b[name].tobytes():
            diff = np.abs(a[name].astype(np.float64) - b[name]).max()
            raise AssertionError(f"{what}: {name} differs (max |diff| {diff:.3e})")


def trained(seed, steps=3):
    """A LeNet5 whose weights differ from a fresh one's (a few SGD steps on random data)."""
    model = pylenet.LeNet5(seed=seed)
    rng = np.random.default_rng(seed)
    images, labels = rng.integers(0, 256, (64 * steps, 28, 28)).astype(np.uint8), rng.integers(0, 10, 64 * steps)
    pylenet.fit(model, (images, labels), epochs=1, progress=False)
    return model


# ---------------------------------------------------------------------------------------------
# disk full


@pytest.fixture
def small_disk(tmp_path):
    """mount(size) -> a fresh tmpfs of `size` bytes (unmounted afterwards), or a skip."""
    mounts = []

    def mount(size):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        where = tmp_path / f"disk{len(mounts)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", str(where)], capture_output=True)


def _checkpoint_size(tmp_path, model, **kw):
    probe = tmp_path / "probe.ckpt"
    model.save(probe, **kw)
    size = probe.stat().st_size
    probe.unlink()
    return size


def test_disk_full_keeps_the_previous_checkpoint(small_disk, tmp_path):
    """Room for one checkpoint but not for the temporary copy beside it."""
    first, second = trained(1), trained(2)
    size = _checkpoint_size(tmp_path, first)
    disk = small_disk(size * 3 // 2)
    path = disk / "model.ckpt"
    first.save(path)
    before = path.read_bytes()

    with pytest.raises(CheckpointError) as info:
        second.save(path)
    message = str(info.value)
    assert str(path) in message and "No space left on device" in message, message
    assert path.read_bytes() == before
    assert sorted(os.listdir(disk)) == ["model.ckpt"], "a temporary file was left behind"
    assert_same_weights(weights(pylenet.LeNet5.load(path)), weights(first), "reloaded")


def test_disk_too_small_for_any_checkpoint(small_disk):
    disk = small_disk(64 * 1024)
    with pytest.raises(CheckpointError, match="No space left on device"):
        pylenet.LeNet5(seed=0).save(disk / "model.ckpt")
    assert os.listdir(disk) == []


def test_training_on_a_full_disk_keeps_the_last_good_epoch(small_disk, tmp_path):
    """fit(checkpoint=...) after every epoch: the save that does not fit raises, and the file
    still holds the previous epoch, from which training resumes."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (128, 28, 28)).astype(np.uint8), rng.integers(0, 10, 128)
    model = pylenet.LeNet5(seed=0)
    opt = pylenet.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = pylenet.Trainer(model, opt, progress=False)
    trainer.fit((images, labels), epochs=1)
    size = _checkpoint_size(tmp_path, model, optimizer=opt, epoch=1,
                            extra={"history": trainer.history.records})
    disk = small_disk(size * 3 // 2)
    trainer.checkpoint = disk / "run.ckpt"
    trainer.save()
    epoch1 = weights(model)
    with pytest.raises(CheckpointError, match="No space left on device"):
        trainer.fit((images, labels), epochs=2)
    assert sorted(os.listdir(disk)) == ["run.ckpt"]
    saved = ck.load_checkpoint(disk / "run.ckpt")
    assert saved.epoch == 1
    assert_same_weights({k: v for k, v in saved.params.items()}, epoch1, "the epoch-1 checkpoint")


# A write failing part way through (simulated ENOSPC at many points): test_checkpoint.py.


# ---------------------------------------------------------------------------------------------
# refusing checkpoints this LeNet5 cannot honour


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "lenet.ckpt"
    trained(3).save(path)
    return path


def _edited(saved, edit):
    """A copy of the checkpoint after edit(Checkpoint), written through the checkpoint API."""
    c = ck.load_checkpoint(saved)
    edit(c)
    out = saved.with_name("edited.ckpt")
    ck.save_checkpoint(out, c)
    return out


def _rename_param(c):
    c.params["C5.weight"] = c.params.pop("F5.weight")


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c.arch.update(name="AlexNet"), r"holds a 'AlexNet' architecture, not 'LeNet5'"),
    (lambda c: c.arch.pop("name"), r"holds a None architecture, not 'LeNet5'"),
    (lambda c: c.arch.update(num_classes=5), r"output\.weight has shape \(10, 84\).*expects \(5, 84\)"),
    (lambda c: c.arch.update(activation="swish"), r"architecture this pylenet cannot build.*swish"),
    (lambda c: c.arch.update(width=2), r"architecture this pylenet cannot build.*width"),
    (_rename_param, r"does not match LeNet5.*missing \['F5\.weight'\].*unexpected \['C5\.weight'\]"),
    (lambda c: c.params.update({"C1.weight": np.zeros((6, 3, 5, 5), np.float32)}),
     r"C1\.weight has shape \(6, 3, 5, 5\).*expects \(6, 1, 5, 5\)"),
], ids=["other name", "no name", "other class count", "unknown activation", "unknown option",
        "other parameters", "other input channels"])
def test_another_architecture_is_refused_saying_so(saved, edit, fragment):
    path = _edited(saved, edit)
    with pytest.raises(CheckpointError, match=fragment) as info:
        pylenet.LeNet5.load(path)
    assert str(path) in str(info.value)


def test_a_newer_format_version_is_refused_saying_so(saved, monkeypatch):
    monkeypatch.setattr(ck, "FORMAT_VERSION", ck.FORMAT_VERSION + 1)
    newer = _edited(saved, lambda c: None)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=rf"newer pylenet \(format version "
                                              rf"{ck.FORMAT_VERSION + 1} > {ck.FORMAT_VERSION}\).*upgrade"):
        pylenet.LeNet5.load(newer)


def test_the_unedited_checkpoint_loads(saved):
    model = pylenet.LeNet5.load(saved)
    assert_same_weights(weights(model), {k: v for k, v in ck.load_checkpoint(saved).params.items()}, "load")


# ---------------------------------------------------------------------------------------------
# determinism


@pytest.fixture(scope="module")
def mnist_slice(mnist_dir):
    images, labels = pylenet.load_mnist("train", root=mnist_dir, download=False, progress=False)
    return images[:2000], labels[:2000]


@pytest.fixture(autouse=True)
def keep_thread_count(restore_threads):
    """Every test below sets the thread count."""


def two_epochs(data, threads, fused, seed=7):
    """Weights of LeNet5(seed) after fit(..., epochs=2, seed, threads) on the slice."""
    model = pylenet.LeNet5(seed=seed)
    history = pylenet.fit(model, data, epochs=2, seed=seed, progress=False, threads=threads, fused=fused)
    assert ops.get_num_threads() == threads or not ops.build_info()["openmp"]
    assert history.epochs == 2 and np.isfinite(history["loss"]).all()
    return weights(model)


_FIRST_RUNS = {}


def first_run(data, threads, fused):
    """two_epochs, computed once per (threads, fused) for this module."""
    if (threads, fused) not in _FIRST_RUNS:
        _FIRST_RUNS[threads, fused] = two_epochs(data, threads, fused)
    return _FIRST_RUNS[threads, fused]


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer-by-layer"])
@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_and_threads_give_identical_weights(mnist_slice, threads, fused):
    a, b = first_run(mnist_slice, threads, fused), two_epochs(mnist_slice, threads, fused)
    assert_same_weights(a, b, f"two runs with {threads} thread(s)")
    fresh = weights(pylenet.LeNet5(seed=7))
    assert any(a[k].tobytes() != fresh[k].tobytes() for k in a), "training changed nothing"


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "layer-by-layer"])
def test_one_and_two_threads_give_identical_weights(mnist_slice, fused):
    if not ops.build_info()["openmp"]:
        pytest.skip("built without OpenMP: one thread only")
    one, two = first_run(mnist_slice, 1, fused), first_run(mnist_slice, 2, fused)
    assert_same_weights(one, two, "1 vs 2 threads")
