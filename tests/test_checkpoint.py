"""Tests for pylenet.checkpoint: round trips, validation, atomic writes, and refusal of damaged files."""
import errno
import io
import json
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import pylenet.checkpoint as ck
Checkpoint, CheckpointError = ck.Checkpoint, ck.CheckpointError
save_checkpoint, load_checkpoint = ck.save_checkpoint, ck.load_checkpoint


def make_checkpoint(seed=0, with_optimizer=True) -> Checkpoint:
    rng = np.random.default_rng(seed)
    params = {
        "C1.weight": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
        "C1.bias": rng.standard_normal(6).astype(np.float32),
        "F6.weight": rng.standard_normal((10, 12)),
        "steps": np.arange(5, dtype=np.int64) * 10**12,
    }
    optimizer = None
    if with_optimizer:
        optimizer = {"config": {"name": "SGD", "lr": 0.1, "momentum": 0.9, "nesterov": False},
                     "state": {"C1.weight.velocity": rng.standard_normal((6, 1, 5, 5)).astype(np.float32),
                               "t": np.array(7, dtype=np.int64)}}
    return Checkpoint(
        arch={"name": "LeNet5", "activation": "relu", "pool": "max", "input": [1, 32, 32]},
        params=params, optimizer=optimizer, epoch=seed + 3,
        extra={"history": {"loss": [2.3, 0.5, 0.25], "acc": [0.1, None, 0.98]},
               "seed": seed, "note": "ünïcödé", "nested": {"a": [{"b": [1, 2, {"c": True}]}]}})


def assert_same(a: Checkpoint, b: Checkpoint):
    assert a.arch == b.arch and a.epoch == b.epoch and a.extra == b.extra
    assert list(a.params) == list(b.params)
    for k in a.params:
        assert a.params[k].dtype == b.params[k].dtype and a.params[k].shape == b.params[k].shape
        assert a.params[k].tobytes() == b.params[k].tobytes(), k
    assert (a.optimizer is None) == (b.optimizer is None)
    if a.optimizer is not None:
        assert a.optimizer["config"] == b.optimizer["config"]
        assert list(a.optimizer["state"]) == list(b.optimizer["state"])
        for k, v in a.optimizer["state"].items():
            w = b.optimizer["state"][k]
            assert v.dtype == w.dtype and v.shape == w.shape and v.tobytes() == w.tobytes()


def rewrite_members(src: Path, dst: Path, mutate):
    """Copy a checkpoint zip member by member through mutate(dict name->bytes); CRCs stay valid."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    mutate(members)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dst


def edit_meta(fn):
    def mutate(members):
        meta = json.loads(members["meta.json"])
        fn(meta)
        members["meta.json"] = json.dumps(meta).encode()
    return mutate


@pytest.fixture
def saved(tmp_path):
    ckpt = make_checkpoint()
    return ckpt, save_checkpoint(tmp_path / "model.ckpt", ckpt)


# ---------------------------------------------------------------------------------- round trip

def test_round_trip(saved):
    ckpt, path = saved
    assert path.name == "model.ckpt" and path.exists()
    back = load_checkpoint(path)
    assert_same(ckpt, back)
    assert back.params["C1.weight"].flags.writeable and back.params["C1.weight"].flags.c_contiguous


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "uint8", "bool",
                                   "float16", "complex64", ">f8", "<i2"])
def test_round_trip_dtypes(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) % 3).astype(dtype)
    back = load_checkpoint(save_checkpoint(tmp_path / "c", Checkpoint({}, {"a": arr}, None, 0, {})))
    assert back.params["a"].dtype == arr.dtype and np.array_equal(back.params["a"], arr)


def test_round_trip_edge_shapes_and_layouts(tmp_path):
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    params = {"scalar": np.array(2.5), "empty": np.zeros((0, 3), np.float32), "T": base.T,
              "strided": base[:, ::2], "fortran": np.asfortranarray(base), "x/y.z": np.ones(1)}
    back = load_checkpoint(save_checkpoint(tmp_path / "c", Checkpoint({}, params, None, 0, {})))
    for k, v in params.items():
        assert back.params[k].shape == v.shape and np.array_equal(back.params[k], v), k


def test_empty_params_no_optimizer_and_defaults(tmp_path):
    back = load_checkpoint(save_checkpoint(tmp_path / "c", Checkpoint(arch={"name": "x"}, params={})))
    assert back.params == {} and back.optimizer is None and back.epoch == 0 and back.extra == {}


def test_optimizer_with_empty_state(tmp_path):
    ckpt = Checkpoint({}, {}, {"config": {"lr": 1}, "state": {}}, 1, {})
    assert load_checkpoint(save_checkpoint(tmp_path / "c", ckpt)).optimizer == {"config": {"lr": 1}, "state": {}}


def test_json_details_survive(tmp_path):
    extra = {"nan": float("nan"), "inf": float("inf"), "tuple": (1, 2), "big": 2**70}
    back = load_checkpoint(save_checkpoint(tmp_path / "c", Checkpoint({}, {}, None, np.int64(4), extra)))
    assert np.isnan(back.extra["nan"]) and back.extra["inf"] == float("inf")
    assert back.extra["tuple"] == [1, 2] and back.extra["big"] == 2**70 and back.epoch == 4


def test_save_creates_folders_overwrites_and_is_deterministic(tmp_path):
    path = tmp_path / "a" / "b" / "c.ckpt"
    save_checkpoint(path, make_checkpoint(0))
    first = path.read_bytes()
    save_checkpoint(path, make_checkpoint(0))
    assert path.read_bytes() == first
    save_checkpoint(str(path), make_checkpoint(1))
    assert_same(load_checkpoint(path), make_checkpoint(1))
    assert os.listdir(path.parent) == ["c.ckpt"]


def test_file_is_a_plain_zip_of_meta_and_npy(saved):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta = json.loads(zf.read("meta.json"))
        arr = np.load(io.BytesIO(zf.read("param/C1.weight.npy")), allow_pickle=False)
    assert names[0] == "meta.json" and "optim/t.npy" in names
    assert meta["format"] == ck.FORMAT_NAME and meta["version"] == ck.FORMAT_VERSION == 1
    assert len(meta["sha256"]) == 64 and arr.shape == (6, 1, 5, 5)


# ---------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("mutate, exc, fragment", [
    (lambda c: c.params.update(w=[1.0, 2.0]), TypeError, "params['w']"),
    (lambda c: c.params.update(w=np.array(["a"])), TypeError, "non-numeric"),
    (lambda c: c.params.update(w=np.array([object()])), TypeError, "non-numeric"),
    (lambda c: c.params.update({3: np.ones(2)}), TypeError, "non-string key 3"),
    (lambda c: c.params.update({"": np.ones(2)}), CheckpointError, "invalid key"),
    (lambda c: c.params.update({"a\x00b": np.ones(2)}), CheckpointError, "invalid key"),
    (lambda c: c.arch.update(lr=np.float32(0.1)), TypeError, "arch['lr']"),
    (lambda c: c.extra["history"].update(bad={1, 2}), TypeError, "extra['history']['bad']"),
    (lambda c: c.extra.update({1: "x"}), TypeError, "non-string key 1"),
    (lambda c: c.optimizer["state"].update(v="x"), TypeError, "optimizer['state']['v']"),
    (lambda c: c.optimizer["config"].update(fn=print), TypeError, "optimizer['config']['fn']"),
    (lambda c: setattr(c, "optimizer", {"state": {}}), TypeError, "'config' and 'state'"),
    (lambda c: setattr(c, "epoch", 1.5), TypeError, "epoch"),
    (lambda c: setattr(c, "arch", "LeNet5"), TypeError, "arch must be a dict"),
])
def test_invalid_checkpoints_are_refused_before_writing(tmp_path, saved, mutate, exc, fragment):
    _, path = saved
    before = path.read_bytes()
    bad = make_checkpoint()
    mutate(bad)
    with pytest.raises(exc, match=".*".join(map(__import__("re").escape, [str(path), fragment]))):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.ckpt"]


# ---------------------------------------------------------------------------------- atomicity

def assert_untouched(path: Path, before: bytes):
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name], "temporary files were left behind"
    assert_same(load_checkpoint(path), make_checkpoint())


def test_failing_array_write_keeps_old_checkpoint(saved, monkeypatch):
    _, path = saved
    before = path.read_bytes()
    real_save = np.save
    calls = []

    def half_save(f, arr, **kw):
        calls.append(1)
        if len(calls) == 3:
            f.write(b"\x93NUMPY partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(f, arr, **kw)

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(CheckpointError, match="model.ckpt") as info:
        save_checkpoint(path, make_checkpoint(5))
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert_untouched(path, before)


class DiskFull:
    """A file object that accepts `budget` bytes and then fails like a full disk."""

    def __init__(self, f, budget):
        self._f, self._left = f, budget

    def write(self, data):
        if len(data) > self._left:
            self._f.write(bytes(data)[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.2, 0.5, 0.8, 0.99, 0.9999])
def test_disk_full_at_any_point_keeps_old_checkpoint(saved, tmp_path_factory, monkeypatch, fraction):
    _, path = saved
    before = path.read_bytes()
    full_size = save_checkpoint(tmp_path_factory.mktemp("size") / "c", make_checkpoint(5)).stat().st_size
    budget = int(fraction * full_size)
    assert budget < full_size
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: DiskFull(real_fdopen(fd, *a, **k), budget))
    with pytest.raises(CheckpointError, match="model.ckpt") as info:
        save_checkpoint(path, make_checkpoint(5))
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert_untouched(path, before)


def test_failing_fsync_and_rename_keep_old_checkpoint(saved, monkeypatch):
    _, path = saved
    before = path.read_bytes()
    for name in ("fsync", "replace"):
        def fail(*a, **k):
            raise OSError(errno.EIO, f"{name} failed")
        monkeypatch.setattr(os, name, fail)
        with pytest.raises(CheckpointError, match=f"model.ckpt.*{name} failed"):
            save_checkpoint(path, make_checkpoint(5))
        monkeypatch.undo()
        assert_untouched(path, before)


def test_keyboard_interrupt_mid_write_keeps_old_checkpoint(saved, monkeypatch):
    _, path = saved
    before = path.read_bytes()

    def interrupted(f, arr, **kw):
        f.write(b"\x93NUMPY")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, make_checkpoint(5))
    monkeypatch.undo()
    assert_untouched(path, before)


def test_unwritable_destinations(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="file/sub/c.ckpt") as info:
        save_checkpoint(blocker / "sub" / "c.ckpt", make_checkpoint())
    assert isinstance(info.value.__cause__, OSError)
    folder = tmp_path / "dir.ckpt"
    (folder / "inner").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="dir.ckpt"):
        save_checkpoint(folder, make_checkpoint())
    assert sorted(os.listdir(tmp_path)) == ["dir.ckpt", "file"]


# ---------------------------------------------------------------------------------- corruption

def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"PK\x03\x04" + bytes(200),
                                     np.arange(300, dtype=np.uint8).tobytes()])
def test_garbage_is_refused(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_checkpoint(path)


def test_a_folder_or_an_npz_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_checkpoint(tmp_path)
    np.savez(tmp_path / "w.npz", a=np.ones(3))
    with pytest.raises(CheckpointError, match="w.npz.*no meta.json"):
        load_checkpoint(tmp_path / "w.npz")


def expect_refusal(path: Path, original: Checkpoint):
    """A damaged file must raise CheckpointError or, if the damage was harmless, load identically."""
    try:
        back = load_checkpoint(path)
    except CheckpointError as e:
        assert str(path) in str(e)
        return "refused"
    assert_same(original, back)
    return "identical"


def test_truncation_at_every_offset_is_refused(saved, tmp_path):
    ckpt, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.ckpt"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        assert expect_refusal(cut, ckpt) == "refused", n


def test_random_bit_flips_never_give_wrong_data(saved, tmp_path):
    ckpt, path = saved
    data = path.read_bytes()
    rng = np.random.default_rng(1234)
    flipped = tmp_path / "flip.ckpt"
    outcomes = []
    for _ in range(400):
        buf = bytearray(data)
        bit = int(rng.integers(len(buf) * 8))
        buf[bit // 8] ^= 1 << (bit % 8)
        flipped.write_bytes(bytes(buf))
        outcomes.append(expect_refusal(flipped, ckpt))
    # Flips in fields zipfile ignores (timestamps, the local header's copy of sizes) are harmless.
    assert outcomes.count("refused") > 300


def test_random_byte_scrambles_never_give_wrong_data(saved, tmp_path):
    ckpt, path = saved
    data = path.read_bytes()
    rng = np.random.default_rng(99)
    damaged = tmp_path / "scrambled.ckpt"
    for _ in range(200):
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
        damaged.write_bytes(bytes(buf))
        expect_refusal(damaged, ckpt)
    assert sorted(os.listdir(tmp_path)) == ["model.ckpt", "scrambled.ckpt"]


@pytest.mark.parametrize("mutate, fragment", [
    (edit_meta(lambda m: m.update(version=2)),
     r"was written by a newer pylenet \(format version 2 > 1\)"),
    (edit_meta(lambda m: m.update(format="other-thing")), "not a pylenet checkpoint"),
    (edit_meta(lambda m: m.pop("format")), "not a pylenet checkpoint"),
    (edit_meta(lambda m: m.update(version="1")), "invalid format version"),
    (edit_meta(lambda m: m.pop("epoch")), "'epoch'"),
    (edit_meta(lambda m: m.update(arrays=m["arrays"][:-1])), "unexpected members"),
    (edit_meta(lambda m: m["arrays"][0].update(shape=[6, 1, 5, 4])), "meta.json says"),
    (edit_meta(lambda m: m["arrays"][0].update(dtype="<f8")), "meta.json says"),
    (edit_meta(lambda m: m["arrays"][0].update(member="param/../x.npy")), "bad or duplicate member"),
    (edit_meta(lambda m: m.update(optimizer=None)), "optimizer"),
    (edit_meta(lambda m: m.update(sha256="0" * 64)), "SHA-256"),
    (lambda ms: ms.update({"meta.json": b"{not json"}), "not valid JSON"),
    (lambda ms: ms.update({"meta.json": b"[1, 2]"}), "not a JSON object"),
    (lambda ms: ms.pop("meta.json"), "no meta.json"),
    (lambda ms: ms.pop("param/C1.bias.npy"), "missing members"),
    (lambda ms: ms.update({"evil.sh": b"rm -rf /"}), "unexpected members"),
    (lambda ms: ms.update({"param/C1.bias.npy": ms["param/C1.bias.npy"] + b"\0\0\0\0"}), "data bytes"),
])
def test_inconsistent_contents_are_refused(saved, tmp_path, mutate, fragment):
    _, path = saved
    bad = rewrite_members(path, tmp_path / "bad.ckpt", mutate)
    with pytest.raises(CheckpointError, match=f"bad.ckpt.*{fragment}"):
        load_checkpoint(bad)


def test_changed_array_values_fail_the_sha(saved, tmp_path):
    def change(members):
        raw = bytearray(members["param/F6.weight.npy"])
        raw[-1] ^= 0x40
        members["param/F6.weight.npy"] = bytes(raw)
    bad = rewrite_members(saved[1], tmp_path / "bad.ckpt", change)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(bad)


def test_pickled_member_is_never_unpickled(saved, tmp_path):
    def sneak(members):
        buf = io.BytesIO()
        np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        members["param/C1.bias.npy"] = buf.getvalue()
        meta = json.loads(members["meta.json"])
        next(e for e in meta["arrays"] if e["name"] == "C1.bias").update(dtype="|O", shape=[1])
        members["meta.json"] = json.dumps(meta).encode()
    bad = rewrite_members(saved[1], tmp_path / "bad.ckpt", sneak)
    with pytest.raises(CheckpointError, match="non-numeric"):
        load_checkpoint(bad)


def test_forged_huge_member_size_is_refused_before_reading(saved, tmp_path):
    data = bytearray(saved[1].read_bytes())
    # Central-directory header: signature, then the uncompressed size at byte 24.
    at = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, at + 24, 0xFFFFFFF0)
    forged = tmp_path / "forged.ckpt"
    forged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="forged.ckpt.*declares 4294967280 bytes"):
        load_checkpoint(forged)
