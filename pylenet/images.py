"""Turn user photos and scans of a single digit into 28x28 uint8 images prepared the way MNIST was."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

SIZE = 28          # MNIST canvas side
BOX = 20           # MNIST digits were scaled so their larger side fits a 20-pixel box
CENTRE = 14.0      # real MNIST digits have their intensity centre of mass at (14, 14) in index coordinates
# After background subtraction a digit must reach this much contrast on the 0..255 scale;
# less than that is a blank page plus sensor or JPEG noise, not a digit.
MIN_CONTRAST = 24.0
# Once stretched to 0..255, values below this are paper texture or compression noise; zeroing
# them keeps a stray speck from widening the digit's bounding box.
NOISE_FLOOR = 0.1 * 255
# Photos: the background is estimated per tile of about this many pixels (a low percentile,
# so strokes do not count as paper, then the median of each tile's 3x3 neighbourhood, so a
# tile that a bold stroke covers takes its neighbours' paper), which follows uneven lighting;
# smaller images use the outer ring's median as before.
TILE = 24
BACKGROUND_PERCENTILE = 25
# Ink components smaller than this fraction of the largest one are specks, not the digit.
MIN_COMPONENT = 0.15
EDGE = 28  # the kept strokes grow by 1/EDGE of the digit's size: about 1 pixel at MNIST's scale
# Larger images are shrunk first (area-averaged): the digit keeps plenty of pixels for a
# 20-pixel box, and the component search stays fast.
MAX_SIDE = 512


def load_image(path) -> np.ndarray:
    """Read any Pillow-readable image of one digit and return it as uint8 (28, 28), white digit on black."""
    path = Path(path)
    return _normalise(_read_gray(path, str(path)), str(path))


def decode_image(data: bytes, *, name: str = "upload", formats=None,
                 max_pixels: int | None = None) -> np.ndarray:
    """load_image for encoded bytes (an upload); formats and max_pixels refuse other files early."""
    return _normalise(_read_gray(io.BytesIO(data), name, formats, max_pixels), name)


def _read_gray(source, name: str, formats=None, max_pixels: int | None = None) -> np.ndarray:
    """Decode a path or file object to a float64 (H, W) 0..255 array; ValueError naming `name`."""
    Image, ImageOps = _pillow()
    try:
        with Image.open(source, formats=formats) as img:
            # The header gives the size before any pixel is decoded: a small file can declare
            # a huge canvas, which must be refused before it is allocated.
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ValueError(f"{img.width}x{img.height} pixels is more than the "
                                 f"{max_pixels:,}-pixel limit")
            img.load()
            # Phone photos store their rotation in EXIF rather than in the pixels.
            img = ImageOps.exif_transpose(img)
            return _grayscale(img, Image)
    except FileNotFoundError:
        raise
    except Exception as e:
        # Pillow's decoders raise many unrelated types (OSError, SyntaxError, struct.error,
        # DecompressionBombError, ...) on bad input; callers get one type that names the file.
        raise ValueError(f"cannot read image {name}: {type(e).__name__}: {e}") from e


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Apply load_image's pipeline to a 2-D array: uint8/uint16/bool, or float in 0..1 or 0..255."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"to_mnist expects a non-empty 2-D grayscale array, got shape {gray.shape}")
    if gray.dtype == np.uint8:
        scaled = gray.astype(np.float64)
    elif gray.dtype == np.uint16:
        scaled = gray.astype(np.float64) / 257.0
    elif gray.dtype == np.bool_:
        scaled = gray.astype(np.float64) * 255.0
    elif gray.dtype.kind == "f":
        if not np.all(np.isfinite(gray)):
            raise ValueError("to_mnist: the array contains NaN or infinity")
        scaled = _to_255(gray.astype(np.float64))
    else:
        raise TypeError(f"to_mnist expects uint8, uint16, bool or float pixels, got {gray.dtype}")
    return _normalise(scaled, "image")


def _pillow():
    """Import Pillow on first use so that the rest of pylenet works without it."""
    try:
        from PIL import Image, ImageOps
    except ImportError as e:
        raise ImportError("reading image files needs Pillow: pip install pillow") from e
    return Image, ImageOps


def _grayscale(img, Image) -> np.ndarray:
    """Return a float64 (H, W) array on the 0..255 scale, compositing transparency onto white."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(img).astype(np.float64) / 257.0
    if img.mode in ("I", "F"):
        return _to_255(np.asarray(img).astype(np.float64))
    if img.mode == "1":
        return np.asarray(img).astype(np.float64) * 255.0
    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
    if has_alpha:
        # Transparent pixels often hold black RGB; without compositing they would read as ink.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L")).astype(np.float64)


def _to_255(a: np.ndarray) -> np.ndarray:
    """Map float pixels of unknown range to 0..255: 0..1 is scaled, 0..255 kept, anything else stretched."""
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        return a * 255.0
    if lo >= 0.0 and hi <= 255.0:
        return a
    return (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)


def _normalise(gray: np.ndarray, source: str) -> np.ndarray:
    """The MNIST recipe on a float (H, W) 0..255 array; source names the image in errors."""
    Image, _ = _pillow()
    if max(gray.shape) > MAX_SIDE:
        s = MAX_SIDE / max(gray.shape)
        size = (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s)))
        gray = np.asarray(Image.fromarray(gray.astype(np.float32)).resize(size, Image.Resampling.BOX),
                          np.float64)
    ring = _border(gray)
    lo, hi = float(gray.min()), float(gray.max())
    # The outer ring is almost all background, so its brightness tells the polarity.
    if ring.mean() > (lo + hi) / 2:
        gray = 255.0 - gray
        ring = 255.0 - ring
    ink = np.clip(gray - _background(gray, ring, Image), 0.0, None)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise ValueError(f"{source}: no digit found (the image is blank: contrast "
                         f"{contrast:.1f} < {MIN_CONTRAST:g} on a 0..255 scale)")
    ink *= 255.0 / contrast
    ink[ink < NOISE_FLOOR] = 0.0
    # Sensor noise and specks survive the floor in photos: keep only the digit's own strokes.
    ink[~_digit_mask(ink)] = 0.0

    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    digit = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    h, w = digit.shape
    scale = BOX / max(h, w)
    new_h = max(1, min(BOX, round(h * scale)))
    new_w = max(1, min(BOX, round(w * scale)))
    small = Image.fromarray(digit.astype(np.float32)).resize(
        (new_w, new_h), Image.Resampling.LANCZOS)
    # Lanczos rings: clip its negative lobes, then restore full stroke brightness that
    # averaging thin strokes took away.
    patch = np.clip(np.asarray(small, dtype=np.float64), 0.0, None)
    peak = patch.max()
    if peak <= 0.0:
        raise ValueError(f"{source}: no digit found (nothing left after resizing)")
    patch *= 255.0 / peak

    total = patch.sum()
    cy = float((patch.sum(axis=1) * np.arange(new_h)).sum() / total)
    cx = float((patch.sum(axis=0) * np.arange(new_w)).sum() / total)
    top = int(np.clip(round(CENTRE - cy), 0, SIZE - new_h))
    left = int(np.clip(round(CENTRE - cx), 0, SIZE - new_w))
    out = np.zeros((SIZE, SIZE), dtype=np.float64)
    out[top:top + new_h, left:left + new_w] = patch
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _border(a: np.ndarray) -> np.ndarray:
    """The outer one-pixel ring of a 2-D array, flattened."""
    if min(a.shape) <= 2:
        return a.ravel()
    return np.concatenate([a[0, :], a[-1, :], a[1:-1, 0], a[1:-1, -1]])


def _background(gray: np.ndarray, ring: np.ndarray, Image) -> np.ndarray | float:
    """The paper's brightness under the digit: one value for small images, a smooth surface for photos."""
    h, w = gray.shape
    ny, nx = max(1, round(h / TILE)), max(1, round(w / TILE))
    if min(ny, nx) < 2:
        # The median ignores the few ring pixels a digit touching the edge may cover.
        return float(np.median(ring))
    ys = np.linspace(0, h, ny + 1).astype(int)
    xs = np.linspace(0, w, nx + 1).astype(int)
    grid = np.array([[np.percentile(gray[ys[i]:ys[i + 1], xs[j]:xs[j + 1]], BACKGROUND_PERCENTILE)
                      for j in range(nx)] for i in range(ny)], np.float32)
    padded = np.pad(grid, 1, mode="edge")
    grid = np.median([padded[dy:dy + ny, dx:dx + nx] for dy in range(3) for dx in range(3)],
                     axis=0).astype(np.float32)
    surface = Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(surface, np.float64)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of 0..255 values: the split that maximises the between-class variance."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    weight = np.cumsum(hist)
    mass = np.cumsum(hist * np.arange(256))
    total_w, total_m = weight[-1], mass[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_m * weight - mass * total_w) ** 2 / (weight * (total_w - weight))
    return float(np.nanargmax(np.where(np.isfinite(between), between, np.nan)))


def _shift_min(a: np.ndarray, fill) -> np.ndarray:
    """The minimum of each pixel's 3x3 neighbourhood (8-connectivity), fill beyond the edges."""
    h, w = a.shape
    p = np.pad(a, 1, constant_values=fill)
    out = a.copy()
    for dy in range(3):
        for dx in range(3):
            np.minimum(out, p[dy:dy + h, dx:dx + w], out=out)
    return out


def _components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of a boolean mask (-1 outside): min-label propagation with pointer jumping."""
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    while True:
        new = np.where(mask, _shift_min(labels, none), none)
        flat = new.ravel()
        inside = flat < none
        for _ in range(4):  # jump to the label's own label: long chains collapse quickly
            flat[inside] = flat[flat[inside]]
        if np.array_equal(new, labels):
            return np.where(mask, labels, -1)
        labels = new


def _digit_mask(ink: np.ndarray) -> np.ndarray:
    """Where the digit is: pixels above Otsu's threshold in components at least MIN_COMPONENT of
    the largest, grown by 1/EDGE of the digit's size to keep the strokes' soft edges."""
    mask = ink > _otsu(ink)
    if not mask.any():
        return ink > 0
    labels = _components(mask)
    sizes = np.bincount(labels[mask])
    keep = sizes >= MIN_COMPONENT * sizes.max()
    digit = np.zeros(mask.shape, bool)
    digit[mask] = keep[labels[mask]]
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    grow = max(1, round(max(rows[-1] - rows[0], cols[-1] - cols[0]) / EDGE))
    for _ in range(grow):
        digit = ~_shift_min(~digit, True)  # a 3x3 dilation
    return digit

