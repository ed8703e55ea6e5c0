"""Checkpoint files for models and training state: a zip of meta.json plus one .npy per array, written atomically."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import secrets
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_NAME = "pylenet-checkpoint"
FORMAT_VERSION = 1

# No legitimate LeNet checkpoint member comes near this; a larger declared size means a forged
# or corrupt header, and refusing it before reading keeps a bad file from exhausting memory.
MAX_MEMBER_BYTES = 1 << 30

META_MEMBER = "meta.json"
GROUPS = ("param", "optim")
# Fixed member timestamps make the file a pure function of its contents.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# Array kinds the format stores: bool, signed/unsigned int, float, complex. Object, string and
# structured dtypes are refused, which also means nothing ever needs pickle.
_NUMERIC_KINDS = "biufc"

# Members are written stored; deflated ones (a checkpoint re-zipped by another tool) are read
# too. bzip2 and LZMA members are refused before decompressing: their headers choose the
# decoder's buffer sizes (an LZMA dictionary of up to 4 GiB), which a damaged or forged file
# must not get to allocate.
_READABLE_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)

# What zipfile, zlib, json and numpy's header parser raise on damaged bytes; load turns each
# into a CheckpointError that names the file.
_CORRUPTION_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error, EOFError, OSError,
    ValueError, KeyError, OverflowError, NotImplementedError, RuntimeError,
)
# What numpy's .npy header parser lets through on a damaged header besides ValueError: it
# literal_evals the header (TypeError for e.g. an unhashable key) and, for version 1/2 files,
# re-tokenizes a header that does not parse (SyntaxError, tokenize.TokenError).
_NPY_HEADER_ERRORS = (SyntaxError, TypeError, tokenize.TokenError)


class CheckpointError(ValueError):
    """A checkpoint could not be saved or loaded; the message names the file and the problem."""


@dataclass
class Checkpoint:
    """Everything needed to rebuild a model and resume training."""

    arch: dict
    params: dict
    optimizer: dict | None = None
    epoch: int = 0
    extra: dict = field(default_factory=dict)


def atomic_write(path: Path, write, fail) -> None:
    """Runs write(f) on a temp file in path's folder, fsyncs it and renames it over path, so
    that path is either as it was or complete; an OSError becomes fail(reason), raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise fail(f"cannot create its folder: {e}") from e
    tmp = None
    try:
        tmp, fd = _create_temp(path)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except BaseException as e:
        # BaseException on purpose: a Ctrl-C mid-write must not leave a half-written temp file.
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise fail(str(e)) from e
        raise


def save_checkpoint(path, ckpt: Checkpoint) -> Path:
    """Write ckpt to path atomically (temp file in the same folder, fsync, rename) and return the path."""
    path = Path(path)
    meta, arrays = _prepare(path, ckpt)
    meta_bytes = json.dumps(meta, indent=1).encode("utf-8")
    atomic_write(path, lambda f: _write_zip(f, meta_bytes, arrays),
                 lambda why: CheckpointError(f"cannot save checkpoint {path}: {why}"))
    return path


def load_checkpoint(path) -> Checkpoint:
    """Read and fully verify a checkpoint; FileNotFoundError if missing, CheckpointError if damaged."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    with f:
        try:
            return _read(f, path)
        except CheckpointError:
            raise
        except _CORRUPTION_ERRORS as e:
            raise CheckpointError(
                f"checkpoint {path} is corrupt or truncated: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------------------------------- save

def _prepare(path: Path, ckpt: Checkpoint):
    """Validate ckpt and return (meta dict, list of (member name, C-contiguous array))."""
    if not isinstance(ckpt, Checkpoint):
        raise TypeError(f"checkpoint {path}: expected a Checkpoint, got {type(ckpt).__name__}")
    if not isinstance(ckpt.arch, dict):
        raise TypeError(f"checkpoint {path}: arch must be a dict, got {type(ckpt.arch).__name__}")
    if not isinstance(ckpt.extra, dict):
        raise TypeError(f"checkpoint {path}: extra must be a dict, got {type(ckpt.extra).__name__}")
    _check_json(ckpt.arch, "arch", path)
    _check_json(ckpt.extra, "extra", path)
    if isinstance(ckpt.epoch, (bool, np.bool_)) or not isinstance(ckpt.epoch, (int, np.integer)):
        raise TypeError(f"checkpoint {path}: epoch must be an int, got {type(ckpt.epoch).__name__}")

    groups = [("param", ckpt.params, "params")]
    optim_config = None
    if ckpt.optimizer is not None:
        opt = ckpt.optimizer
        if not isinstance(opt, dict) or set(opt) != {"config", "state"}:
            raise TypeError(f"checkpoint {path}: optimizer must be None or a dict with exactly the "
                            f"keys 'config' and 'state', got {_describe_keys(opt)}")
        if not isinstance(opt["config"], dict):
            raise TypeError(f"checkpoint {path}: optimizer['config'] must be a dict")
        _check_json(opt["config"], "optimizer['config']", path)
        optim_config = opt["config"]
        groups.append(("optim", opt["state"], "optimizer['state']"))

    entries, arrays = [], []
    for group, mapping, label in groups:
        if not isinstance(mapping, dict):
            raise TypeError(f"checkpoint {path}: {label} must be a dict of arrays, "
                            f"got {type(mapping).__name__}")
        for name, arr in mapping.items():
            _check_name(name, label, path)
            where = f"{label}[{name!r}]"
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"checkpoint {path}: {where} must be a numpy array, "
                                f"got {type(arr).__name__}")
            if arr.dtype.kind not in _NUMERIC_KINDS:
                raise TypeError(f"checkpoint {path}: {where} has non-numeric dtype {arr.dtype}")
            if arr.nbytes > MAX_MEMBER_BYTES - 4096:
                raise CheckpointError(f"checkpoint {path}: {where} is {arr.nbytes} bytes; the "
                                      f"format allows at most {MAX_MEMBER_BYTES} per array")
            # Not np.ascontiguousarray: it turns 0-d arrays into shape (1,).
            arr = np.require(arr, requirements="C")
            member = f"{group}/{name}.npy"
            entries.append({"group": group, "name": name, "member": member,
                            "shape": list(arr.shape), "dtype": arr.dtype.str})
            arrays.append((member, arr))

    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "arch": ckpt.arch,
        "epoch": int(ckpt.epoch),
        "extra": ckpt.extra,
        "optimizer": None if optim_config is None else {"config": optim_config},
        "arrays": entries,
        "sha256": _digest(entries, [a for _, a in arrays]),
    }
    return meta, arrays


def _check_name(name, label: str, path: Path) -> None:
    """Array names become zip member names, so they must be non-empty, NUL-free UTF-8 strings."""
    if not isinstance(name, str):
        raise TypeError(f"checkpoint {path}: {label} has a non-string key {name!r}")
    if not name or "\x00" in name:
        raise CheckpointError(f"checkpoint {path}: {label} has an invalid key {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise CheckpointError(f"checkpoint {path}: {label} key {name!r} is not valid UTF-8") from e


def _check_json(value, where: str, path: Path) -> None:
    """Refuse anything json would reject or silently change (non-str keys, numpy scalars, sets)."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint {path}: {where} has a non-string key {k!r}; "
                                f"JSON keys must be strings")
            _check_json(v, f"{where}[{k!r}]", path)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", path)
        return
    raise TypeError(f"checkpoint {path}: {where} is a {type(value).__name__}, which is not "
                    f"JSON-serialisable (use int/float/str/bool/None/list/dict)")


def _describe_keys(obj) -> str:
    return f"keys {sorted(map(str, obj))}" if isinstance(obj, dict) else type(obj).__name__


def _digest(entries: list, arrays: list) -> str:
    """SHA-256 over, for each array in meta order: member name, dtype, shape, then its C-order bytes."""
    h = hashlib.sha256()
    for entry, arr in zip(entries, arrays):
        shape = ",".join(str(n) for n in arr.shape)
        h.update(f"{entry['member']}\0{arr.dtype.str}\0{shape}\0".encode("utf-8"))
        h.update(arr.tobytes(order="C"))
    return h.hexdigest()


def _create_temp(path: Path):
    """Create a fresh temp file next to path; os.open with 0o666 lets the umask set its mode."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a unique temporary file next to {path}")


def _write_zip(f, meta_bytes: bytes, arrays: list) -> None:
    """Write meta.json then each array as an uncompressed .npy member."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(META_MEMBER, date_time=_ZIP_DATE), meta_bytes)
        for member, arr in arrays:
            info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
            with zf.open(info, "w") as w:
                np.save(w, arr, allow_pickle=False)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- load

def _read(f, path: Path) -> Checkpoint:
    """Parse and verify an open checkpoint file."""
    file_size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError(f"checkpoint {path} has duplicate zip members")
        by_name = {i.filename: i for i in infos}
        for info in infos:
            if info.file_size > MAX_MEMBER_BYTES or info.compress_size > MAX_MEMBER_BYTES:
                raise CheckpointError(
                    f"checkpoint {path}: member {info.filename!r} declares "
                    f"{max(info.file_size, info.compress_size)} bytes, more than the "
                    f"{MAX_MEMBER_BYTES}-byte limit; the file is corrupt or forged")
            # zipfile asks the file for compress_size bytes at once: a forged size would make
            # a tiny file allocate that much before the short read is noticed.
            if info.header_offset + info.compress_size > file_size:
                raise CheckpointError(
                    f"checkpoint {path}: member {info.filename!r} claims {info.compress_size} "
                    f"stored bytes at offset {info.header_offset}, but the file holds only "
                    f"{file_size}; it is truncated or forged")
            if info.compress_type not in _READABLE_COMPRESSION:
                raise CheckpointError(
                    f"checkpoint {path}: member {info.filename!r} uses zip compression method "
                    f"{info.compress_type}; pylenet reads only stored or deflated members")
        if META_MEMBER not in by_name:
            raise CheckpointError(f"checkpoint {path} has no {META_MEMBER}; "
                                  f"it is not a pylenet checkpoint")
        meta = _parse_meta(zf.read(META_MEMBER), path)
        entries = meta["arrays"]

        expected = {META_MEMBER} | {e["member"] for e in entries}
        missing, unexpected = expected - set(names), set(names) - expected
        if missing:
            raise CheckpointError(f"checkpoint {path} is missing members {sorted(missing)}")
        if unexpected:
            raise CheckpointError(f"checkpoint {path} has unexpected members {sorted(unexpected)}")

        arrays = [_read_npy(zf.read(e["member"]), e, path) for e in entries]

    if _digest(entries, arrays) != meta["sha256"]:
        raise CheckpointError(f"checkpoint {path}: SHA-256 of the arrays does not match meta.json; "
                              f"the file is corrupt")
    params = {e["name"]: a for e, a in zip(entries, arrays) if e["group"] == "param"}
    state = {e["name"]: a for e, a in zip(entries, arrays) if e["group"] == "optim"}
    optimizer = None
    if meta["optimizer"] is not None:
        optimizer = {"config": meta["optimizer"]["config"], "state": state}
    return Checkpoint(arch=meta["arch"], params=params, optimizer=optimizer,
                      epoch=meta["epoch"], extra=meta["extra"])


def _parse_meta(raw: bytes, path: Path) -> dict:
    """Decode meta.json and check every field load relies on."""
    def bad(what):
        return CheckpointError(f"checkpoint {path}: meta.json {what}")

    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise bad(f"is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise bad("is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"checkpoint {path} is not a pylenet checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT_NAME!r})")
    version = meta.get("version")
    if not _is_int(version) or version < 1:
        raise bad(f"has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} was written by a newer pylenet "
                              f"(format version {version} > {FORMAT_VERSION}); upgrade pylenet to read it")
    for key, kind in (("arch", dict), ("extra", dict), ("arrays", list), ("sha256", str)):
        if not isinstance(meta.get(key), kind):
            raise bad(f"field {key!r} is missing or not a {kind.__name__}")
    if not _is_int(meta.get("epoch")):
        raise bad("field 'epoch' is missing or not an int")
    opt = meta.get("optimizer", ())
    if opt is not None and not (isinstance(opt, dict) and isinstance(opt.get("config"), dict)):
        raise bad("field 'optimizer' must be null or an object with a 'config' object")

    seen = set()
    for i, e in enumerate(meta["arrays"]):
        if not (isinstance(e, dict) and e.get("group") in GROUPS and isinstance(e.get("name"), str)
                and isinstance(e.get("dtype"), str) and isinstance(e.get("shape"), list)
                and all(_is_int(n) and n >= 0 for n in e["shape"])):
            raise bad(f"array entry {i} is malformed: {e!r}")
        if e.get("member") != f"{e['group']}/{e['name']}.npy" or e["member"] in seen:
            raise bad(f"array entry {i} has a bad or duplicate member name {e.get('member')!r}")
        if e["group"] == "optim" and opt is None:
            raise bad(f"array entry {i} holds optimizer state but 'optimizer' is null")
        seen.add(e["member"])
    return meta


def _read_npy(data: bytes, entry: dict, path: Path) -> np.ndarray:
    """Parse one .npy member without pickle, check it against meta, and return a writable copy."""
    member = entry["member"]
    bio = io.BytesIO(data)
    version = np.lib.format.read_magic(bio)
    try:
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(bio)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(bio)
        else:
            raise CheckpointError(f"checkpoint {path}: {member} uses unsupported .npy version {version}")
    except _NPY_HEADER_ERRORS as e:
        raise CheckpointError(f"checkpoint {path}: {member} has an unreadable .npy header: "
                              f"{type(e).__name__}: {e}") from e
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        raise CheckpointError(f"checkpoint {path}: {member} has non-numeric dtype {dtype}")
    if dtype.str != entry["dtype"] or list(shape) != entry["shape"]:
        raise CheckpointError(
            f"checkpoint {path}: {member} holds {dtype.str} {list(shape)} but meta.json says "
            f"{entry['dtype']} {entry['shape']}")
    # Compare byte counts before touching the data so a forged shape cannot trigger a huge allocation.
    count = math.prod(shape)
    offset = bio.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise CheckpointError(f"checkpoint {path}: {member} has {len(data) - offset} data bytes, "
                              f"expected {count * dtype.itemsize} for {dtype.str} {list(shape)}")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return np.array(flat.reshape(shape, order="F" if fortran else "C"), order="C", copy=True)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
