"""Tests for pylenet.data: IDX parsing, MNIST loading and download, normalisation, DataLoader."""
import gzip
import hashlib
import http.server
import importlib.util
import os
import re
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
DATA_PY = REPO / "pylenet" / "data.py"
sys.path.insert(0, str(REPO))
try:
    from pylenet import data
except ImportError:
    # The package __init__ may need the compiled extension; data.py is pure Python, so load it
    # from its file when the extension is not built.
    _spec = importlib.util.spec_from_file_location("pylenet.data", DATA_PY)
    data = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(data)

CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TEST_FILES = data.MNIST_FILES["test"]


def idx_bytes(arr, code):
    """Serialise an array as IDX with the given dtype code (big-endian payload)."""
    arr = np.asarray(arr, dtype=CODES[code])
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write(path, payload, compress=False):
    """Write bytes to path, gzip-compressed if asked; return the path."""
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def readme_md5s(mnist_dir):
    """The uncompressed MD5 table of the shared folder's README."""
    text = (mnist_dir / "README.md").read_text()
    return dict(re.findall(r"\|\s*(\S+\.gz)\s*\|\s*([0-9a-f]{32})\s*\|", text))


@pytest.fixture(autouse=True)
def offline_env(monkeypatch):
    """Keep every test off the real network and away from the user's cache and settings."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "PYLENET_DATA", "PYLENET_MNIST_MIRRORS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setattr(data, "DEFAULT_MIRRORS", ["http://127.0.0.1:9/unused-default/"])


@pytest.fixture(scope="module")
def train(mnist_dir):
    """The real training split, loaded once per module."""
    return data.load_mnist("train", root=mnist_dir, download=False)


@pytest.fixture(scope="module")
def test_split(mnist_dir):
    """The real test split, loaded once per module."""
    return data.load_mnist("test", root=mnist_dir, download=False)


# ---------------------------------------------------------------------------- read_idx

def test_data_module_needs_no_extension():
    """data.py loads in a fresh interpreter without importing the package or its extension."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('pylenet_data', {str(DATA_PY)!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "assert not [m for m in sys.modules if m.startswith('pylenet.')], sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO.parent)


def test_checksum_table_matches_readme(mnist_dir):
    md5s = readme_md5s(mnist_dir)
    assert len(md5s) == 4
    assert {name: md5 for name, (_, md5, _) in data.MNIST_CHECKSUMS.items()} == md5s
    assert set(data.MNIST_CHECKSUMS) == {n for pair in data.MNIST_FILES.values() for n in pair}


def test_read_idx_real_files(mnist_dir, train, test_split):
    md5s = readme_md5s(mnist_dir)
    arrays = dict(zip(data.MNIST_FILES["train"] + TEST_FILES, train + test_split))
    for name, (n, code) in {"train-images-idx3-ubyte.gz": (60000, 3),
                            "train-labels-idx1-ubyte.gz": (60000, 1),
                            "t10k-images-idx3-ubyte.gz": (10000, 3),
                            "t10k-labels-idx1-ubyte.gz": (10000, 1)}.items():
        arr = arrays[name] if "labels" not in name else data.read_idx(mnist_dir / name)
        assert arr.dtype == np.uint8 and arr.shape[0] == n and arr.ndim == code
        # Re-serialising what read_idx returned must give the canonical bytes.
        assert hashlib.md5(idx_bytes(arr, 0x08)).hexdigest() == md5s[name]
    assert train[1][:5].tolist() == [5, 0, 4, 1, 9]
    assert train[0].shape == (60000, 28, 28)


def test_read_idx_raw_copy(mnist_dir, tmp_path):
    for name in TEST_FILES:
        raw = write(tmp_path / name[:-3], gzip.decompress((mnist_dir / name).read_bytes()))
        np.testing.assert_array_equal(data.read_idx(raw), data.read_idx(mnist_dir / name))
    # Detection is by magic bytes: a gzip file without the suffix and a raw one with it.
    gz_no_suffix = write(tmp_path / "labels", (mnist_dir / TEST_FILES[1]).read_bytes())
    raw_bytes = (tmp_path / TEST_FILES[1][:-3]).read_bytes()
    raw_with_suffix = write(tmp_path / "labels-raw.gz", raw_bytes)
    np.testing.assert_array_equal(data.read_idx(gz_no_suffix), data.read_idx(raw_with_suffix))


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_read_idx_every_dtype(tmp_path, code, compress):
    want = (np.arange(2 * 3 * 4).reshape(2, 3, 4) - 7).astype(CODES[code])
    got = data.read_idx(write(tmp_path / "x.idx", idx_bytes(want, code), compress))
    assert got.dtype == np.dtype(CODES[code]).newbyteorder("=")
    assert got.dtype.isnative and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, want)
    got[0, 0, 0] = 1  # returned arrays are writable


@settings(max_examples=30, deadline=None)
@given(code=st.sampled_from(sorted(CODES)), compress=st.booleans(),
       shape=st.lists(st.integers(0, 5), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_read_idx_roundtrip_property(tmp_path_factory, code, compress, shape, seed):
    rng = np.random.default_rng(seed)
    want = (rng.standard_normal(shape) * 100).astype(CODES[code])
    path = write(tmp_path_factory.mktemp("idx") / "p.idx", idx_bytes(want, code), compress)
    np.testing.assert_array_equal(data.read_idx(path), want)


def header(code, dims):
    """An IDX header alone, for forging broken files."""
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("payload, needle", [
    (b"\x01\x00\x08\x01" + struct.pack(">I", 2) + b"ab", "bad IDX magic"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 2) + b"ab", "dtype code 0x07"),
    (b"\x00\x00\x08\x00", "ndim is 0"),
    (b"\x00\x00\x08\x05" + struct.pack(">5I", 1, 1, 1, 1, 1) + b"a", "ndim is 5"),
    (b"\x00\x00", "too short"),
    (header(0x08, (2, 3))[:-2], "header truncated"),
    (header(0x08, (1000,)) + bytes(999), "payload has 999 bytes, header promises 1000"),
    (header(0x0C, (10,)) + bytes(44), "header promises 40"),
    (header(0x08, (4,)) + bytes(5), "header promises 4"),
])
def test_read_idx_rejects(tmp_path, payload, needle, compress):
    path = write(tmp_path / "broken-file.idx", payload, compress)
    with pytest.raises(ValueError, match=re.escape(needle)) as err:
        data.read_idx(path)
    assert "broken-file.idx" in str(err.value)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dims, needle", [
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), "byte limit"),  # over the 1 GiB cap
    ((1000, 1000, 900), "payload has 10 bytes, header promises 900000000"),  # under it
])
def test_read_idx_forged_dims_fail_fast(tmp_path, dims, needle, compress):
    path = write(tmp_path / "forged.idx", header(0x08, dims) + bytes(10), compress)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=needle) as err:
            data.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2.0
    assert peak < 8 << 20, f"forged header made read_idx allocate {peak} bytes"
    assert "forged.idx" in str(err.value)


def test_read_idx_corrupted_gzip(mnist_dir, tmp_path):
    blob = bytearray((mnist_dir / TEST_FILES[1]).read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 16] = bytes(b ^ 0xFF for b in blob[mid:mid + 16])
    path = write(tmp_path / "flipped-labels.gz", bytes(blob))
    with pytest.raises(ValueError, match="flipped-labels.gz"):
        data.read_idx(path)
    cut = write(tmp_path / "cut-labels.gz", bytes(blob[:mid]))
    with pytest.raises(ValueError, match="cut-labels.gz.*corrupted gzip"):
        data.read_idx(cut)
    bad_header = write(tmp_path / "bad-header.gz", b"\x1f\x8b" + bytes(30))
    with pytest.raises(ValueError, match="bad-header.gz"):
        data.read_idx(bad_header)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.read_idx(tmp_path / "nope.idx")


# ---------------------------------------------------------------------------- load_mnist, local

def test_load_mnist_from_root(mnist_dir, train, test_split):
    for (images, labels), n in ((train, 60000), (test_split, 10000)):
        assert images.dtype == np.uint8 and images.shape == (n, 28, 28)
        assert labels.dtype == np.int64 and labels.shape == (n,)
        assert labels.min() == 0 and labels.max() == 9
    assert test_split[1][:5].tolist() == [7, 2, 1, 0, 4]
    images, labels = data.load_mnist("test", root=str(mnist_dir), download=False)
    np.testing.assert_array_equal(labels, test_split[1])


def test_load_mnist_from_env(mnist_dir, test_split, monkeypatch):
    monkeypatch.setenv("PYLENET_DATA", str(mnist_dir))
    assert data.default_root() == mnist_dir
    images, labels = data.load_mnist("test", download=False)
    np.testing.assert_array_equal(images, test_split[0])


def test_default_root_uses_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_root() == tmp_path / "pylenet" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_root() == Path.home() / ".cache" / "pylenet" / "mnist"


def test_load_mnist_accepts_uncompressed(mnist_dir, test_split, tmp_path):
    for name in TEST_FILES:
        write(tmp_path / name[:-3], gzip.decompress((mnist_dir / name).read_bytes()))
    images, labels = data.load_mnist("test", root=tmp_path, download=False)
    np.testing.assert_array_equal(labels, test_split[1])


@pytest.mark.parametrize("split", ["val", "TRAIN", "", None])
def test_load_mnist_bad_split(split, tmp_path):
    with pytest.raises(ValueError, match=re.escape(repr(split))):
        data.load_mnist(split, root=tmp_path, download=False)


def test_load_mnist_missing_files(tmp_path, mnist_dir):
    (tmp_path / TEST_FILES[1]).write_bytes((mnist_dir / TEST_FILES[1]).read_bytes())
    with pytest.raises(FileNotFoundError) as err:
        data.load_mnist("test", root=tmp_path, download=False)
    msg = str(err.value)
    assert TEST_FILES[0] in msg and TEST_FILES[1] not in msg and str(tmp_path) in msg
    assert "root=" in msg and "PYLENET_DATA" in msg and "download=True" in msg
    assert sorted(os.listdir(tmp_path)) == [TEST_FILES[1]]


def test_load_mnist_rejects_inconsistent_files(tmp_path, mnist_dir):
    write(tmp_path / TEST_FILES[0], idx_bytes(np.zeros((3, 28, 28)), 0x08), compress=True)
    write(tmp_path / TEST_FILES[1], idx_bytes([1, 2], 0x08), compress=True)
    with pytest.raises(ValueError, match="2 labels"):
        data.load_mnist("test", root=tmp_path, download=False)
    write(tmp_path / TEST_FILES[1], idx_bytes([1, 2, 10], 0x08), compress=True)
    with pytest.raises(ValueError, match=f"{TEST_FILES[1]}.*0..9"):
        data.load_mnist("test", root=tmp_path, download=False)
    write(tmp_path / TEST_FILES[0], idx_bytes(np.zeros((3, 32, 32)), 0x08), compress=True)
    with pytest.raises(ValueError, match=f"{TEST_FILES[0]}.*28, 28"):
        data.load_mnist("test", root=tmp_path, download=False)


# ---------------------------------------------------------------------------- download

class MirrorHandler(http.server.BaseHTTPRequestHandler):
    """Serves the shared MNIST folder under /mnist/, optionally damaging what it sends."""

    def do_GET(self):
        """Serve one file, damaged according to the server's mode."""
        server = self.server
        server.requests.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        path = server.folder / name
        if not self.path.startswith("/mnist/") or not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        length = len(body)
        if server.mode == "flip":
            body = bytearray(body)
            body[len(body) // 2:len(body) // 2 + 64] = bytes(64)
        elif server.mode == "truncate":  # promises the full length, sends half
            body = body[:len(body) // 2]
        elif server.mode == "wrong":  # a valid gzip of the wrong content
            raw = bytearray(gzip.decompress(body))
            raw[-1] ^= 1
            body = gzip.compress(bytes(raw), compresslevel=1)
            length = len(body)
        elif server.mode == "raw":  # uncompressed bytes at the .gz URL
            body = gzip.decompress(body)
            length = len(body)
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(bytes(body))

    def log_message(self, *args):
        """Keep request logs out of the test output."""
        pass


@pytest.fixture
def mirror(mnist_dir):
    """Factory: start a local mirror in a given mode; returns (base URL, server)."""
    servers = []

    def start(mode="good"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
        server.daemon_threads = True
        server.folder, server.mode, server.requests = mnist_dir, mode, []
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/mnist/", server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url():
    """A 127.0.0.1 URL on a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist/"


def test_download_then_cache(mirror, tmp_path, test_split):
    url, server = mirror()
    cache = tmp_path / "cache" / "mnist"
    images, labels = data.load_mnist("test", root=cache, mirrors=[url], progress=False)
    np.testing.assert_array_equal(images, test_split[0])
    np.testing.assert_array_equal(labels, test_split[1])
    assert sorted(server.requests) == sorted(f"/mnist/{n}" for n in TEST_FILES)
    assert sorted(os.listdir(cache)) == sorted(TEST_FILES)
    umask = os.umask(0)
    os.umask(umask)
    for name in TEST_FILES:  # a shared cache must stay readable: files follow the umask
        assert stat.S_IMODE((cache / name).stat().st_mode) == 0o666 & ~umask
    data.load_mnist("test", root=cache, mirrors=[url], progress=False)
    assert len(server.requests) == 2, "a cached file was downloaded again"


def test_download_base_url_without_slash_and_progress(mirror, tmp_path, capsys):
    url, server = mirror()
    data.load_mnist("test", root=tmp_path, mirrors=url.rstrip("/"), progress=True)
    assert sorted(os.listdir(tmp_path)) == sorted(TEST_FILES)
    assert capsys.readouterr().out == ""  # progress goes to stderr via tqdm only


@pytest.mark.parametrize("mode, reason", [
    ("flip", "corrupted gzip"), ("truncate", "truncated response"),
    ("wrong", "checksum mismatch"), ("missing", "HTTP 404"),
])
def test_download_skips_bad_mirror(mirror, tmp_path, test_split, mode, reason):
    bad_url, bad = mirror(mode)
    if mode == "missing":
        bad.folder = tmp_path / "empty"
    good_url, good = mirror()
    images, labels = data.load_mnist("test", root=tmp_path, mirrors=[bad_url, good_url],
                                     progress=False)
    np.testing.assert_array_equal(labels, test_split[1])
    assert len(bad.requests) == 2 and len(good.requests) == 2
    assert sorted(os.listdir(tmp_path)) == sorted(TEST_FILES)  # no temp or partial files
    # The same mirror alone fails with that reason.
    with pytest.raises(data.DownloadError, match=reason):
        data.load_mnist("test", root=tmp_path / "alone", mirrors=[bad_url], progress=False)
    assert os.listdir(tmp_path / "alone") == []


def test_download_uncompressed_mirror(mirror, tmp_path, test_split):
    url, _ = mirror("raw")
    images, _ = data.load_mnist("test", root=tmp_path, mirrors=[url], progress=False)
    np.testing.assert_array_equal(images, test_split[0])
    assert sorted(os.listdir(tmp_path)) == sorted(n[:-3] for n in TEST_FILES)


def test_download_all_mirrors_fail(mirror, tmp_path, closed_port_url):
    bad_url, _ = mirror("flip")
    cache = tmp_path / "cache"
    with pytest.raises(data.DownloadError) as err:
        data.load_mnist("test", root=cache, mirrors=[bad_url, closed_port_url], progress=False)
    assert isinstance(err.value, RuntimeError)
    msg = str(err.value)
    assert bad_url + TEST_FILES[0] in msg and closed_port_url + TEST_FILES[0] in msg
    assert "PYLENET_DATA" in msg and "root=" in msg and "--data" in msg
    assert [url for url, _ in err.value.failures] == [bad_url + TEST_FILES[0],
                                                      closed_port_url + TEST_FILES[0]]
    assert os.listdir(cache) == []


def test_download_mirrors_from_env(mirror, tmp_path, monkeypatch, closed_port_url):
    good_url, good = mirror()
    bad_url, bad = mirror("flip")
    monkeypatch.setenv("PYLENET_MNIST_MIRRORS", f" {closed_port_url} ,{good_url}")
    data.load_mnist("test", root=tmp_path / "a", progress=False)
    assert len(good.requests) == 2
    # An explicit mirrors= argument wins over the environment.
    with pytest.raises(data.DownloadError) as err:
        data.load_mnist("test", root=tmp_path / "b", mirrors=[bad_url], progress=False)
    assert good_url not in str(err.value) and len(good.requests) == 2
    # Without either, DEFAULT_MIRRORS is used (patched to a dead local address here).
    monkeypatch.delenv("PYLENET_MNIST_MIRRORS")
    with pytest.raises(data.DownloadError, match="unused-default"):
        data.load_mnist("test", root=tmp_path / "c", progress=False)


def test_default_mirrors_and_files():
    assert data.MNIST_FILES["train"] == ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    assert data.MNIST_FILES["test"] == ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    assert issubclass(data.DownloadError, RuntimeError)


# ---------------------------------------------------------------------------- pad_and_normalize

def test_pad_and_normalize_values():
    img = np.zeros((3, 28, 28), np.uint8)
    img[:, 5, 7] = 255
    img[1, 0, 0] = 128
    x = data.pad_and_normalize(img)
    assert x.dtype == np.float32 and x.shape == (3, 1, 32, 32) and x.flags.c_contiguous
    background = (0.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(x[:, :, :2], background, rtol=1e-6)
    np.testing.assert_allclose(x[:, :, :, -2:], background, rtol=1e-6)
    assert np.all(x[0, 0, :2] == x[0, 0, 10, 10])  # pad equals an interior zero pixel exactly
    np.testing.assert_allclose(x[:, 0, 5 + 2, 7 + 2], (1.0 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[1, 0, 2, 2], (128 / 255 - 0.1307) / 0.3081, rtol=1e-6)


def test_pad_and_normalize_options():
    img = np.full((28, 28), 51, np.uint8)
    x = data.pad_and_normalize(img, pad=0, mean=0.0, std=1.0)
    assert x.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(x, 0.2, rtol=1e-6)
    assert data.pad_and_normalize(img, pad=4).shape == (1, 1, 36, 36)


@pytest.mark.parametrize("bad, exc", [
    (np.zeros((28, 28), np.float32), TypeError),
    ([[0] * 28] * 28, TypeError),
    (np.zeros((2, 1, 28, 28), np.uint8), ValueError),
    (np.zeros(28, np.uint8), ValueError),
])
def test_pad_and_normalize_rejects(bad, exc):
    with pytest.raises(exc):
        data.pad_and_normalize(bad)
    with pytest.raises(ValueError, match="std"):
        data.pad_and_normalize(np.zeros((28, 28), np.uint8), std=0.0)
    with pytest.raises(ValueError, match="pad"):
        data.pad_and_normalize(np.zeros((28, 28), np.uint8), pad=-1)


# ---------------------------------------------------------------------------- DataLoader

def indexed(n):
    """Images whose pixel value and label both encode the sample index."""
    images = np.repeat((np.arange(n) % 256).astype(np.uint8), 28 * 28).reshape(n, 28, 28)
    return images, np.arange(n)


def epoch_order(loader):
    """The sample order of one pass, checking that images stay aligned with labels."""
    ys = []
    for x, y in loader:
        assert x.dtype == np.float32 and x.shape == (len(y), 1, 32, 32) and x.flags.c_contiguous
        assert y.dtype == np.int64
        np.testing.assert_array_equal(x[:, 0, 16, 16], loader._lut[y % 256])
        ys.append(y)
    return np.concatenate(ys)


@pytest.mark.parametrize("n, batch, drop_last, batches, last", [
    (10, 3, False, 4, 1), (10, 3, True, 3, 3), (9, 3, False, 3, 3), (9, 3, True, 3, 3),
    (2, 5, False, 1, 2), (2, 5, True, 0, None), (7, 1, False, 7, 1),
])
def test_loader_batch_counts(n, batch, drop_last, batches, last):
    loader = data.DataLoader(*indexed(n), batch, drop_last=drop_last)
    sizes = [len(y) for _, y in loader]
    assert len(loader) == len(sizes) == batches and loader.num_samples == n
    assert sizes[-1:] == ([last] if last else [])
    assert all(s == batch for s in sizes[:-1])


def test_loader_covers_every_sample_once():
    loader = data.DataLoader(*indexed(1000), 64, seed=3)
    order = epoch_order(loader)
    assert sorted(order.tolist()) == list(range(1000))
    assert not np.array_equal(order, np.arange(1000))
    np.testing.assert_array_equal(order, np.random.default_rng([3, 0]).permutation(1000))


def test_loader_epochs_and_seeds():
    images, labels = indexed(500)
    a = data.DataLoader(images, labels, 50, seed=7)
    b = data.DataLoader(images, labels, 50, seed=7)
    a0, a1, a2 = epoch_order(a), epoch_order(a), epoch_order(a)
    assert a.epoch == 3
    np.testing.assert_array_equal(a0, epoch_order(b))  # same seed, same order
    assert not np.array_equal(a0, a1) and not np.array_equal(a1, a2)
    b.set_epoch(2)  # resume: epoch 2 reproduced without replaying 0 and 1
    np.testing.assert_array_equal(epoch_order(b), a2)
    np.testing.assert_array_equal(a1, np.random.default_rng([7, 1]).permutation(500))
    other = data.DataLoader(images, labels, 50, seed=8)
    assert not np.array_equal(epoch_order(other), a0)
    it = iter(b)  # the epoch advances when iteration starts, not at the first batch
    assert b.epoch == 4
    np.testing.assert_array_equal(np.concatenate([y for _, y in it]),
                                  np.random.default_rng([7, 3]).permutation(500))


def test_loader_no_shuffle():
    loader = data.DataLoader(*indexed(130), 32, shuffle=False)
    np.testing.assert_array_equal(epoch_order(loader), np.arange(130))
    np.testing.assert_array_equal(epoch_order(loader), np.arange(130))


def test_loader_matches_pad_and_normalize(test_split):
    images, labels = test_split[0][:100], test_split[1][:100]
    x, y = next(iter(data.DataLoader(images, labels, 100, shuffle=False)))
    np.testing.assert_array_equal(x, data.pad_and_normalize(images))
    np.testing.assert_array_equal(y, labels)


def test_loader_keeps_no_float_copy(train):
    images, labels = train
    loader = data.DataLoader(images, labels, 64, seed=1)
    assert loader.images is images
    for value in vars(loader).values():
        assert not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 256)
    tracemalloc.start()
    try:
        count = sum(len(y) for _, y in loader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 60000
    assert peak < 16 << 20, f"one epoch peaked at {peak} bytes (float dataset: {60000 * 4096})"


@pytest.mark.parametrize("kwargs, exc", [
    (dict(batch_size=0), ValueError), (dict(batch_size=2.5), TypeError),
    (dict(batch_size=True), TypeError), (dict(seed=-1), ValueError),
    (dict(labels=np.arange(9)), ValueError), (dict(labels=np.zeros(10)), TypeError),
    (dict(images=np.zeros((10, 28, 28), np.float32)), TypeError),
    (dict(images=np.zeros((10, 784), np.uint8)), TypeError), (dict(std=-1.0), ValueError),
])
def test_loader_rejects(kwargs, exc):
    images, labels = indexed(10)
    args = dict(images=images, labels=labels, batch_size=4)
    args.update(kwargs)
    with pytest.raises(exc):
        data.DataLoader(args.pop("images"), args.pop("labels"), **args)
    loader = data.DataLoader(images, labels)
    with pytest.raises(ValueError):
        loader.set_epoch(-1)


# ---------------------------------------------------------------------------- other datasets

def fake_split(n, seed):
    """Generated digits in MNIST's IDX layout: (.gz bytes of images, .gz bytes of labels, images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    return (gzip.compress(idx_bytes(images, 0x08)), gzip.compress(idx_bytes(labels, 0x08)),
            images, labels)


@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_other_datasets_download_with_their_published_md5s(name, files_server, tmp_path, monkeypatch):
    server, url = files_server
    img_gz, lab_gz, images, labels = fake_split(7, seed=3)
    names = data.DATASETS[name].files["test"]
    server.files = dict(zip(names, (img_gz, lab_gz)))
    # The real table, with this test's files' MD5s in place of the published ones and this
    # server as the mirror: the code path is the real one.
    real = data.DATASETS[name]
    checksums = dict(real.checksums)
    for n, body in server.files.items():
        checksums[n] = ("file", real.checksums[n][1], hashlib.md5(body).hexdigest())
    monkeypatch.setitem(data.DATASETS, name, data.Dataset(name, real.files, checksums, (url,)))
    root = tmp_path / "cache" / name
    got_images, got_labels = data.load_dataset(name, "test", root=root, progress=False)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert sorted(os.listdir(root)) == sorted(names)
    data.load_dataset(name, "test", root=root, progress=False)
    assert len(server.requests) == 2, "a cached file was downloaded again"
    # A file that is not the published one is refused and nothing is kept.
    server.files[names[0]] = fake_split(7, seed=4)[0]
    with pytest.raises(data.DownloadError, match=f"(?s){name} file {names[0]}.*checksum mismatch: MD5.*root=DIR"):
        data.load_dataset(name, "test", root=tmp_path / "other", progress=False)
    assert os.listdir(tmp_path / "other") == []


def test_the_published_md5_tables_cover_every_file():
    for name in ("fashion-mnist", "kmnist"):
        ds = data.DATASETS[name]
        assert ds.mirrors and set(ds.checksums) == {n for pair in ds.files.values() for n in pair}
        assert all(kind == "file" and re.fullmatch("[0-9a-f]{32}", md5)
                   for kind, _, md5 in ds.checksums.values())
    # The two tables are torchvision's: spot-check one value of each against that source.
    assert data.FASHION_MNIST_MD5["t10k-labels-idx1-ubyte.gz"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert data.KMNIST_MD5["t10k-labels-idx1-ubyte.gz"] == "7320c461ea6c1c855c0b718fb2a4b134"


def test_emnist_digits_loads_placed_files_transposed_and_says_how_to_get_them(tmp_path):
    root = tmp_path / "emnist"
    with pytest.raises(FileNotFoundError, match=r"emnist-digits-test-images-idx3-ubyte.gz.*"
                                                r"does not exist.*gzip.zip \(MD5 58c8d27c"):
        data.load_dataset("emnist-digits", "test", root=root, download=False)
    assert not root.exists()
    root.mkdir()
    img_gz, lab_gz, images, labels = fake_split(5, seed=1)
    for n, body in zip(data.EMNIST_DIGITS_FILES["test"], (img_gz, lab_gz)):
        (root / n).write_bytes(body)
    got, got_labels = data.load_dataset("emnist-digits", "test", root=root)
    # EMNIST stores every image transposed relative to MNIST.
    np.testing.assert_array_equal(got, images.transpose(0, 2, 1))
    np.testing.assert_array_equal(got_labels, labels)


def test_a_missing_folder_is_named_and_never_created(tmp_path):
    root = tmp_path / "typo" / "mnist"
    with pytest.raises(FileNotFoundError, match=r"missing train-images-idx3-ubyte.gz .*"
                                                r"the folder does not exist"):
        data.load_dataset("mnist", "train", root=root, download=False)
    assert not (tmp_path / "typo").exists()
    assert data.missing_files("kmnist", "test", root) == list(data.MNIST_FILES["test"])
    with pytest.raises(ValueError, match=r"dataset must be one of \['emnist-digits', 'fashion-mnist'"):
        data.load_dataset("cifar10", "train", root=root)


def test_emnist_digits_download_keeps_only_its_files_from_the_zip(files_server, tmp_path, monkeypatch):
    import io
    import zipfile
    server, url = files_server
    splits = {split: fake_split(6 if split == "train" else 4, seed=i)
              for i, split in enumerate(("train", "test"))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for split, (img_gz, lab_gz, _, _) in splits.items():
            for name, body in zip(data.EMNIST_DIGITS_FILES[split], (img_gz, lab_gz)):
                zf.writestr("gzip/" + name, body)
        zf.writestr("gzip/emnist-letters-train-images-idx3-ubyte.gz", b"not wanted")
    server.files = {"gzip.zip": buf.getvalue()}
    real = data.DATASETS["emnist-digits"]
    fake = data.Dataset("emnist-digits", real.files, archive=(url + "gzip.zip", hashlib.md5(
        buf.getvalue()).hexdigest(), "gzip/"), transpose=True, manual=real.manual)
    monkeypatch.setitem(data.DATASETS, "emnist-digits", fake)
    root = tmp_path / "emnist"
    images, labels = data.load_dataset("emnist-digits", "test", root=root, progress=False)
    np.testing.assert_array_equal(images, splits["test"][2].transpose(0, 2, 1))
    np.testing.assert_array_equal(labels, splits["test"][3])
    assert sorted(os.listdir(root)) == sorted(n for pair in real.files.values() for n in pair)
    assert len(data.load_dataset("emnist-digits", "train", root=root, progress=False)[0]) == 6
    assert len(server.requests) == 1, "the zip was fetched again"
    # A zip that is not the published one is refused, and nothing of it is kept.
    server.files = {"gzip.zip": buf.getvalue()[:-10] + b"0123456789"}
    with pytest.raises(data.DownloadError, match="(?s)emnist-digits from .*gzip.zip.*checksum "
                                                 "mismatch: MD5.*emnist-digits-\\* files"):
        data.load_dataset("emnist-digits", "test", root=tmp_path / "other", progress=False)
    assert os.listdir(tmp_path / "other") == []
