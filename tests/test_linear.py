"""linear forward and backward against the float64 reference, PyTorch and finite differences."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference as ref
from pylenet import ops
from reference import maxerr_report  # noqa: F401  (autouse: prints MAXERR lines)

FIXED_CASES = [
    # N, I, O
    (1, 1, 1),
    (1, 3, 17),
    (3, 17, 1),
    (17, 3, 3),
    (16, 400, 120),  # LeNet F5
    (16, 120, 84),   # LeNet F6
    (5, 84, 10),     # LeNet output
    (2, 1000, 7),    # long dot products
]


def random_cases(count, seed):
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in (rng.integers(1, 20), rng.choice([1, 3, 17, 64, 129]),
                                   rng.choice([1, 3, 10, 33]))) for _ in range(count)]


CASES = FIXED_CASES + random_cases(16, seed=5)


def make_inputs(case, seed=0):
    N, I, O = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, I)).astype(np.float32), rng.standard_normal((O, I)).astype(np.float32),
            rng.standard_normal(O).astype(np.float32), rng.standard_normal((N, O)).astype(np.float32))


def torch_linear(x, w, b, dy):
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = F.linear(tx, tw, tb)
    ty.backward(torch.from_numpy(dy))
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), None if b is None else tb.grad.numpy()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_match_reference_and_torch(case):
    x, w, b, dy = make_inputs(case)
    y = ops.linear_forward(x, w, b)
    ref.assert_fresh_f32(y)
    ref.assert_close(y, ref.linear_forward(x, w, b), what="y vs reference")
    dx, dw, db = ops.linear_backward(x, w, dy)
    ref.assert_fresh_f32(dx, dw, db)
    for name, got, want in zip(("dx", "dw", "db"), (dx, dw, db), ref.linear_backward(x, w, dy)):
        ref.assert_close(got, want, what=f"{name} vs reference")
    ty, tdx, tdw, tdb = torch_linear(x, w, b, dy)
    ref.assert_close(y, ty, what="y vs torch")
    ref.note_maxerr("linear_forward", y, ty)
    for name, got, want in (("dx", dx, tdx), ("dw", dw, tdw), ("db", db, tdb)):
        ref.assert_close(got, want, what=f"{name} vs torch")
        ref.note_maxerr("linear_backward", got, want)


@pytest.mark.parametrize("case", FIXED_CASES[:5], ids=str)
def test_forward_without_bias(case):
    x, w, b, dy = make_inputs(case)
    y = ops.linear_forward(x, w, None)
    ref.assert_close(y, ref.linear_forward(x, w))
    np.testing.assert_array_equal(y, ops.linear_forward(x, w, np.zeros_like(b)))
    ty = torch_linear(x, w, None, dy)[0]
    ref.assert_close(y, ty)
    ref.note_maxerr("linear_forward", y, ty)


@pytest.mark.parametrize("case", [(1, 1, 1), (3, 4, 2), (2, 7, 5)], ids=str)
def test_finite_differences(case):
    x, w, b, _ = make_inputs(case, seed=9)
    gc.gradcheck(ops.linear_forward,
                 lambda G, x, w, b: dict(zip("xwb", ops.linear_backward(x, w, G))),
                 dict(x=x, w=w, b=b))


def test_finite_differences_reject_a_transposed_weight_gradient():
    x, w, b, _ = make_inputs((4, 3, 3), seed=10)

    def broken(G, x, w, b):
        dx, dw, db = ops.linear_backward(x, w, G)
        return {"w": np.ascontiguousarray(dw.T)}

    with pytest.raises(AssertionError, match="gradient of w"):
        gc.gradcheck(ops.linear_forward, broken, dict(x=x, w=w, b=b))


def test_backward_overwrites_and_returns_fresh_arrays():
    x, w, b, dy = make_inputs((16, 120, 84))
    first = ops.linear_backward(x, w, dy)
    ops.linear_backward(x * 3, w - 1, dy * 100)
    second = ops.linear_backward(x, w, dy)
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)
        assert not np.shares_memory(a, c)
        for inp in (x, w, dy):
            assert not np.shares_memory(c, inp)


def test_nan_inf_propagate_like_torch():
    x, w, b, dy = make_inputs((4, 6, 5))
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    w[3, 4] = -np.inf
    b[2] = np.nan
    dy[2, 1] = np.inf
    y = ops.linear_forward(x, w, b)
    got = (y,) + tuple(ops.linear_backward(x, w, dy))
    for g, want in zip(got, torch_linear(x, w, b, dy)):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(want))
        ref.assert_close(g, want)
