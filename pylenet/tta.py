"""Test-time augmentation (TTA): class probabilities averaged over pixel-shifted copies of each input.

A view is an integer shift (dy, dx) of the network input (N, C, H, W): dy rows down, dx
columns right; the rows and columns it uncovers repeat the nearest edge, which for a padded
MNIST digit is its background. The identity view always takes part; TTAS names the extra views.
"""
from __future__ import annotations

import numpy as np

from pylenet import ops

TTAS = {
    "none": (),
    "vshift": ((-1, 0), (1, 0)),                                   # one pixel up and down
    "shift4": ((-1, 0), (1, 0), (0, -1), (0, 1)),                  # and left and right
    "shift8": ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)),
}


def get_tta(tta) -> tuple:
    """The extra views as a tuple of (dy, dx) int pairs, from None, a name in TTAS or a sequence
    of pairs; ValueError/TypeError naming what was wrong."""
    if tta is None:
        return ()
    if isinstance(tta, str):
        if tta not in TTAS:
            raise ValueError(f"tta must be one of {list(TTAS)} or a sequence of (dy, dx) shifts, got {tta!r}")
        return TTAS[tta]
    try:
        views = tuple(tuple(v) for v in tta)
    except TypeError:
        raise TypeError(f"tta must be a name in {list(TTAS)} or a sequence of (dy, dx) shifts, "
                        f"got {type(tta).__name__}") from None
    for v in views:
        if len(v) != 2 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in v):
            raise ValueError(f"tta: each view must be a (dy, dx) pair of ints, got {v!r}")
    return tuple((int(dy), int(dx)) for dy, dx in views)


def shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """x (N, C, H, W) moved dy rows down and dx columns right, as a new array; the uncovered
    rows and columns repeat the nearest remaining edge."""
    n, c, h, w = x.shape
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"tta: shift ({dy}, {dx}) does not fit inputs of {h}x{w}")
    out = np.empty_like(x)
    rows_to, rows_from = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    out[:, :, rows_to, cols_to] = x[:, :, rows_from, cols_from]
    if dx > 0:
        out[:, :, rows_to, :dx] = out[:, :, rows_to, dx:dx + 1]
    elif dx < 0:
        out[:, :, rows_to, w + dx:] = out[:, :, rows_to, w + dx - 1:w + dx]
    if dy > 0:
        out[:, :, :dy, :] = out[:, :, dy:dy + 1, :]
    elif dy < 0:
        out[:, :, h + dy:, :] = out[:, :, h + dy - 1:h + dy, :]
    return out


def tta_probabilities(scores, x: np.ndarray, views: tuple, first: np.ndarray | None = None) -> np.ndarray:
    """Mean over the identity and `views` of softmax(scores(view of x)), float32 (N, classes).

    scores(x) gives class scores (higher = likelier); `first`, when given, is scores(x) already
    computed (evaluate's own forward pass), so the identity view is not run twice."""
    total = ops.softmax(scores(x) if first is None else first).astype(np.float64)
    for dy, dx in views:
        total += ops.softmax(scores(shift(x, dy, dx)))
    return (total / (1 + len(views))).astype(np.float32)
