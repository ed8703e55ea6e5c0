"""MNIST-format input: IDX reader, checksummed download and cache (MNIST, Fashion-MNIST, KMNIST, EMNIST
digits), 32x32 normalisation, batch loader."""
import gzip
import hashlib
import http.client
import math
import operator
import os
import secrets
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

__all__ = [
    "AUGMENTS", "Augment", "DATASETS", "DEFAULT_MIRRORS", "MNIST_CHECKSUMS", "MNIST_FILES",
    "DataLoader", "Dataset", "get_augment",
    "DownloadError", "default_root", "load_dataset", "load_mnist", "pad_and_normalize", "read_idx",
]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Hashes of the UNCOMPRESSED files: mirrors re-compress MNIST with different gzip settings, so
# only the decompressed bytes are stable. (size in bytes, MD5, SHA-256) per canonical .gz name.
MNIST_CHECKSUMS = {
    "train-images-idx3-ubyte.gz": (
        47040016, "6bbc9ace898e44ae57da46a324031adb",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte.gz": (
        60008, "a25bea736e30d166cdddb491f175f624",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte.gz": (
        7840016, "2646ac647ad5339dbf082846283269ea",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte.gz": (
        10008, "27ae3e4e09519cfbb04c329615203637",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}

# yann.lecun.com comes last: it is often down or rate-limited.
DEFAULT_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

# The MD5 of each published .gz file of Fashion-MNIST and KMNIST, as torchvision's
# datasets/mnist.py lists them (FashionMNIST.resources, KMNIST.resources). These hash the
# compressed files, so only their own mirror is used. Both keep MNIST's file names and shapes.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
KMNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
}
EMNIST_DIGITS_FILES = {
    "train": ("emnist-digits-train-images-idx3-ubyte.gz", "emnist-digits-train-labels-idx1-ubyte.gz"),
    "test": ("emnist-digits-test-images-idx3-ubyte.gz", "emnist-digits-test-labels-idx1-ubyte.gz"),
}
# EMNIST is published only inside one zip of every split (torchvision: EMNIST.url and .md5).
EMNIST_ZIP = ("https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip", "58c8d27c78d21e728a6bc7b3cc06412e")


@dataclass(frozen=True)
class Dataset:
    """A dataset in MNIST's IDX layout: its files per split, and how (if at all) to download them.

    checksums maps each .gz name to ("content", uncompressed size, MD5, SHA-256) (hashes of the
    decompressed bytes) or ("file", uncompressed size, MD5 of the .gz as published).
    archive: (URL, MD5, folder inside it) of one zip that holds every split's files (EMNIST),
    fetched instead of mirrors. `manual` says how to place the files by hand.
    transpose: the files store each image transposed (EMNIST), so loading transposes it back.
    """

    name: str
    files: dict
    checksums: dict = field(default_factory=dict)
    mirrors: tuple = ()
    archive: tuple = ()
    transpose: bool = False
    manual: str = ""


_SIZES = {"train-images-idx3-ubyte.gz": 47040016, "train-labels-idx1-ubyte.gz": 60008,
          "t10k-images-idx3-ubyte.gz": 7840016, "t10k-labels-idx1-ubyte.gz": 10008}
DATASETS = {
    "mnist": Dataset("mnist", MNIST_FILES,
                     {n: ("content", *c) for n, c in MNIST_CHECKSUMS.items()}),
    "fashion-mnist": Dataset("fashion-mnist", MNIST_FILES,
                             {n: ("file", _SIZES[n], md5) for n, md5 in FASHION_MNIST_MD5.items()},
                             ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)),
    "kmnist": Dataset("kmnist", MNIST_FILES,
                      {n: ("file", _SIZES[n], md5) for n, md5 in KMNIST_MD5.items()},
                      ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",)),
    "emnist-digits": Dataset(
        "emnist-digits", EMNIST_DIGITS_FILES, archive=(*EMNIST_ZIP, "gzip/"), transpose=True,
        manual=f"EMNIST is published only as one zip of all its splits: download=True "
               f"(`pylenet train --download`) fetches {EMNIST_ZIP[0]} (MD5 {EMNIST_ZIP[1]}) and "
               f"keeps the four emnist-digits-* files of its gzip/ folder; or put those files in "
               f"a folder DIR by hand and pass root=DIR (--data DIR)."),
}

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_IDX_BYTES = 1 << 30  # no MNIST-like file comes near this; a larger promise is a forged header
_CHUNK = 1 << 20
_TIMEOUT_S = 30
_GZIP_ERRORS = (EOFError, zlib.error, OSError)
_LOCAL_HINT = ("To use local copies instead, put the four IDX files (.gz or uncompressed) in a "
               "folder DIR and pass root=DIR to load_mnist, set PYLENET_DATA=DIR, or run "
               "`pylenet train --data DIR`; other mirrors can be given with "
               "PYLENET_MNIST_MIRRORS=URL1,URL2.")

_OTHER_HINT = ("To use local copies instead, put the four IDX files (.gz or uncompressed) in a "
               "folder DIR and pass root=DIR to load_dataset, or run `pylenet train --dataset NAME "
               "--data DIR`.")


class DownloadError(RuntimeError):
    """Every mirror failed for an MNIST file; `failures` holds (url, reason) pairs."""

    def __init__(self, message, failures=()):
        super().__init__(message)
        self.failures = list(failures)


class _MirrorFailed(Exception):
    """One mirror could not deliver a verified file; the message is the reason."""


# ---------------------------------------------------------------------------- IDX reading

def _read_exact(stream, n):
    """Read up to n bytes, looping because a stream may return short reads before EOF."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_payload(stream, path, expected, known_size):
    """Read exactly `expected` payload bytes, allocating only what the stream really holds."""
    if known_size is not None:
        # A raw file's length is known: refuse before allocating anything.
        if known_size != expected:
            raise ValueError(f"{path}: payload has {known_size} bytes, header promises {expected}")
        buf = bytearray(expected)
        if stream.readinto(buf) != expected:
            raise ValueError(f"{path}: file shrank while being read")
        return buf
    # A gzip stream's length is unknown until decompressed: grow in bounded chunks and stop one
    # byte past the promise, so a forged header costs no more memory than the real data.
    buf = bytearray()
    while True:
        chunk = stream.read(min(_CHUNK, expected + 1 - len(buf)))
        if not chunk:
            break
        buf += chunk
        if len(buf) > expected:
            raise ValueError(f"{path}: payload has more than {expected} bytes "
                             f"(trailing data), header promises {expected}")
    if len(buf) != expected:
        raise ValueError(f"{path}: payload has {len(buf)} bytes, header promises {expected}")
    return buf


def _parse_idx(stream, path, file_size):
    """Parse and validate an IDX header, then read its payload; file_size is None for gzip."""
    magic = _read_exact(stream, 4)
    if len(magic) < 4:
        raise ValueError(f"{path}: {len(magic)} bytes, too short for the 4-byte IDX magic")
    if magic[:2] != b"\0\0":
        raise ValueError(f"{path}: bad IDX magic {magic.hex()}, expected 0000<dtype><ndim>")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}, expected one of "
                         + ", ".join(f"0x{c:02x}" for c in _IDX_DTYPES))
    if not 1 <= ndim <= 4:
        raise ValueError(f"{path}: IDX ndim is {ndim}, expected 1..4")
    raw_dims = _read_exact(stream, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(f"{path}: header truncated: {len(raw_dims)} of {4 * ndim} dimension bytes")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on forged dims
    if expected > _MAX_IDX_BYTES:
        raise ValueError(f"{path}: header promises {expected} bytes for shape {dims}, "
                         f"more than the {_MAX_IDX_BYTES} byte limit (corrupt or forged header)")
    # A zero dim makes the payload empty, but numpy still refuses shapes whose other dims
    # overflow its size type (e.g. (0, 65536, 65536, 2**31)); no real file has such a shape.
    if math.prod(max(d, 1) for d in dims) * dtype.itemsize > _MAX_IDX_BYTES:
        raise ValueError(f"{path}: header shape {dims} is empty but its other dims exceed the "
                         f"{_MAX_IDX_BYTES} byte limit (corrupt or forged header)")
    payload_size = None if file_size is None else file_size - 4 - 4 * ndim
    buf = _read_payload(stream, path, expected, payload_size)
    arr = np.frombuffer(buf, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else arr


def read_idx(path):
    """Read a raw or gzip-compressed IDX file into a native-byte-order numpy array."""
    path = Path(path)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC  # trust the bytes, not the suffix
        f.seek(0)
        if not is_gzip:
            return _parse_idx(f, path, os.fstat(f.fileno()).st_size)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                return _parse_idx(gz, path, None)
        except _GZIP_ERRORS as exc:
            raise ValueError(f"{path}: corrupted gzip stream: {exc}") from exc


# ---------------------------------------------------------------------------- download and cache

def default_root(dataset="mnist"):
    """A dataset's folder: $PYLENET_DATA for MNIST, else $XDG_CACHE_HOME/pylenet/NAME (~/.cache/...)."""
    env = os.environ.get("PYLENET_DATA")
    if env and dataset == "mnist":
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    base = Path(cache) if cache and os.path.isabs(cache) else Path.home() / ".cache"
    return base / "pylenet" / dataset


def _resolve_mirrors(mirrors, ds=None):
    """The mirror list: the argument, else the dataset's own; for MNIST $PYLENET_MNIST_MIRRORS, else DEFAULT_MIRRORS."""
    if mirrors is None and ds is not None and ds.name != "mnist":
        mirrors = list(ds.mirrors)
    if mirrors is None:
        mirrors = os.environ.get("PYLENET_MNIST_MIRRORS") or list(DEFAULT_MIRRORS)
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    return [m.strip() for m in mirrors if m.strip()]


def _verify_file(path, name, checksum):
    """Check the MD5 of a downloaded file as published (the .gz bytes); True if it is gzip."""
    md5_want = checksum[2]
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            md5.update(chunk)
    if md5.hexdigest() != md5_want:
        raise _MirrorFailed(f"checksum mismatch: MD5 {md5.hexdigest()}, expected {md5_want}")
    return is_gzip


def _verify_content(path, name, checksum=None):
    """Check the uncompressed bytes of a downloaded file against the canonical size and hashes."""
    checksum = checksum or ("content", *MNIST_CHECKSUMS[name])
    if checksum[0] == "file":
        return _verify_file(path, name, checksum)
    _, size, md5_want, sha_want = checksum
    sha, md5, got = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        is_gzip = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        try:
            stream = gzip.GzipFile(fileobj=f, mode="rb") if is_gzip else f
            # Stop one byte past the expected size so a gzip bomb cannot run for long.
            while got <= size:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                sha.update(chunk)
                md5.update(chunk)
                got += len(chunk)
        except _GZIP_ERRORS as exc:
            raise _MirrorFailed(f"corrupted gzip stream: {exc}") from exc
    if got != size:
        raise _MirrorFailed(f"checksum mismatch: uncompressed size is "
                            f"{got if got <= size else f'more than {size}'} bytes, expected {size}")
    if sha.hexdigest() != sha_want or md5.hexdigest() != md5_want:
        raise _MirrorFailed(f"checksum mismatch: uncompressed SHA-256 {sha.hexdigest()}, "
                            f"expected {sha_want}")
    return is_gzip


def _stream_to(url, out, name, progress, checksum=None):
    """Copy a URL's body into the open file `out`; network problems become _MirrorFailed."""
    size = checksum[1] if checksum is not None else MNIST_CHECKSUMS[name][0]
    limit = size + _CHUNK  # gzip never grows data by more than a few bytes
    try:
        resp = urllib.request.urlopen(url, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise _MirrorFailed(f"cannot connect: {exc.reason}") from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _MirrorFailed(f"{type(exc).__name__}: {exc}") from exc
    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        got = 0
        # disable=None: no bar when stderr is not a terminal (a log would keep every redraw).
        with tqdm(total=length, desc=name, unit="B", unit_scale=True, disable=None if progress else True,
                  leave=False) as bar:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _MirrorFailed(f"connection broke after {got} bytes: "
                                        f"{type(exc).__name__}: {exc}") from exc
                if not chunk:
                    break
                got += len(chunk)
                if got > limit:
                    raise _MirrorFailed(f"response exceeds {limit} bytes")
                out.write(chunk)
                bar.update(len(chunk))
    # http.client returns a short body silently when the peer closes early.
    if length is not None and got != length:
        raise _MirrorFailed(f"truncated response: {got} of {length} bytes")


def _fetch(url, root, name, progress, checksum=None):
    """Download one mirror's copy to a temp file in root, verify it, then rename it into place."""
    # open(..., "xb") rather than mkstemp: mkstemp's 0600 mode would make a shared cache
    # unreadable to other users, while "xb" honours the umask and still never clobbers a file.
    tmp = root / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    out = open(tmp, "xb")
    try:
        with out:
            _stream_to(url, out, name, progress, checksum)
        is_gzip = _verify_content(tmp, name, checksum)
        # A mirror may serve the file uncompressed; name it so the suffix does not lie.
        final = root / (name if is_gzip else name[: -len(".gz")])
        os.replace(tmp, final)
        tmp = None
        return final
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _download(name, root, mirrors, progress, ds=None):
    """Try each mirror in turn for one file; raise DownloadError listing every failure."""
    failures = []
    checksum = ds.checksums[name] if ds is not None else None
    label = "MNIST" if ds is None or ds.name == "mnist" else ds.name
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        try:
            return _fetch(url, root, name, progress, checksum)
        except _MirrorFailed as exc:
            failures.append((url, str(exc)))
    listing = "\n".join(f"  - {url}: {reason}" for url, reason in failures)
    listing = listing or "  (no mirrors given)"
    raise DownloadError(f"could not download {label} file {name} into {root}; every mirror "
                        f"failed:\n{listing}\n{_LOCAL_HINT if label == 'MNIST' else _OTHER_HINT}",
                        failures)


_MAX_ARCHIVE_BYTES = 1 << 31  # EMNIST's zip of every split is about half of this


def _fetch_archive(ds, root, progress):
    """Download ds.archive, check its MD5, and keep only ds's files from it (each renamed into place)."""
    url, md5, folder = ds.archive
    tmp = root / f".{ds.name}.{os.getpid()}.{secrets.token_hex(4)}.zip.part"
    try:
        with open(tmp, "xb") as out:
            _stream_to(url, out, url.rsplit("/", 1)[-1], progress, ("file", _MAX_ARCHIVE_BYTES, md5))
        _verify_file(tmp, url, ("file", _MAX_ARCHIVE_BYTES, md5))
        try:
            with zipfile.ZipFile(tmp) as zf:
                for name in (n for pair in ds.files.values() for n in pair):
                    try:
                        info = zf.getinfo(folder + name)
                    except KeyError:
                        raise _MirrorFailed(f"the archive has no {folder + name}") from None
                    if info.file_size > _MAX_IDX_BYTES:
                        raise _MirrorFailed(f"{folder + name} declares {info.file_size} bytes")
                    part = root / f".{name}.{secrets.token_hex(4)}.part"
                    try:
                        with zf.open(info) as src, open(part, "xb") as dst:
                            for chunk in iter(lambda: src.read(_CHUNK), b""):
                                dst.write(chunk)
                        os.replace(part, root / name)
                    finally:
                        if part.exists():
                            part.unlink()
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise _MirrorFailed(f"the archive is damaged: {exc}") from exc
    except _MirrorFailed as exc:
        raise DownloadError(f"could not get {ds.name} from {url} into {root}: {exc}. "
                            f"{ds.manual}", [(url, str(exc))]) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _find(root, name):
    """The existing file for a canonical .gz name: the uncompressed copy first, then the .gz."""
    for candidate in (root / name[: -len(".gz")], root / name):
        if candidate.is_file():
            return candidate
    return None


def _check_mnist(images, labels, image_path, label_path):
    """Check that a loaded image/label pair has MNIST's shapes, dtypes and label range."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: expected uint8 images of shape (N, 28, 28), "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{label_path}: expected integer labels of shape (N,), "
                         f"got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{label_path}: {labels.shape[0]} labels but {image_path} "
                         f"holds {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{label_path}: labels must lie in 0..9, "
                         f"found {labels.min()}..{labels.max()}")


def load_mnist(split="train", root=None, download=True, *, mirrors=None, progress=True):
    """Load an MNIST split as (uint8 images (N, 28, 28), int64 labels (N,)), downloading if asked."""
    return load_dataset("mnist", split, root, download, mirrors=mirrors, progress=progress)


def missing_files(dataset, split, root):
    """The canonical .gz names of `split` that `root` holds neither compressed nor uncompressed."""
    return [name for name in _dataset(dataset).files[split] if _find(Path(root).expanduser(), name) is None]


def _dataset(name):
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def load_dataset(name="mnist", split="train", root=None, download=True, *, mirrors=None,
                 progress=True):
    """A split of an MNIST-format dataset (see DATASETS) as (uint8 (N, 28, 28), int64 (N,)).

    Files are looked up in root (default: default_root(name)); missing ones are downloaded
    with checksums when download is true and the dataset has mirrors, else FileNotFoundError
    names them. Nothing is created unless a download runs.
    """
    ds = _dataset(name)
    if split not in ds.files:
        raise ValueError(f"split must be one of {sorted(ds.files)}, got {split!r}")
    root = Path(root).expanduser() if root is not None else default_root(name)
    names = ds.files[split]
    found = {n: _find(root, n) for n in names}
    missing = [n for n, path in found.items() if path is None]
    urls = [] if not (missing and download) else [ds.archive[0]] if ds.archive else \
        _resolve_mirrors(mirrors, ds)
    if missing and not (download and urls):
        listing = ", ".join(f"{n} (or {n[: -len('.gz')]})" for n in missing)
        where = f"{root}" + ("" if root.is_dir() else " (the folder does not exist)")
        how = (ds.manual if ds.manual else
               f"Pass root=DIR (or `pylenet train --data DIR`) for a folder holding the IDX files"
               + (", set PYLENET_DATA=DIR" if name == "mnist" else "")
               + f", or download them (download=True; `pylenet train --download`) into {root}.")
        raise FileNotFoundError(f"{name} {split} split: missing {listing} in {where}. {how}")
    if missing and ds.archive:
        root.mkdir(parents=True, exist_ok=True)
        _fetch_archive(ds, root, progress)
        found = {n: _find(root, n) for n in names}
    elif missing:
        root.mkdir(parents=True, exist_ok=True)
        for n in missing:
            found[n] = _download(n, root, urls, progress, ds)
    image_path, label_path = (found[n] for n in names)
    images, labels = read_idx(image_path), read_idx(label_path)
    _check_mnist(images, labels, image_path, label_path)
    if ds.transpose:
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------- batches

def _normalize_lut(mean, std):
    """float32 value of every uint8 pixel; index 0 is the background, which also fills the pad."""
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ValueError(f"need finite mean and std > 0, got mean={mean}, std={std}")
    x = np.arange(256, dtype=np.float32) / np.float32(255)
    return (x - np.float32(mean)) / np.float32(std)


def _check_pad(pad):
    """Validate the pad width once for pad_and_normalize and DataLoader."""
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    return int(pad)


def _pad_normalize(images, pad, lut, idx=None):
    """images[idx] (N, H, W) uint8 -> (N, 1, H+2p, W+2p) float32 through a pixel lookup table.

    Uses the core's one-pass kernel when the extension is built, else numpy.
    """
    core = _core()
    if core is not None:
        return core.gather_pad_normalize(images, idx, pad, lut)
    if idx is not None:
        images = images[idx]
    n, h, w = images.shape
    out = np.full((n, 1, h + 2 * pad, w + 2 * pad), lut[0], dtype=np.float32)
    out[:, 0, pad:pad + h, pad:pad + w] = lut[images]
    return out


@dataclass(frozen=True)
class Augment:
    """Ranges of the random distortions drawn per image per epoch (core/augment.h); zeros: none.

    shift: pixels per axis; rotate: degrees; scale: factor in [1 - scale, 1 + scale]; shear:
    horizontal shear factor; alpha, sigma: the elastic field of Simard et al. (2003), uniform
    noise smoothed by a Gaussian of sigma pixels and scaled by alpha pixels (alpha 0: none).
    The core validates the values (ValueError naming the field).
    """

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    alpha: float = 0.0
    sigma: float = 4.0


# The named distortions of DataLoader(augment=...), fit(augment=...) and `pylenet train
# --augment`, chosen by measurement (README, "Beyond the paper").
AUGMENTS = {
    "none": None,
    "affine": Augment(shift=2.0, rotate=10.0, scale=0.1, shear=0.15),
    "elastic": Augment(alpha=34.0, sigma=4.0),
    "affine+elastic": Augment(shift=2.0, rotate=10.0, scale=0.1, shear=0.15, alpha=34.0, sigma=4.0),
}


def get_augment(augment):
    """An Augment or None from a name in AUGMENTS, an Augment, a dict of its fields, or None."""
    if augment is None or isinstance(augment, Augment):
        return augment
    if isinstance(augment, str):
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {list(AUGMENTS)} or an Augment, got {augment!r}")
        return AUGMENTS[augment]
    if isinstance(augment, dict):
        return Augment(**augment)
    raise TypeError(f"augment must be a name in {list(AUGMENTS)}, an Augment or None, "
                    f"got {type(augment).__name__}")


def _prepare(images, idx, pad, lut, augment=None, seed=0, epoch=0):
    """One batch: images[idx] padded and normalised, distorted when augment is an Augment.

    The distortions of image idx[i] are drawn from (seed, epoch, idx[i]) in the core."""
    if augment is None:
        return _pad_normalize(images, pad, lut, idx)
    core = _core()
    if core is None:
        raise RuntimeError("augment needs the compiled core (pylenet._core)")
    return core.augment_batch(images, idx, pad, lut, seed, epoch, **asdict(augment))


def _core():
    """pylenet._core if it is built and importable (data.py itself never needs it)."""
    global _CORE
    if _CORE is False:
        try:
            from pylenet import _core as core
            _CORE = core if hasattr(core, "gather_pad_normalize") else None
        except ImportError:
            _CORE = None
    return _CORE


_CORE = False


def pad_and_normalize(images, *, pad=2, mean=MNIST_MEAN, std=MNIST_STD):
    """Zero-pad uint8 digits (H, W) or (N, H, W) and normalise to float32 (N, 1, H+2p, W+2p)."""
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (raw MNIST pixels), got {images.dtype}")
    if images.ndim not in (2, 3):
        raise ValueError(f"images must have shape (H, W) or (N, H, W), got {images.shape}")
    batch = images[None] if images.ndim == 2 else images
    return _pad_normalize(batch, _check_pad(pad), _normalize_lut(mean, std))


def _check_int(name, value, minimum):
    """Return value as an int, raising if it is not an integer >= minimum."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class DataLoader:
    """Seeded, epoch-aware batches of padded, normalised MNIST: x (B, 1, 32, 32) f32, y (B,) i64.

    augment (None, a name in AUGMENTS or an Augment) distorts each image afresh every epoch,
    reproducibly from (seed, epoch, image index), with any thread count."""

    def __init__(self, images, labels, batch_size=64, *, shuffle=True, seed=0, drop_last=False,
                 pad=2, mean=MNIST_MEAN, std=MNIST_STD, augment=None):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
            raise TypeError("images must be a uint8 numpy array of shape (N, H, W), got "
                            f"{getattr(images, 'dtype', type(images).__name__)} "
                            f"{getattr(images, 'shape', '')}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be a 1-D integer array, "
                            f"got {labels.dtype} {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        # Keep the uint8 images by reference; floats exist only one batch at a time.
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.pad = _check_pad(pad)
        self._lut = _normalize_lut(mean, std)
        # None, a name in AUGMENTS or an Augment: fresh distortions per image per epoch.
        self.augment = get_augment(augment)
        self.epoch = 0

    @property
    def num_samples(self):
        """Number of samples in the dataset."""
        return self.images.shape[0]

    def __len__(self):
        """Number of batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch):
        """Select the epoch whose order the next iteration uses (for resuming a run)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def order(self, epoch):
        """Sample indices for an epoch: default_rng([seed, epoch]).permutation(N), or 0..N-1."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)

    def __iter__(self):
        """Batches of the current epoch; the epoch advances now, not at the first batch."""
        order = self.order(self.epoch)
        self.epoch += 1
        return self._batches(order, self.epoch - 1)

    def _batches(self, order, epoch):
        """Gather, (distort,) pad and normalise one batch at a time."""
        stop = len(self) * self.batch_size if self.drop_last else self.num_samples
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = _prepare(self.images, idx, self.pad, self._lut, self.augment, self.seed, epoch)
            yield x, self.labels[idx]
