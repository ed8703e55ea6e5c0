"""Tests for the training distortions (core/augment.cpp through pylenet.data), the per-step
warm-up + cosine schedule, the fast recipe and `pylenet train --augment/--recipe/--until-accuracy`."""
import json
import math
from dataclasses import asdict

import numpy as np
import pytest

import pylenet
from pylenet import _core, ops
from pylenet.cli import _parser, main
from pylenet.data import AUGMENTS, MNIST_MEAN, MNIST_STD, Augment, DataLoader, _normalize_lut, get_augment
from pylenet.optim import SGD, WarmupCosineLR
from pylenet.recipe import DEFAULT_RECIPE, FAST_RECIPE

LUT = _normalize_lut(MNIST_MEAN, MNIST_STD)
STRONG = Augment(shift=2, rotate=15, scale=0.1, shear=0.3, alpha=34, sigma=4)


def digits(n=32, seed=0):
    """Random blobs on a blank 28x28 background: enough structure to see every pixel move."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 28, 28), np.uint8)
    img[:, 6:22, 8:20] = rng.integers(0, 256, (n, 16, 12), dtype=np.uint8)
    return img


def augment(images, idx, aug, seed=0, epoch=0, lut=LUT, pad=2):
    return _core.augment_batch(images, idx, pad, lut, seed, epoch, **asdict(aug))


def reference_warp(images, theta, pad, lut):
    """float64 numpy bilinear warp: what warp_affine documents, pixel by pixel."""
    n, H, W = images.shape
    Hp, Wp = H + 2 * pad, W + 2 * pad
    cx, cy = (Wp - 1) / 2, (Hp - 1) / 2
    hh, ww = np.meshgrid(np.arange(Hp), np.arange(Wp), indexing="ij")
    out = np.empty((n, 1, Hp, Wp))
    for i in range(n):
        t = theta[i].astype(np.float64)
        x = t[0, 0] * (ww - cx) + t[0, 1] * (hh - cy) + t[0, 2] + cx - pad
        y = t[1, 0] * (ww - cx) + t[1, 1] * (hh - cy) + t[1, 2] + cy - pad
        vals = lut[images[i]].astype(np.float64)

        def at(yy, xx):
            inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            return np.where(inside, vals[np.clip(yy, 0, H - 1), np.clip(xx, 0, W - 1)], lut[0])
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - x0, y - y0
        top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
        bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
        out[i, 0] = top * (1 - fy) + bottom * fy
    return out


# ------------------------------------------------------------------------- the core kernel

def test_identity_returns_the_unaugmented_batch_exactly():
    images = digits()
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    got = augment(images, idx, Augment())
    assert np.array_equal(got, _core.gather_pad_normalize(images, idx, 2, LUT))


def test_integer_shift_moves_the_padded_image_like_a_roll_with_background_fill():
    images = digits(4)
    base = _core.gather_pad_normalize(images, None, 2, LUT)
    for tx, ty in [(1, 0), (0, -2), (-3, 2), (2, 1)]:
        theta = np.tile(np.array([[1, 0, tx], [0, 1, ty]], np.float32), (4, 1, 1))
        got = _core.warp_affine(images, theta, 2, LUT)
        # out[h, w] = base[h + ty, w + tx], background where that falls off the 32x32 grid.
        want = np.full_like(base, LUT[0])
        H = W = 32
        want[:, :, max(0, -ty):H - max(0, ty), max(0, -tx):W - max(0, tx)] = \
            base[:, :, max(0, ty):H - max(0, -ty), max(0, tx):W - max(0, -tx)]
        assert np.array_equal(got, want), (tx, ty)


def test_warp_affine_matches_a_float64_bilinear_reference():
    rng = np.random.default_rng(1)
    images = digits(6, seed=1)
    angles = rng.uniform(-0.5, 0.5, 6)
    theta = np.stack([[[math.cos(a) * s, math.sin(a), tx], [-math.sin(a), math.cos(a) / s, ty]]
                      for a, s, tx, ty in zip(angles, rng.uniform(0.8, 1.2, 6),
                                              rng.uniform(-3, 3, 6), rng.uniform(-3, 3, 6))]).astype(np.float32)
    for pad in (0, 2, 3):
        got = _core.warp_affine(images, theta, pad, LUT)
        np.testing.assert_allclose(got, reference_warp(images, theta, pad, LUT), atol=2e-4, rtol=0)


def test_same_seed_gives_identical_batches_with_1_and_2_threads(restore_threads):
    images = digits(64)
    idx = np.random.default_rng(0).permutation(64)
    ops.set_num_threads(1)
    one = augment(images, idx, STRONG, seed=7, epoch=3)
    ops.set_num_threads(2)
    two = augment(images, idx, STRONG, seed=7, epoch=3)
    assert np.array_equal(one, two)
    assert np.array_equal(two, augment(images, idx, STRONG, seed=7, epoch=3))
    # Each image's draws come from (seed, epoch, its index): the same in any batch.
    alone = augment(images, idx[10:11], STRONG, seed=7, epoch=3)
    assert np.array_equal(alone[0], one[10])


def test_other_epochs_and_seeds_draw_other_distortions():
    images = digits(16)
    idx = np.arange(16)
    a = augment(images, idx, STRONG, seed=7, epoch=3)
    for other in (augment(images, idx, STRONG, seed=7, epoch=4), augment(images, idx, STRONG, seed=8, epoch=3)):
        assert all(not np.array_equal(a[i], other[i]) for i in range(16))


def ramp(axis):
    """An image whose pixel value is 8 x its column (axis 1) or row (axis 0): bilinear samples
    of it read back the sampled coordinate exactly."""
    r = (8 * np.arange(28)).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(r[None, :] if axis == 1 else r[:, None], (28, 28)))[None]


def sampled_coordinates(aug, seed=0, epoch=0):
    """(x, y) image coordinates that each output pixel sampled, over the central 16x16 pixels."""
    lut = np.arange(256, dtype=np.float32) / 8  # value = coordinate
    xs = [augment(ramp(axis), None, aug, seed, epoch, lut=lut) for axis in (1, 0)]
    c = slice(8, 24)
    return xs[0][0, 0, c, c], xs[1][0, 0, c, c]


def test_a_shift_only_distortion_moves_every_pixel_by_the_same_offset_within_the_range():
    grid = np.arange(8, 24) - 2.0  # image coordinate of each output pixel without distortion
    for seed in range(5):
        x, y = sampled_coordinates(Augment(shift=2), seed=seed)
        dx, dy = x - grid[None, :], y - grid[:, None]
        assert np.ptp(dx) < 1e-4 and np.ptp(dy) < 1e-4  # a pure translation
        assert abs(dx[0, 0]) <= 2 and abs(dy[0, 0]) <= 2


def test_the_elastic_field_is_smooth_and_of_the_documented_size():
    grid = np.arange(8, 24) - 2.0
    mags = []
    for seed in range(8):
        x, y = sampled_coordinates(Augment(alpha=34, sigma=4), seed=seed)
        dx, dy = x - grid[None, :], y - grid[:, None]
        mags.append(np.sqrt(dx ** 2 + dy ** 2).mean())
        # Smoothed by a Gaussian of 4 px, neighbours move alike: the difference has a std of
        # about 0.25 px (unsmoothed noise times alpha would differ by ~20 px).
        assert np.abs(np.diff(dx, axis=1)).max() < 1.5 and np.abs(np.diff(dy, axis=0)).max() < 1.5
    # alpha 34 times the std of uniform noise smoothed by sigma 4 (about 0.04 per component).
    assert 0.5 < np.mean(mags) < 4.0, mags


@pytest.mark.parametrize("field, value, needle", [
    ("rotate", -1.0, "augment: rotate must be in [0, 180], got -1"),
    ("rotate", 181.0, "augment: rotate must be in [0, 180], got 181"),
    ("scale", 1.0, "augment: scale must be in [0, 1), got 1"),
    ("shear", 2.0, "augment: shear must be in [0, 1], got 2"),
    ("shift", float("nan"), "augment: shift must be in [0, 1000], got nan"),
    ("alpha", float("inf"), "augment: alpha must be in [0, 1000], got inf"),
    ("sigma", 0.0, "augment: sigma must be in (0, 16], got 0"),
])
def test_bad_parameters_are_a_value_error_naming_the_parameter(field, value, needle):
    with pytest.raises(ValueError) as e:
        augment(digits(2), None, Augment(**{field: value}))
    assert needle in str(e.value)
    with pytest.raises(ValueError, match=f"augment: {field} must be"):
        next(iter(DataLoader(digits(2), np.zeros(2, np.int64), augment=Augment(**{field: value}))))


def test_bad_indices_seed_and_theta_are_value_errors():
    with pytest.raises(ValueError, match=r"augment_batch: idx\[1\] = 5 is outside \[0, 2\)"):
        augment(digits(2), np.array([0, 5]), STRONG)
    with pytest.raises(ValueError, match="augment_batch: seed must be >= 0, got -1"):
        augment(digits(2), None, STRONG, seed=-1)
    with pytest.raises(ValueError, match=r"warp_affine: theta must have shape \(N, 2, 3\)"):
        _core.warp_affine(digits(2), np.zeros((2, 3, 3), np.float32), 2, LUT)
    with pytest.raises(ValueError, match="does not match images.shape"):
        _core.warp_affine(digits(2), np.zeros((3, 2, 3), np.float32), 2, LUT)
    with pytest.raises(ValueError, match="must be finite"):
        _core.warp_affine(digits(1), np.array([[[1, 0, np.nan], [0, 1, 0]]], np.float32), 2, LUT)
    with pytest.raises(TypeError, match="uint8"):
        _core.augment_batch(np.zeros((2, 28, 28), np.float32), None, 2, LUT, 0, 0)


# ------------------------------------------------------------------------- the Python plumbing

def test_augment_names_and_objects_resolve():
    assert get_augment(None) is None and get_augment("none") is None
    assert get_augment("affine") == AUGMENTS["affine"] and get_augment(STRONG) is STRONG
    assert get_augment({"shift": 1.0}) == Augment(shift=1.0)
    with pytest.raises(ValueError, match="augment must be one of"):
        get_augment("rotate")
    with pytest.raises(TypeError, match="augment must be"):
        get_augment(3)


def test_augment_none_is_the_unaugmented_pipeline():
    images, labels = digits(50), np.arange(50) % 10
    plain = list(DataLoader(images, labels, 16, seed=3))
    for aug in ("none", None):
        batches = list(DataLoader(images, labels, 16, seed=3, augment=aug))
        assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(plain, batches))


def test_dataloader_distorts_afresh_each_epoch_and_reproducibly():
    images, labels = digits(40), np.arange(40) % 10
    loader = DataLoader(images, labels, 40, shuffle=False, seed=5, augment="affine+elastic")
    first, second = next(iter(loader))[0], next(iter(loader))[0]
    assert not np.array_equal(first, second)
    again = DataLoader(images, labels, 40, shuffle=False, seed=5, augment="affine+elastic")
    assert np.array_equal(next(iter(again))[0], first)
    again.set_epoch(1)
    assert np.array_equal(next(iter(again))[0], second)


def test_fit_on_arrays_and_on_a_dataloader_apply_the_same_distortions():
    images, labels = digits(96), np.arange(96) % 10
    a, b = pylenet.LeNet5(seed=0), pylenet.LeNet5(seed=0)
    pylenet.fit(a, (images, labels), epochs=2, batch_size=32, augment="affine", progress=False)
    pylenet.fit(b, DataLoader(images, labels, 32, seed=0, augment="affine"), epochs=2,
                batch_size=32, progress=False)
    for name, value in a.state_dict().items():
        assert np.array_equal(b.state_dict()[name], value), name
    c = pylenet.LeNet5(seed=0)
    pylenet.fit(c, (images, labels), epochs=2, batch_size=32, progress=False)
    assert any(not np.array_equal(c.state_dict()[k], v) for k, v in a.state_dict().items())


def test_fit_refuses_augment_where_it_cannot_apply():
    images, labels = digits(8), np.arange(8) % 10
    with pytest.raises(ValueError, match="give DataLoader"):
        pylenet.fit(pylenet.LeNet5(), DataLoader(images, labels), epochs=1, augment="affine", progress=False)
    floats = pylenet.data.pad_and_normalize(images)
    with pytest.raises(ValueError, match="augment distorts uint8 digits"):
        pylenet.fit(pylenet.LeNet5(), (floats, labels), epochs=1, augment="affine", progress=False)


def test_a_grid_of_distorted_digits_is_saved_as_png(tmp_path, mnist_dir):
    from PIL import Image
    images, _ = pylenet.load_mnist("test", root=mnist_dir, download=False, progress=False)
    picks = np.arange(10) * 7
    rows = [_core.gather_pad_normalize(images, picks, 2, LUT)]
    for name in ("affine", "elastic", "affine+elastic"):
        for epoch in range(2):
            rows.append(augment(images, picks, AUGMENTS[name], seed=0, epoch=epoch))
    grid = np.concatenate([np.concatenate(list(r[:, 0]), axis=1) for r in rows], axis=0)
    pixels = np.clip((grid * MNIST_STD + MNIST_MEAN) * 255, 0, 255).astype(np.uint8)
    path = tmp_path / "augment_grid.png"
    Image.fromarray(255 - pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST).save(path)
    assert Image.open(path).size == (2 * 32 * 10, 2 * 32 * 7)
    # Every distorted digit keeps its ink: about as much as the original, and mostly inside.
    ink = [(r * MNIST_STD + MNIST_MEAN).clip(0, 1).sum(axis=(1, 2, 3)) for r in rows]
    for r in ink[1:]:
        assert np.all(r > 0.5 * ink[0]) and np.all(r < 2.0 * ink[0])


# ------------------------------------------------------------------------- schedule and recipes

def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    opt = SGD([pylenet.Parameter(np.zeros(3, np.float32))], lr=0.1)
    s = WarmupCosineLR(opt, T_max=3, warmup=0.5)
    assert opt.lr == pytest.approx(0.01)  # start_factor 0.1
    assert s.lr_at(0.25) == pytest.approx(0.01 + 0.09 * 0.5)
    assert s.lr_at(0.5) == pytest.approx(0.1)
    assert s.lr_at(1.75) == pytest.approx(0.05)
    assert s.lr_at(3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="warmup must be in"):
        WarmupCosineLR(opt, T_max=3, warmup=4)


def test_the_trainer_steps_a_per_batch_schedule_every_batch():
    images, labels = digits(64), np.arange(64) % 10
    model = pylenet.LeNet5(seed=0)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    seen = []

    class Recording(WarmupCosineLR):
        def step_batch(self, epoch):
            seen.append(epoch)
            super().step_batch(epoch)
    pylenet.fit(model, (images, labels), epochs=2, batch_size=16, optimizer=opt,
                scheduler=Recording(opt, T_max=2, warmup=0.5), progress=False)
    assert seen == [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75]


def test_the_fast_recipe_reaches_python_and_the_cli_alike():
    args = _parser().parse_args(["train", "--recipe", "fast"])
    assert (args.batch_size, args.epochs) == (64, 10)  # the first parse: main re-parses
    args = _parser(FAST_RECIPE).parse_args(["train", "--recipe", "fast", "--batch-size", "32"])
    assert args.batch_size == 32 and args.epochs == FAST_RECIPE["epochs"]
    assert args.schedule == "warmup_cosine" and args.warmup == FAST_RECIPE["warmup"]
    assert DEFAULT_RECIPE["augment"] == "none" and FAST_RECIPE["augment"] in AUGMENTS


def test_train_until_accuracy_stops_at_the_first_epoch_reaching_it(mnist_dir, tmp_path, capsys, restore_threads):
    out = tmp_path / "run"
    code = main([str(a) for a in ["train", "--data", mnist_dir, "--limit", 1000, "--epochs", 3,
                                  "--out", out, "--no-progress", "--threads", 2, "--recipe", "fast",
                                  "--augment", "affine", "--until-accuracy", 0.15]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"] == "fast" and metrics["augment"] == "affine"
    accs = [r["val_accuracy"] for r in metrics["history"]]
    until = metrics["until_accuracy"]
    assert until["target"] == 0.15 and until["wall_time_s"] > 0
    # The first epoch at or above the target, and not one more.
    assert until["epoch"] == len(accs) == metrics["epochs"]
    assert accs[-1] >= 0.15 and all(a < 0.15 for a in accs[:-1])
    assert f"reached 15.00% test accuracy at epoch {until['epoch']}" in captured.out
