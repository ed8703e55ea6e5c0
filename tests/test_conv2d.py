"""conv2d forward and backward against the float64 reference, PyTorch and finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference as ref
from pylenet import ops
from reference import maxerr_report  # noqa: F401  (autouse: prints MAXERR lines)

FIXED_CASES = [
    # N, C, H, W, K, R, S, stride, padding
    (1, 1, 1, 1, 1, 1, 1, 1, 0),      # everything 1
    (1, 1, 3, 3, 1, 3, 3, 1, 0),      # kernel == input: 1x1 output
    (1, 2, 1, 1, 3, 3, 3, 1, 1),      # 1x1 input, kernel == padded input
    (3, 1, 2, 2, 2, 5, 5, 1, 2),      # kernel larger than the input, fits the padded input
    (1, 3, 17, 17, 2, 5, 5, 1, 2),    # odd sizes, "same" padding
    (2, 3, 17, 3, 4, 3, 1, 2, 1),     # non-square input and kernel
    (3, 1, 5, 7, 2, 2, 4, 3, 2),      # stride 3, padding 2, non-square
    (1, 1, 7, 7, 1, 2, 2, 3, 0),      # stride > kernel: rows/cols 2, 5, 6 untouched
    (2, 2, 9, 4, 1, 1, 3, 3, 2),      # padding > kernel: outputs that see only padding
    (1, 17, 3, 5, 3, 2, 1, 2, 0),     # many channels, tiny plane
    (2, 1, 32, 32, 6, 5, 5, 1, 0),    # LeNet C1
    (2, 6, 14, 14, 16, 5, 5, 1, 0),   # LeNet C3
    (11, 16, 5, 5, 24, 5, 5, 1, 0),   # LeNet C5 as a conv: the dense (Linear) path, 2 blocks
    (9, 3, 4, 6, 5, 4, 6, 2, 0),      # dense, non-square, any stride
    (9, 16, 4, 4, 16, 3, 3, 1, 1),    # small maps: exact-grid dx, images grouped per GEMM
    (5, 32, 7, 5, 16, 3, 2, 1, 0),    # exact-grid dx, non-square kernel and map
    (3, 16, 6, 6, 32, 5, 5, 1, 4),    # exact-grid dx with padding R-1 (dy unpadded)
    (4, 16, 5, 5, 8, 3, 3, 1, 1),     # exact-grid dx beside the wide-grid dw
    (2, 16, 3, 3, 16, 1, 1, 1, 1),    # padding beyond the kernel's reach: the wide dx
    (3, 5, 11, 9, 16, 3, 3, 2, 1),    # stride 2, 16k outputs: exact-grid forward and dw, im2col dx
    (9, 8, 16, 16, 32, 3, 3, 2, 1),   # the same with images grouped per GEMM
    (2, 4, 10, 7, 16, 2, 3, 3, 0),    # stride 3, non-square
]


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        N, C, K = rng.integers(1, 4), rng.integers(1, 4), rng.choice([1, 2, 5])
        H, W = rng.choice([1, 2, 3, 5, 8, 11, 17], 2)
        R, S = rng.integers(1, 6, 2)
        stride, padding = rng.integers(1, 4), rng.integers(0, 3)
        if R <= H + 2 * padding and S <= W + 2 * padding:
            cases.append(tuple(int(v) for v in (N, C, H, W, K, R, S, stride, padding)))
    return cases


CASES = FIXED_CASES + random_cases(30, seed=2024)


def make_inputs(case, seed=0):
    N, C, H, W, K, R, S, stride, padding = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, R, S)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    P, Q = ref.out_size(H, R, stride, padding), ref.out_size(W, S, stride, padding)
    dy = rng.standard_normal((N, K, P, Q)).astype(np.float32)
    return x, w, b, dy, stride, padding


def torch_conv(x, w, b, dy, stride, padding):
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=padding)
    ty.backward(torch.from_numpy(dy))
    db = None if b is None else tb.grad.numpy()
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), db


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_reference_and_torch(case):
    x, w, b, dy, stride, padding = make_inputs(case)
    y = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    ref.assert_fresh_f32(y)
    ref.assert_close(y, ref.conv2d_forward(x, w, b, stride, padding), what="y vs reference")
    ty = torch_conv(x, w, b, dy, stride, padding)[0]
    ref.assert_close(y, ty, what="y vs torch")
    ref.note_maxerr("conv2d_forward", y, ty)


@pytest.mark.parametrize("case", FIXED_CASES[:8], ids=str)
def test_forward_without_bias(case):
    x, w, b, dy, stride, padding = make_inputs(case)
    y = ops.conv2d_forward(x, w, None, stride=stride, padding=padding)
    ref.assert_close(y, ref.conv2d_forward(x, w, None, stride, padding))
    np.testing.assert_array_equal(y, ops.conv2d_forward(x, w, np.zeros_like(b), stride, padding))
    ty = torch_conv(x, w, None, dy, stride, padding)[0]
    ref.assert_close(y, ty)
    ref.note_maxerr("conv2d_forward", y, ty)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_backward_matches_reference_and_torch(case):
    x, w, b, dy, stride, padding = make_inputs(case)
    dx, dw, db = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    ref.assert_fresh_f32(dx, dw, db)
    rdx, rdw, rdb = ref.conv2d_backward(x, w, dy, stride, padding)
    ref.assert_close(dx, rdx, what="dx vs reference")
    ref.assert_close(dw, rdw, what="dw vs reference")
    ref.assert_close(db, rdb, what="db vs reference")
    _, tdx, tdw, tdb = torch_conv(x, w, b, dy, stride, padding)
    for name, got, want in (("dx", dx, tdx), ("dw", dw, tdw), ("db", db, tdb)):
        ref.assert_close(got, want, what=f"{name} vs torch")
        ref.note_maxerr("conv2d_backward", got, want)


def test_untouched_pixels_get_zero_gradient():
    # 7x7 input, 2x2 kernel, stride 3: windows cover rows/cols {0, 1, 3, 4} only.
    x, w, b, dy, stride, padding = make_inputs((1, 2, 7, 7, 3, 2, 2, 3, 0))
    dx = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)[0]
    untouched = np.ones((7, 7), bool)
    untouched[np.ix_([0, 1, 3, 4], [0, 1, 3, 4])] = False
    assert np.all(dx[:, :, untouched] == 0)
    assert np.all(dx[:, :, ~untouched] != 0)


def test_outputs_that_see_only_padding_equal_bias():
    x, w, b, dy, stride, padding = make_inputs((2, 2, 4, 4, 3, 1, 1, 1, 2))
    y = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    assert y.shape == (2, 3, 8, 8)
    for k in range(3):
        np.testing.assert_array_equal(y[:, k, :2, :], b[k])
        np.testing.assert_array_equal(y[:, k, :, -2:], b[k])


GRAD_CASES = [
    (1, 1, 3, 3, 1, 2, 2, 1, 0),
    (2, 2, 5, 4, 3, 3, 2, 1, 1),
    (1, 2, 6, 5, 2, 3, 3, 2, 1),
    (2, 1, 4, 7, 2, 1, 3, 3, 2),
    (1, 3, 3, 3, 2, 5, 4, 1, 2),
]


def conv_grads(G, x, w, b, stride, padding):
    dx, dw, db = ops.conv2d_backward(x, w, G, stride=stride, padding=padding)
    return {"x": dx, "w": dw, "b": db}


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_finite_differences(case):
    x, w, b, _, stride, padding = make_inputs(case, seed=7)
    gc.gradcheck(ops.conv2d_forward, conv_grads, dict(x=x, w=w, b=b, stride=stride, padding=padding))


@pytest.mark.parametrize("breakage", [lambda g: 1.01 * g, lambda g: g.transpose(0, 1, 3, 2)])
def test_finite_differences_reject_a_broken_weight_gradient(breakage):
    x, w, b, _, stride, padding = make_inputs((2, 2, 5, 5, 2, 3, 3, 1, 1), seed=8)

    def broken(G, **kw):
        grads = conv_grads(G, **kw)
        return {"w": breakage(grads["w"])}

    with pytest.raises(AssertionError, match="gradient of w"):
        gc.gradcheck(ops.conv2d_forward, broken, dict(x=x, w=w, b=b, stride=stride, padding=padding))


def test_backward_overwrites_and_returns_fresh_arrays():
    x, w, b, dy, stride, padding = make_inputs((2, 3, 9, 8, 4, 3, 3, 2, 1))
    first = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    want = [a.copy() for a in first]
    # an unrelated call in between must not leak into the next result
    x2, w2, _, dy2, _, _ = make_inputs((2, 3, 9, 8, 4, 3, 3, 2, 1), seed=1)
    ops.conv2d_backward(x2 * 100, w2, dy2, stride=stride, padding=padding)
    for a in first:
        a.fill(np.nan)  # scribbling on a returned array must not affect later calls
    second = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    for a, c, s in zip(first, want, second):
        np.testing.assert_array_equal(s, c)
        assert not np.shares_memory(a, s)
    for a in second:
        for inp in (x, w, dy):
            assert not np.shares_memory(a, inp)


def test_forward_is_deterministic_and_fresh():
    x, w, b, _, stride, padding = make_inputs(FIXED_CASES[4])
    y1 = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    y1_copy = y1.copy()
    y1[...] = np.nan
    y2 = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    np.testing.assert_array_equal(y2, y1_copy)


def assert_same_nonfinite(got, want):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    ref.assert_close(got, want)


@pytest.mark.parametrize("padding", [0, 1])
def test_nan_inf_in_x_propagate_like_torch(padding):
    x, w, b, dy, stride, padding = make_inputs((2, 2, 6, 6, 3, 3, 3, 1, padding))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 4, 4] = np.inf
    x[1, 0, 0, 5] = -np.inf
    ty, tdx, tdw, tdb = torch_conv(x, w, b, dy, stride, padding)
    assert_same_nonfinite(ops.conv2d_forward(x, w, b, stride=stride, padding=padding), ty)
    dx, dw, db = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    for got, want in ((dx, tdx), (dw, tdw), (db, tdb)):
        assert_same_nonfinite(got, want)


def test_nan_in_w_propagates_like_torch_without_padding():
    x, w, b, dy, stride, padding = make_inputs((2, 2, 6, 6, 3, 3, 3, 1, 0))
    w[2, 1, 0, 0] = np.nan
    ty, tdx, tdw, tdb = torch_conv(x, w, b, dy, stride, padding)
    assert_same_nonfinite(ops.conv2d_forward(x, w, b, stride=stride, padding=padding), ty)
    dx, dw, db = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    for got, want in ((dx, tdx), (dw, tdw), (db, tdb)):
        assert_same_nonfinite(got, want)


def test_nan_in_w_meets_zero_padding_as_ieee_says():
    # A NaN weight tap that lands on zero padding gives 0 * NaN = NaN, as in the explicitly padded
    # reference. PyTorch's CPU conv skips padded taps there, so it is not the oracle for this one.
    x, w, b, dy, stride, padding = make_inputs((2, 2, 6, 6, 3, 3, 3, 1, 1))
    w[2, 1, 0, 0] = np.nan
    assert_same_nonfinite(ops.conv2d_forward(x, w, b, stride=stride, padding=padding),
                          ref.conv2d_forward(x, w, b, stride, padding))
    got = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    for g, want in zip(got, ref.conv2d_backward(x, w, dy, stride, padding)):
        assert_same_nonfinite(g, want)


def test_nan_in_dy_propagates():
    x, w, b, dy, stride, padding = make_inputs((1, 2, 5, 5, 2, 3, 3, 1, 0))
    dy[0, 1, 1, 2] = np.nan
    dx, dw, db = ops.conv2d_backward(x, w, dy, stride=stride, padding=padding)
    _, tdx, tdw, tdb = torch_conv(x, w, b, dy, stride, padding)
    for got, want in ((dx, tdx), (dw, tdw), (db, tdb)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
