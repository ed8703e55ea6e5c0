"""Fuzzing the two file readers, pylenet.data.read_idx and pylenet.checkpoint.load_checkpoint,
with hypothesis over bytes: random bytes, truncated, bit-flipped and spliced versions of the
valid seeds in tests/corpus/, headers that promise gigabytes, and mutations made below the
gzip/zip layer (so that the inner parser, not the CRC, sees them). Every input must give either
a well-formed result or a ValueError (CheckpointError is one) whose message names the file; never
another exception, a hang (each call runs under a 5 s alarm and must finish in 2 s) or a large
allocation (tracemalloc peak below 64 MiB).

The corpus itself is run too: files named broken-* must be refused, the others must load.
`python tests/test_fuzz.py` rewrites the corpus (deterministically) from build_corpus below.
How many examples each fuzzer ran: `pytest tests/test_fuzz.py --hypothesis-show-statistics`.
"""
import gzip
import io
import json
import os
import signal
import struct
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pylenet.checkpoint as ck
from pylenet.data import read_idx

CORPUS = Path(__file__).resolve().parent / "corpus"
# zipfile warns when the fuzzer writes a duplicate member; numpy when it re-parses a header.
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning",
                                        "ignore:Reading `.npy`:UserWarning",
                                        "ignore:invalid escape sequence:DeprecationWarning")
MAX_SECONDS = 2.0
MAX_PEAK_BYTES = 64 << 20
_SCALE = float(os.environ.get("PYLENET_FUZZ_SCALE", "1"))


def fuzz_settings(n):
    return settings(max_examples=max(10, int(n * _SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------
# the seed corpus (tiny files; `python tests/test_fuzz.py` writes them)

_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr):
    """The IDX encoding of arr: magic 00 00 <dtype code> <ndim>, big-endian u32 dims, payload."""
    big = arr.astype(arr.dtype.newbyteorder(">"))
    head = bytes([0, 0, _IDX_CODES[big.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + big.tobytes()


def gz(data):
    return gzip.compress(data, mtime=0)


def seed_arrays():
    """The valid IDX seeds: name -> array."""
    rng = np.random.default_rng(1998)
    return {
        "labels-u8.idx1": rng.integers(0, 10, 12).astype(np.uint8),
        "images-u8.idx3.gz": rng.integers(0, 256, (3, 5, 4)).astype(np.uint8),
        "signed-i1.idx2": rng.integers(-128, 128, (2, 3)).astype(np.int8),
        "ints-i2.idx4.gz": rng.integers(-9, 9, (1, 2, 2, 2)).astype(">i2"),
        "floats-f8.idx2": rng.standard_normal((2, 3)).astype(">f8"),
        "floats-f4.idx1.gz": rng.standard_normal(5).astype(">f4"),
        "empty-i4.idx2": np.zeros((0, 7), ">i4"),
    }


def seed_checkpoints():
    """The valid checkpoint seeds: name -> Checkpoint."""
    rng = np.random.default_rng(5)
    full = ck.Checkpoint(
        arch={"name": "LeNet5", "activation": "tanh", "pooling": "avg", "num_classes": 3, "seed": 1},
        params={"C1.weight": rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
                "C1.bias": np.zeros(2, np.float32), "count": np.array(7, np.int64),
                "mask": np.array([True, False]), "wide": np.arange(4, dtype=">u2")},
        optimizer={"config": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "steps": 3},
                   "state": {"momentum.0": rng.standard_normal((2, 1, 3, 3)).astype(np.float32)}},
        epoch=2, extra={"history": [{"loss": 1.5, "accuracy": 0.25}], "note": "ünïcödé"})
    bare = ck.Checkpoint(arch={"name": "Tiny"}, params={"w": np.ones((2, 2), np.float32)})
    return {"tiny.ckpt": full, "tiny-no-optimizer.ckpt": bare}


def _zip_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _zip(members, compression=zipfile.ZIP_STORED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                        compress_type=compression)
    return out.getvalue()


def _with_meta(data, change):
    """The checkpoint `data` with meta.json replaced by change(meta dict)."""
    members = _zip_members(data)
    meta = json.loads(members["meta.json"])
    change(meta)
    members["meta.json"] = json.dumps(meta).encode()
    return _zip(members)


def _forge_central_size(data, size, field=24):
    """Every central-directory entry of a zip claims `size` uncompressed bytes (field 24), or
    compressed bytes (field 20)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at >= 0:
        struct.pack_into("<I", out, at + field, size)
        at = out.find(b"PK\x01\x02", at + 4)
    return bytes(out)


def build_corpus(folder=CORPUS):
    """Write the seed corpus: valid IDX files and checkpoints, and broken-* ones of each."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, arr in seed_arrays().items():
        files[name] = gz(idx_bytes(arr)) if name.endswith(".gz") else idx_bytes(arr)
    labels = idx_bytes(seed_arrays()["labels-u8.idx1"])
    images = idx_bytes(seed_arrays()["images-u8.idx3.gz"])
    files.update({
        "broken-empty.idx": b"",
        "broken-bad-magic.idx": b"\x01\x00" + labels[2:],
        "broken-unknown-dtype.idx": b"\x00\x00\x0a" + labels[3:],
        "broken-zero-ndim.idx": b"\x00\x00\x08\x00",
        "broken-truncated-header.idx3": images[:9],
        "broken-truncated-payload.idx3": images[:-1],
        "broken-trailing-byte.idx1.gz": gz(labels + b"\x00"),
        "broken-forged-4gib.idx3.gz": gz(images[:4] + struct.pack(">3I", 2 ** 16, 2 ** 8, 2 ** 8)
                                         + images[16:]),
        "broken-forged-1gib-raw.idx1": labels[:4] + struct.pack(">I", 2 ** 30) + labels[8:],
        "broken-forged-1gib.idx1.gz": gz(labels[:4] + struct.pack(">I", 2 ** 30) + labels[8:]),
        "broken-gzip-crc.idx1.gz": gz(labels)[:-8] + b"\xde\xad\xbe\xef" + gz(labels)[-4:],
        "broken-gzip-truncated.idx3.gz": gz(images)[:-10],
        # Found by this fuzzer: an empty shape whose other dims overflow numpy's size type.
        "broken-empty-huge-shape.idx4": bytes([0, 0, 8, 4]) + struct.pack(">4I", 0, 2 ** 16, 2 ** 16, 2 ** 31),
    })
    ckpts = {}
    for name, c in seed_checkpoints().items():
        ck.save_checkpoint(folder / name, c)
        ckpts[name] = files[name] = (folder / name).read_bytes()
    tiny = ckpts["tiny.ckpt"]
    files.update({
        "broken-not-a-zip.ckpt": b"PK\x03\x04 not really a zip",
        "broken-truncated.ckpt": tiny[: len(tiny) // 2],
        "broken-flipped-data.ckpt": _flip_member_byte(tiny, "param/C1.weight.npy"),
        "broken-newer-version.ckpt": _with_meta(tiny, lambda m: m.update(version=ck.FORMAT_VERSION + 1)),
        "broken-other-format.ckpt": _with_meta(tiny, lambda m: m.update(format="something-else")),
        "broken-shape-mismatch.ckpt": _with_meta(tiny, lambda m: m["arrays"][0].update(shape=[3, 1, 3, 3])),
        "broken-forged-size.ckpt": _forge_central_size(tiny, 2 ** 32 - 2),
        # Found by this fuzzer: a stored size just under the 1 GiB limit over a 3 KB file.
        "broken-forged-stored-size.ckpt": _forge_central_size(tiny, ck.MAX_MEMBER_BYTES - 1, field=20),
        "broken-deep-json.ckpt": _zip(dict(_zip_members(tiny), **{"meta.json": b"[" * 50000 + b"]" * 50000}),
                                      zipfile.ZIP_DEFLATED),
        "broken-lzma.ckpt": _corrupt_compressed(tiny, zipfile.ZIP_LZMA),
        "broken-bzip2.ckpt": _corrupt_compressed(tiny, zipfile.ZIP_BZIP2),
        # Found by this fuzzer: an LZMA member whose header asks for a 4 GiB dictionary.
        "broken-lzma-4gib-dictionary.ckpt": _lzma_dictionary(tiny, 2 ** 32 - 1),
        # Found by this fuzzer: a .npy header that neither parses nor tokenizes.
        "broken-npy-header-syntax.ckpt": _zip(dict(_zip_members(tiny), **{
            "param/C1.bias.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 15) + b"{'descr': ((((\n"})),
    })
    for name, data in files.items():
        assert len(data) < 20_000, (name, len(data))
        (folder / name).write_bytes(data)
    return files


def _flip_member_byte(data, member):
    """Flip the last byte of one member and rewrite the zip (valid CRCs, wrong SHA-256)."""
    members = _zip_members(data)
    raw = bytearray(members[member])
    raw[-1] ^= 0x01
    members[member] = bytes(raw)
    return _zip(members)


def _lzma_dictionary(data, size):
    """The checkpoint with LZMA members whose properties ask for a `size`-byte dictionary."""
    out = bytearray(_zip(_zip_members(data), zipfile.ZIP_LZMA))
    at = out.find(b"PK\x03\x04")
    while at >= 0:  # local header (30 bytes + name), then LZMA: version(2) size(2) lc/lp/pb(1) dict(4)
        data_at = at + 30 + struct.unpack_from("<H", out, at + 26)[0]
        struct.pack_into("<I", out, data_at + 5, size)
        at = out.find(b"PK\x03\x04", at + 4)
    return bytes(out)


def _corrupt_compressed(data, compression):
    """The checkpoint recompressed with `compression`, then damaged inside meta.json's stream."""
    out = bytearray(_zip(_zip_members(data), compression))
    start = out.find(b"meta.json") + len("meta.json") + 4
    for i in range(start, start + 24):
        out[i] ^= 0x5A
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# one bounded call


class Hang(BaseException):
    """Raised by the alarm: a BaseException so that no `except Exception` in a reader eats it."""


def _on_alarm(signum, frame):
    raise Hang(f"still running after {5} s")


@pytest.fixture(scope="module", autouse=True)
def traced():
    """tracemalloc on for the module; numpy registers its buffers with it too."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    yield
    signal.signal(signal.SIGALRM, old)
    if not was:
        tracemalloc.stop()


def bounded_call(fn, path):
    """(result or exception, seconds, peak traced bytes above the start) of fn(path)."""
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        outcome = fn(path)
    except Hang:
        raise
    except Exception as e:  # judged by the caller
        outcome = e
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    return outcome, seconds, tracemalloc.get_traced_memory()[1] - base


def check_reader(fn, path, data, expect=None):
    """Feed `data` as the file `path` to fn; the outcome must be a result or a ValueError naming
    the file, within the time and memory bounds. expect: "loaded"/"refused" or None (either).
    Returns "loaded" or "refused"."""
    path.write_bytes(data)
    outcome, seconds, peak = bounded_call(fn, path)
    assert seconds < MAX_SECONDS, f"{path.name}: took {seconds:.2f} s (bound {MAX_SECONDS} s)"
    assert peak < MAX_PEAK_BYTES, f"{path.name}: peak allocation {peak} bytes (bound {MAX_PEAK_BYTES})"
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, ValueError):
            raise AssertionError(f"{path.name}: {type(outcome).__name__} instead of ValueError: "
                                 f"{outcome}") from outcome
        assert str(path) in str(outcome), f"the message does not name the file: {outcome}"
        result = "refused"
    else:
        result = "loaded"
    if expect is not None:
        assert result == expect, f"{path.name}: {result}, expected {expect} ({outcome})"
    return result


def _sane_idx(arr):
    assert isinstance(arr, np.ndarray) and 1 <= arr.ndim <= 4 and arr.dtype.isnative
    return arr


def _sane_checkpoint(c):
    assert isinstance(c, ck.Checkpoint) and isinstance(c.arch, dict) and isinstance(c.extra, dict)
    assert all(isinstance(a, np.ndarray) for a in c.params.values())
    return c


def read_idx_checked(path):
    return _sane_idx(read_idx(path))


def load_checkpoint_checked(path):
    return _sane_checkpoint(ck.load_checkpoint(path))


# ---------------------------------------------------------------------------------------------
# the corpus


def _corpus(suffixes):
    names = os.listdir(CORPUS) if CORPUS.is_dir() else []
    return sorted(n for n in names if n.endswith(suffixes))


IDX_CORPUS = _corpus((".idx", ".idx1", ".idx2", ".idx3", ".idx4", ".gz"))
CKPT_CORPUS = _corpus((".ckpt",))


def test_corpus_is_small_and_complete():
    files = IDX_CORPUS + CKPT_CORPUS
    assert len(files) == len(list(CORPUS.iterdir()))
    assert all((CORPUS / f).stat().st_size < 20_000 for f in files)
    assert set(seed_arrays()) <= set(files) and set(seed_checkpoints()) <= set(files)


@pytest.mark.parametrize("name", IDX_CORPUS)
def test_idx_corpus(name, tmp_path):
    data = (CORPUS / name).read_bytes()
    result = check_reader(read_idx_checked, tmp_path / name, data,
                          "refused" if name.startswith("broken-") else "loaded")
    if result == "loaded":
        want = seed_arrays()[name]
        got = read_idx(tmp_path / name)
        assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", CKPT_CORPUS)
def test_checkpoint_corpus(name, tmp_path):
    data = (CORPUS / name).read_bytes()
    result = check_reader(load_checkpoint_checked, tmp_path / name, data,
                          "refused" if name.startswith("broken-") else "loaded")
    if result == "loaded":
        want, got = seed_checkpoints()[name], ck.load_checkpoint(tmp_path / name)
        assert got.arch == want.arch and got.epoch == want.epoch and got.extra == want.extra
        for k, v in want.params.items():
            assert got.params[k].dtype == v.dtype and got.params[k].tobytes() == v.tobytes(), k


@pytest.mark.parametrize("name, needle", [
    ("broken-newer-version.ckpt", "newer pylenet"),
    ("broken-forged-size.ckpt", "more than the"),
    ("broken-forged-stored-size.ckpt", "claims 1073741823 stored bytes"),
    ("broken-flipped-data.ckpt", "SHA-256"),
    ("broken-forged-4gib.idx3.gz", "byte limit"),
    ("broken-forged-1gib-raw.idx1", "header promises"),
    ("broken-empty-huge-shape.idx4", "is empty but its other dims exceed"),
    ("broken-lzma-4gib-dictionary.ckpt", "compression method 14"),
    ("broken-bzip2.ckpt", "compression method 12"),
    ("broken-npy-header-syntax.ckpt", "unreadable .npy header"),
])
def test_corpus_messages_say_what_is_wrong(name, needle, tmp_path):
    path = tmp_path / name
    path.write_bytes((CORPUS / name).read_bytes())
    fn = ck.load_checkpoint if name.endswith(".ckpt") else read_idx
    with pytest.raises(ValueError, match=needle):
        fn(path)


# ---------------------------------------------------------------------------------------------
# mutations


def _flip(data, positions):
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


@st.composite
def byte_mutations(draw, seed):
    """One generic mutation of `seed`, named by an event."""
    how = draw(st.sampled_from(["random", "truncate", "flip", "overwrite", "insert", "delete",
                                "duplicate"]))
    event(f"mutation: {how}")
    if how == "random" or not seed:
        return draw(st.binary(max_size=600))
    n = len(seed)
    i = draw(st.integers(0, n - 1))
    j = draw(st.integers(i, min(n, i + 64)))
    if how == "truncate":
        return seed[:i]
    if how == "flip":
        return _flip(seed, draw(st.lists(st.integers(0, 8 * n - 1), min_size=1, max_size=8)))
    if how == "overwrite":
        return seed[:i] + draw(st.binary(min_size=j - i, max_size=j - i)) + seed[j:]
    if how == "insert":
        return seed[:i] + draw(st.binary(min_size=1, max_size=64)) + seed[i:]
    if how == "delete":
        return seed[:i] + seed[j:]
    return seed[:j] + seed[i:]  # duplicate a stretch


DIMS = st.one_of(st.integers(0, 8), st.sampled_from([2 ** 16, 2 ** 24, 2 ** 31, 2 ** 32 - 1]),
                 st.integers(0, 2 ** 32 - 1))


@st.composite
def idx_inputs(draw):
    """Bytes for read_idx: a mutated seed, a forged header over a seed's payload, or a mutation
    made inside the gzip stream (recompressed, so the IDX parser sees it)."""
    seeds = {name: idx_bytes(arr) for name, arr in seed_arrays().items()}
    name = draw(st.sampled_from(sorted(seeds)))
    raw = seeds[name]
    how = draw(st.sampled_from(["bytes", "bytes", "forged header", "inside gzip"]))
    if how == "forged header":
        code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x0A, 0xFF]))
        ndim = draw(st.sampled_from([1, 2, 3, 4, 0, 5, 255]))
        dims = draw(st.lists(DIMS, min_size=ndim, max_size=ndim)) if ndim <= 5 else []
        payload = raw[4 + 4 * raw[3]:]
        data = bytes([0, 0, code, ndim]) + struct.pack(f">{len(dims)}I", *dims) + payload
        event("idx: forged header")
        return gz(data) if draw(st.booleans()) else data
    if how == "inside gzip":
        event("idx: mutated inside gzip")
        return gz(draw(byte_mutations(raw)))
    seed = gz(raw) if name.endswith(".gz") else raw
    event("idx: mutated bytes" + (" (gzip)" if name.endswith(".gz") else ""))
    return draw(byte_mutations(seed))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats()
    | st.text(max_size=8) | st.sampled_from(["param", "optim", "<f4", "|u1", "O", "param/w.npy"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


@st.composite
def meta_mutation(draw, meta):
    """Replace, delete or add one field somewhere in meta.json's object tree."""
    node, path = meta, []
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node, path = child, path + [key]
            continue
        what = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if what == "replace":
            node[key] = draw(JSON_VALUES)
        elif what == "delete":
            del node[key]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=6))] = draw(JSON_VALUES)
        else:
            node.append(draw(JSON_VALUES))
        event(f"meta.json: {what}")
        return meta
    return meta


@st.composite
def checkpoint_inputs(draw):
    """Bytes for load_checkpoint: a mutated seed file, or a rebuilt zip (valid CRCs) whose
    meta.json, .npy headers or data, member names or compression were changed."""
    seeds = {name: (CORPUS / name).read_bytes() for name in seed_checkpoints()}
    seed = seeds[draw(st.sampled_from(sorted(seeds)))]
    how = draw(st.sampled_from(["bytes", "bytes", "meta.json", "npy", "members", "compression",
                                "forged sizes"]))
    event(f"checkpoint: {how}")
    if how == "bytes":
        return draw(byte_mutations(seed))
    if how == "forged sizes":
        return _forge_central_size(seed, draw(st.integers(0, 2 ** 32 - 1)), draw(st.sampled_from([20, 24])))
    members = _zip_members(seed)
    compression = zipfile.ZIP_STORED
    if how == "meta.json":
        meta = json.loads(members["meta.json"])
        if draw(st.booleans()):
            members["meta.json"] = json.dumps(draw(meta_mutation(meta))).encode()
        else:
            members["meta.json"] = draw(byte_mutations(members["meta.json"]))
    elif how == "npy":
        name = draw(st.sampled_from(sorted(n for n in members if n.endswith(".npy"))))
        members[name] = draw(byte_mutations(members[name]))
    elif how == "members":
        name = draw(st.sampled_from(sorted(members)))
        action = draw(st.sampled_from(["drop", "rename", "add", "duplicate"]))
        if action == "drop":
            del members[name]
        elif action == "rename":
            members[draw(st.text(max_size=12))] = members.pop(name)
        elif action == "add":
            members[draw(st.text(min_size=1, max_size=12))] = draw(st.binary(max_size=64))
        else:  # a second member of the same name
            out = io.BytesIO(_zip(members))
            with zipfile.ZipFile(out, "a") as zf:
                zf.writestr(name, members[name])
            return out.getvalue()
    else:
        compression = draw(st.sampled_from([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]))
        data = _zip(members, compression)
        return draw(byte_mutations(data)) if draw(st.booleans()) else data
    try:
        return _zip(members, compression)
    except (UnicodeEncodeError, ValueError):  # a member name zipfile itself refuses to write
        return seed


@fuzz_settings(1500)
@given(data=idx_inputs())
def test_fuzz_read_idx(data, tmp_path):
    event("read_idx " + check_reader(read_idx_checked, tmp_path / "fuzzed.idx", data))


@fuzz_settings(1500)
@given(data=checkpoint_inputs())
def test_fuzz_load_checkpoint(data, tmp_path):
    event("load_checkpoint " + check_reader(load_checkpoint_checked, tmp_path / "fuzzed.ckpt", data))


# ---------------------------------------------------------------------------------------------
# bombs: small files whose headers or streams promise far more than they hold


@pytest.mark.parametrize("dims", [(2 ** 29,), (2 ** 14, 2 ** 14, 2), (255, 255, 255, 64)])
def test_gzip_idx_promising_up_to_a_gigabyte_costs_only_its_real_data(dims, tmp_path):
    """A header within the 1 GiB limit over a few bytes of data: refused with no big buffer."""
    data = gz(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + b"\x01" * 100)
    check_reader(read_idx_checked, tmp_path / "promise.idx.gz", data, "refused")


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_checkpoint_member_declaring_a_gigabyte_over_a_few_bytes(compression, tmp_path):
    """Just under the 1 GiB member limit: zipfile reads only the bytes really there, so the file
    loads (its CRCs and SHA-256 hold) or is refused, without a gigabyte buffer."""
    seed = _zip(_zip_members((CORPUS / "tiny.ckpt").read_bytes()), compression)
    check_reader(load_checkpoint_checked, tmp_path / "forged.ckpt",
                 _forge_central_size(seed, ck.MAX_MEMBER_BYTES - 1))


if __name__ == "__main__":
    written = build_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
    print(f"wrote {len(written)} corpus files")
