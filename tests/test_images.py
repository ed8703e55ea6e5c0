"""Tests for pylenet.images: user images become MNIST-like 28x28 digits (polarity, crop, scale, centring)."""
import gzip
from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw  # noqa: E402

import pylenet.images as images  # noqa: E402
load_image, to_mnist = images.load_image, images.to_mnist


def draw_digit(kind: str, ink=0, paper=255, size=(300, 200)) -> Image.Image:
    """A thick hand-drawn-looking digit on a plain canvas, placed off-centre on purpose."""
    img = Image.new("L", size, paper)
    d = ImageDraw.Draw(img)
    if kind == "1":
        d.line([(180, 40), (190, 170)], fill=ink, width=14)
        d.line([(180, 40), (160, 60)], fill=ink, width=10)
    elif kind == "7":
        # A light bar and a heavy stem, as in most MNIST sevens; a heavier bar would move the
        # centre of mass up so far that the digit touches the bottom edge (as ~12% of MNIST do).
        d.line([(80, 30), (145, 30)], fill=ink, width=9)
        d.line([(145, 30), (100, 175)], fill=ink, width=15)
    elif kind == "ring":
        d.ellipse([(100, 50), (190, 170)], outline=ink, width=12)
    return img


def bbox(a: np.ndarray, thresh: int = 0):
    rows = np.flatnonzero((a > thresh).any(axis=1))
    cols = np.flatnonzero((a > thresh).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(a: np.ndarray):
    a = a.astype(np.float64)
    yy, xx = np.mgrid[:a.shape[0], :a.shape[1]]
    return (a * yy).sum() / a.sum(), (a * xx).sum() / a.sum()


def check_mnist_like(out: np.ndarray, black_ring: bool = True):
    assert out.shape == (28, 28) and out.dtype == np.uint8
    if black_ring:
        ring = np.concatenate([out[:2].ravel(), out[-2:].ravel(), out[:, :2].ravel(), out[:, -2:].ravel()])
        assert ring.max() <= 8, "the outer 2-pixel ring must be (nearly) black"
    assert out.max() >= 250, "the digit must be bright"
    cy, cx = centre_of_mass(out)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)
    assert max(bbox(out)) == 20


def save(img: Image.Image, tmp_path: Path, name: str, **kw) -> Path:
    path = tmp_path / name
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("kind", ["1", "7", "ring"])
def test_dark_digit_on_white_becomes_mnist_like(tmp_path, kind):
    out = load_image(save(draw_digit(kind), tmp_path, f"{kind}.png"))
    check_mnist_like(out)


@pytest.mark.parametrize("kind", ["1", "7", "ring"])
def test_polarity_does_not_matter(tmp_path, kind):
    dark_on_light = load_image(save(draw_digit(kind), tmp_path, "a.png"))
    light_on_dark = load_image(save(draw_digit(kind, ink=255, paper=0), tmp_path, "b.png"))
    assert np.abs(dark_on_light.astype(int) - light_on_dark.astype(int)).max() <= 2


def test_aspect_ratio_is_kept(tmp_path):
    out = load_image(save(draw_digit("1"), tmp_path, "1.png"))
    h, w = bbox(out)
    assert h == 20 and w < 12, "a tall, thin 1 must stay tall and thin"


def test_gray_paper_and_faint_ink_are_stretched(tmp_path):
    out = load_image(save(draw_digit("7", ink=120, paper=180), tmp_path, "faint.png"))
    check_mnist_like(out)


def test_noise_specks_do_not_widen_the_crop(tmp_path):
    img = draw_digit("7")
    noise = np.random.default_rng(0).integers(-6, 7, size=(200, 300))
    arr = np.clip(np.asarray(img).astype(int) + noise, 0, 255).astype(np.uint8)
    check_mnist_like(load_image(save(Image.fromarray(arr), tmp_path, "noisy.png")))


def test_rgba_with_transparent_background(tmp_path):
    # Transparent pixels carry black RGB: only compositing onto white makes them paper.
    mask = np.asarray(draw_digit("7")) < 128
    rgba = np.zeros((200, 300, 4), dtype=np.uint8)
    rgba[mask] = (20, 20, 200, 255)
    out = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path, "t.png"))
    check_mnist_like(out)
    assert np.abs(out.astype(int) - load_image(save(draw_digit("7"), tmp_path, "ref.png"))).max() <= 40


def test_palette_images(tmp_path):
    rgb = draw_digit("ring").convert("RGB")
    check_mnist_like(load_image(save(rgb.convert("P", palette=Image.Palette.ADAPTIVE), tmp_path, "p.png")))
    # Paper as a transparent palette entry: compositing onto white must keep it paper.
    two_colour = Image.fromarray((np.asarray(draw_digit("ring")) < 128).astype(np.uint8), "P")
    two_colour.putpalette([255, 255, 255, 0, 0, 0])
    check_mnist_like(load_image(save(two_colour, tmp_path, "p.gif", transparency=0)))


def test_16_bit_grayscale(tmp_path):
    arr = np.asarray(draw_digit("7")).astype(np.uint16) * 257
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    check_mnist_like(load_image(save(img, tmp_path, "d16.png")))


@pytest.mark.parametrize("fmt", ["jpg", "bmp", "tiff"])
def test_other_formats_and_colour(tmp_path, fmt):
    rgb = Image.merge("RGB", [draw_digit("ring")] * 3)
    check_mnist_like(load_image(save(rgb, tmp_path, f"c.{fmt}")))


def test_to_mnist_matches_load_image_and_accepts_floats(tmp_path):
    img = draw_digit("7")
    arr = np.asarray(img)
    from_file = load_image(save(img, tmp_path, "7.png"))
    assert np.array_equal(to_mnist(arr), from_file)
    assert np.abs(to_mnist(arr / 255.0).astype(int) - from_file).max() <= 1
    assert np.abs(to_mnist(arr.astype(np.float32)).astype(int) - from_file).max() <= 1


def test_real_mnist_digit_survives_a_round_trip(tmp_path, mnist_dir):
    with gzip.open(mnist_dir / "t10k-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read(16 + 28 * 28)
    original = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(28, 28)
    scan = Image.fromarray(255 - original).resize((140, 140), Image.Resampling.BICUBIC)
    out = load_image(save(scan, tmp_path, "scan.jpg", quality=85))
    # This 7 reaches row 26 in MNIST itself, so the black-ring check does not apply.
    check_mnist_like(out, black_ring=False)
    corr = np.corrcoef(out.ravel().astype(float), original.ravel().astype(float))[0, 1]
    assert corr > 0.9, corr


def test_blank_image_is_refused_with_its_name(tmp_path):
    path = save(Image.new("L", (100, 80), 255), tmp_path, "blank.png")
    with pytest.raises(ValueError, match="blank.png"):
        load_image(path)
    with pytest.raises(ValueError, match="blank"):
        to_mnist(np.full((50, 50), 200, dtype=np.uint8))


def test_faint_noise_alone_counts_as_blank():
    noise = np.random.default_rng(1).integers(250, 256, size=(64, 64)).astype(np.uint8)
    with pytest.raises(ValueError, match="no digit"):
        to_mnist(noise)


def test_non_image_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ValueError, match="x.png"):
        load_image(path)


def test_truncated_image_is_refused_with_its_name(tmp_path):
    data = save(draw_digit("7"), tmp_path, "full.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "nope.png")


def test_to_mnist_rejects_bad_arrays():
    with pytest.raises(ValueError, match="2-D"):
        to_mnist(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_mnist(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="int64"):
        to_mnist(np.zeros((8, 8), dtype=np.int64))


def photo_of(digit: np.ndarray, seed: int) -> np.ndarray:
    """A phone-photo-like uint8 image of an MNIST digit: dark ink on lighter paper, a larger
    canvas, the digit off-centre, uneven lighting (a side-to-side ramp and a vignette), sensor
    noise and a few dark specks."""
    rng = np.random.default_rng(seed)
    h, w = 150, 170
    yy, xx = np.mgrid[:h, :w]
    paper = 225.0 - 80.0 * xx / w - 120.0 * ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2)
    big = np.asarray(Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC), np.float64)
    ink = np.zeros((h, w))
    top, left = 30 + int(rng.integers(0, 20)), 45 + int(rng.integers(0, 25))
    ink[top:top + 84, left:left + 84] = np.clip(big, 0, 255) / 255.0
    img = paper * (1.0 - 0.7 * ink) + rng.normal(0.0, 8.0, (h, w))
    for _ in range(25):  # specks of dust and paper texture
        y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
        img[y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] -= 60.0
    return np.clip(img, 0, 255).astype(np.uint8)


def test_a_noisy_unevenly_lit_photo_reads_as_the_clean_digit(mnist_dir, tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    import pylenet
    from trained_models import trained_lenet
    model = trained_lenet("relu", "max", str(mnist_dir))
    digits, _ = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    clean_labels, clean_probs = pylenet.predict(model, digits[:40])
    chosen = [i for i in range(40) if clean_probs[i].max() > 0.95][:12]
    assert len(chosen) >= 10
    agree = []
    for i in chosen:
        path = save(Image.fromarray(photo_of(digits[i], seed=i)), tmp_path, f"photo{i}.jpg", quality=90)
        out = load_image(path)
        label, probs = pylenet.predict(model, out)
        agree.append(label[0] == clean_labels[i])
        # The digit fills MNIST's 20-pixel box and no grey box of background survives.
        assert max(bbox(out, thresh=40)) >= 18, (i, bbox(out, thresh=40))
        assert (out[:2] > 40).sum() + (out[-2:] > 40).sum() <= 4, i
    assert all(agree), f"{sum(agree)} of {len(agree)} photos read as their clean digit"
