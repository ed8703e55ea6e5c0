"""Max- and average-pooling forward and backward against the float64 reference, PyTorch and
finite differences; max-pool ties, the floor rule and NaN/Inf."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference as ref
from pylenet import ops
from reference import maxerr_report  # noqa: F401  (autouse: prints MAXERR lines)

FIXED_CASES = [
    # N, C, H, W, kernel, stride
    (1, 1, 1, 1, 1, 1),     # everything 1
    (1, 1, 2, 2, 2, 2),     # one window
    (2, 6, 28, 28, 2, 2),   # LeNet S2
    (2, 16, 10, 10, 2, 2),  # LeNet S4
    (2, 3, 5, 7, 2, 2),     # odd sizes: the floor rule drops the last row/column
    (1, 1, 17, 3, 3, 2),    # overlapping windows, non-square
    (2, 2, 7, 7, 2, 3),     # stride > kernel: untouched pixels
    (1, 3, 5, 5, 5, 1),     # one window covering the plane
    (3, 1, 9, 4, 3, 3),
    (1, 2, 6, 5, 4, 1),     # heavy overlap
    (1, 1, 4, 6, 1, 2),     # kernel 1
]


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        N, C = rng.integers(1, 4), rng.integers(1, 4)
        H, W = rng.choice([1, 2, 3, 4, 7, 12, 17], 2)
        kernel, stride = rng.integers(1, 6), rng.integers(1, 4)
        if kernel <= min(H, W):
            cases.append(tuple(int(v) for v in (N, C, H, W, kernel, stride)))
    return cases


CASES = FIXED_CASES + random_cases(25, seed=77)


def make_inputs(case, seed=0):
    N, C, H, W, kernel, stride = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    P, Q = ref.out_size(H, kernel, stride), ref.out_size(W, kernel, stride)
    dy = rng.standard_normal((N, C, P, Q)).astype(np.float32)
    return x, dy, kernel, stride


def torch_maxpool(x, dy, kernel, stride):
    tx = torch.tensor(x, requires_grad=True)
    ty, idx = F.max_pool2d(tx, kernel, stride, return_indices=True)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), idx.numpy(), tx.grad.numpy()


def torch_avgpool(x, dy, kernel, stride):
    tx = torch.tensor(x, requires_grad=True)
    ty = F.avg_pool2d(tx, kernel, stride)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), tx.grad.numpy()


# ---------------------------------------------------------------------------------------------
# max-pool


@pytest.mark.parametrize("case", CASES, ids=str)
def test_maxpool_forward_matches_reference_and_torch(case):
    x, dy, kernel, stride = make_inputs(case)
    y, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    ref.assert_fresh_f32(y)
    assert argmax.dtype == np.int32 and argmax.shape == y.shape and argmax.flags.c_contiguous
    ry, rarg = ref.maxpool2d_forward(x, kernel, stride)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(argmax, rarg)
    ty, tidx, _ = torch_maxpool(x, dy, kernel, stride)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(argmax, tidx)
    ref.note_maxerr("maxpool2d_forward", y, ty)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_maxpool_backward_matches_reference_and_torch(case):
    x, dy, kernel, stride = make_inputs(case)
    _, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    dx = ops.maxpool2d_backward(dy, argmax, x.shape)
    ref.assert_fresh_f32(dx)
    # overlapping windows that share a maximum add their dy: float32 sums, not exact
    ref.assert_close(dx, ref.maxpool2d_backward(dy, argmax, x.shape), rtol=1e-6, atol=1e-6)
    _, tidx, tdx = torch_maxpool(x, dy, kernel, stride)
    ref.assert_close(dx, tdx, rtol=1e-6, atol=1e-6)
    ref.note_maxerr("maxpool2d_backward", dx, tdx)
    # torch's own indices, as int32, drive the same backward
    np.testing.assert_array_equal(ops.maxpool2d_backward(dy, tidx.astype(np.int32), x.shape), dx)


def test_maxpool_constant_input_takes_first_index_in_each_window():
    x = np.full((2, 3, 6, 9), 0.5, np.float32)
    for kernel, stride in ((2, 2), (3, 2), (3, 3), (2, 1)):
        y, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
        P, Q = y.shape[2:]
        first = (np.arange(P)[:, None] * stride) * 9 + np.arange(Q)[None, :] * stride
        np.testing.assert_array_equal(argmax, np.broadcast_to(first, y.shape))
        np.testing.assert_array_equal(argmax, torch_maxpool(x, y, kernel, stride)[1])
        np.testing.assert_array_equal(y, 0.5)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 1), (3, 2), (4, 3)])
def test_maxpool_partial_ties_match_torch(kernel, stride):
    # values from {0, 1, 2}: most windows hold several maxima
    rng = np.random.default_rng(kernel * 10 + stride)
    x = rng.integers(0, 3, (2, 3, 11, 10)).astype(np.float32)
    y, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ty, tidx, tdx = torch_maxpool(x, dy, kernel, stride)
    np.testing.assert_array_equal(argmax, tidx)
    np.testing.assert_array_equal(argmax, ref.maxpool2d_forward(x, kernel, stride)[1])
    ref.assert_close(ops.maxpool2d_backward(dy, argmax, x.shape), tdx, rtol=1e-6, atol=1e-6)


def test_maxpool_all_negative_and_minus_inf_windows():
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    x[0, 0, 3, 3] = -1e30
    y, argmax = ops.maxpool2d_forward(x)
    ty, tidx, _ = torch_maxpool(x, np.ones((1, 1, 2, 2), np.float32), 2, 2)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(argmax, tidx)


def test_maxpool_nan_and_inf_propagate_like_torch():
    x, dy, kernel, stride = make_inputs((2, 2, 8, 8, 2, 2))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 3] = np.inf
    x[1, 0, 4, 4] = -np.inf
    x[1, 1, 6, 6] = np.nan
    x[1, 1, 7, 7] = np.inf  # NaN and +Inf in the same window: NaN wins
    y, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    ty, tidx, _ = torch_maxpool(x, dy, kernel, stride)
    np.testing.assert_array_equal(y, ty)  # NaN == NaN for assert_array_equal
    finite = ~np.isnan(ty)
    np.testing.assert_array_equal(argmax[finite], tidx[finite])
    # where the window holds NaN, argmax must point at a NaN
    planes = x.reshape(2, 2, -1)
    picked = np.take_along_axis(planes, argmax.reshape(2, 2, -1).astype(np.int64), axis=2)
    np.testing.assert_array_equal(np.isnan(picked).reshape(y.shape), ~finite)


def test_maxpool_untouched_pixels_get_zero_gradient():
    x, dy, kernel, stride = make_inputs((1, 2, 7, 7, 2, 3))
    _, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    dx = ops.maxpool2d_backward(dy, argmax, x.shape)
    covered = np.zeros((7, 7), bool)
    covered[np.ix_([0, 1, 3, 4], [0, 1, 3, 4])] = True
    assert np.all(dx[:, :, ~covered] == 0)
    assert np.count_nonzero(dx) == dy.size


@pytest.mark.parametrize("case", [(1, 1, 4, 4, 2, 2), (2, 2, 5, 6, 3, 2), (1, 2, 5, 5, 2, 1),
                                  (1, 1, 7, 5, 2, 3)], ids=str)
def test_maxpool_finite_differences(case):
    N, C, H, W, kernel, stride = case
    x = gc.separated_values(np.random.default_rng(3), (N, C, H, W))

    def forward(x):
        return ops.maxpool2d_forward(x, kernel=kernel, stride=stride)[0]

    def backward(G, x):
        argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)[1]
        return {"x": ops.maxpool2d_backward(G, argmax, x.shape)}

    gc.gradcheck(forward, backward, {"x": x})


def test_maxpool_backward_overwrites_and_returns_fresh_arrays():
    x, dy, kernel, stride = make_inputs((2, 3, 9, 8, 3, 1))
    _, argmax = ops.maxpool2d_forward(x, kernel=kernel, stride=stride)
    first = ops.maxpool2d_backward(dy, argmax, x.shape)
    ops.maxpool2d_backward(dy * 100, argmax, x.shape)
    second = ops.maxpool2d_backward(dy, argmax, x.shape)
    np.testing.assert_array_equal(first, second)
    assert not np.shares_memory(first, second) and not np.shares_memory(second, dy)


# ---------------------------------------------------------------------------------------------
# average pool


@pytest.mark.parametrize("case", CASES, ids=str)
def test_avgpool_matches_reference_and_torch(case):
    x, dy, kernel, stride = make_inputs(case)
    y = ops.avgpool2d_forward(x, kernel=kernel, stride=stride)
    ref.assert_fresh_f32(y)
    ref.assert_close(y, ref.avgpool2d_forward(x, kernel, stride), rtol=1e-5, atol=1e-6)
    dx = ops.avgpool2d_backward(dy, x.shape, kernel=kernel, stride=stride)
    ref.assert_fresh_f32(dx)
    ref.assert_close(dx, ref.avgpool2d_backward(dy, x.shape, kernel, stride), rtol=1e-5, atol=1e-6)
    ty, tdx = torch_avgpool(x, dy, kernel, stride)
    ref.assert_close(y, ty, rtol=1e-5, atol=1e-6)
    ref.assert_close(dx, tdx, rtol=1e-5, atol=1e-6)
    ref.note_maxerr("avgpool2d_forward", y, ty)
    ref.note_maxerr("avgpool2d_backward", dx, tdx)


def test_avgpool_untouched_pixels_get_zero_gradient():
    x, dy, kernel, stride = make_inputs((1, 2, 7, 7, 2, 3))
    dx = ops.avgpool2d_backward(dy, x.shape, kernel=kernel, stride=stride)
    covered = np.zeros((7, 7), bool)
    covered[np.ix_([0, 1, 3, 4], [0, 1, 3, 4])] = True
    assert np.all(dx[:, :, ~covered] == 0)
    assert np.all(dx[:, :, covered] != 0)


@pytest.mark.parametrize("case", [(1, 1, 4, 4, 2, 2), (2, 2, 5, 6, 3, 2), (1, 2, 5, 5, 2, 1),
                                  (1, 1, 7, 5, 2, 3)], ids=str)
def test_avgpool_finite_differences(case):
    x, _, kernel, stride = make_inputs(case, seed=4)
    gc.gradcheck(lambda x: ops.avgpool2d_forward(x, kernel=kernel, stride=stride),
                 lambda G, x: {"x": ops.avgpool2d_backward(G, x.shape, kernel=kernel, stride=stride)},
                 {"x": x})


def test_avgpool_finite_differences_reject_a_broken_gradient():
    x, _, kernel, stride = make_inputs((1, 2, 6, 6, 3, 1), seed=5)

    def broken(G, x):
        return {"x": 1.01 * ops.avgpool2d_backward(G, x.shape, kernel=kernel, stride=stride)}

    with pytest.raises(AssertionError, match="gradient of x"):
        gc.gradcheck(lambda x: ops.avgpool2d_forward(x, kernel=kernel, stride=stride), broken, {"x": x})


def test_avgpool_backward_overwrites_and_returns_fresh_arrays():
    x, dy, kernel, stride = make_inputs((2, 3, 9, 8, 3, 1))
    first = ops.avgpool2d_backward(dy, x.shape, kernel=kernel, stride=stride)
    ops.avgpool2d_backward(dy * 100, x.shape, kernel=kernel, stride=stride)
    second = ops.avgpool2d_backward(dy, x.shape, kernel=kernel, stride=stride)
    np.testing.assert_array_equal(first, second)
    assert not np.shares_memory(first, second) and not np.shares_memory(second, dy)


def test_avgpool_nan_and_inf_propagate_like_torch():
    x, dy, kernel, stride = make_inputs((2, 2, 8, 8, 2, 2))
    x[0, 0, 1, 1] = np.nan
    x[0, 1, 2, 3] = np.inf
    x[1, 0, 4, 4] = -np.inf
    x[1, 1, 6, 6] = np.inf
    x[1, 1, 7, 7] = -np.inf  # +Inf and -Inf in one window: NaN
    dy[0, 1, 3, 3] = np.nan
    y = ops.avgpool2d_forward(x, kernel=kernel, stride=stride)
    dx = ops.avgpool2d_backward(dy, x.shape, kernel=kernel, stride=stride)
    ty, tdx = torch_avgpool(x, dy, kernel, stride)
    for got, want in ((y, ty), (dx, tdx)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        ref.assert_close(got, want, rtol=1e-5, atol=1e-6)
