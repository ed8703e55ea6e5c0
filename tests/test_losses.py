"""softmax, softmax_cross_entropy and mse_loss against the float64 reference, PyTorch and finite
differences; large logits, NaN and Inf."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference as ref
from pylenet import ops
from reference import maxerr_report  # noqa: F401  (autouse: prints MAXERR lines)

CASES = [(1, 1), (1, 10), (3, 17), (17, 3), (16, 10), (64, 10), (2, 1000)]  # N, C


def make_logits(case, seed=0, scale=3.0):
    N, C = case
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C)) * scale).astype(np.float32), rng.integers(0, C, N)


def torch_cross_entropy(logits, labels):
    t = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(t, torch.from_numpy(np.asarray(labels, np.int64)))
    loss.backward()
    return loss.item(), t.grad.numpy()


# ---------------------------------------------------------------------------------------------
# softmax


@pytest.mark.parametrize("case", CASES, ids=str)
def test_softmax_matches_reference_and_torch(case):
    x, _ = make_logits(case)
    p = ops.softmax(x)
    ref.assert_fresh_f32(p)
    ref.assert_close(p, ref.softmax(x), rtol=1e-5, atol=1e-7)
    tp = torch.softmax(torch.from_numpy(x), dim=1).numpy()
    ref.assert_close(p, tp, rtol=1e-5, atol=1e-7)
    ref.note_maxerr("softmax", p, tp)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=1), 1.0, rtol=1e-5)


def test_softmax_large_logits_do_not_overflow():
    x = np.array([[1e4, 1e4 + 1, 1e4 - 1], [-1e4, -1e4 + 2, -1e4 - 3], [88.0, 89.0, 90.0],
                  [3e38, 0.0, -3e38]], np.float32)
    p = ops.softmax(x)
    assert np.all(np.isfinite(p))
    ref.assert_close(p, ref.softmax(x), rtol=1e-5, atol=1e-7)
    ref.assert_close(p, torch.softmax(torch.from_numpy(x), 1).numpy(), rtol=1e-5, atol=1e-7)


def test_softmax_nan_and_inf_rows_like_torch():
    x = np.array([[0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [-np.inf, 1.0, 2.0], [np.inf, 1.0, 2.0],
                  [-np.inf, -np.inf, 0.0]], np.float32)
    p = ops.softmax(x)
    tp = torch.softmax(torch.from_numpy(x), 1).numpy()
    np.testing.assert_array_equal(np.isnan(p), np.isnan(tp))
    ref.assert_close(p, tp, rtol=1e-5, atol=1e-7)
    assert np.all(np.isfinite(p[[0, 2, 4]]))  # a NaN row does not leak into the others


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy


@pytest.mark.parametrize("case", CASES, ids=str)
def test_cross_entropy_matches_reference_and_torch(case):
    logits, labels = make_logits(case)
    loss, d = ops.softmax_cross_entropy(logits, labels)
    assert type(loss) is float
    ref.assert_fresh_f32(d)
    rloss, rd = ref.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(rloss, rel=1e-5, abs=1e-6)
    ref.assert_close(d, rd, rtol=1e-5, atol=1e-7)
    tloss, td = torch_cross_entropy(logits, labels)
    assert loss == pytest.approx(tloss, rel=1e-5, abs=1e-6)
    ref.assert_close(d, td, rtol=1e-5, atol=1e-7)
    ref.note_maxerr("softmax_cross_entropy", [loss], [tloss])
    ref.note_maxerr("softmax_cross_entropy", d, td)


def test_cross_entropy_single_class_is_zero():
    loss, d = ops.softmax_cross_entropy(np.array([[3.0], [-7.0]], np.float32), np.array([0, 0]))
    assert loss == 0.0
    np.testing.assert_array_equal(d, 0.0)


def test_cross_entropy_large_logits_are_stable():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4 - 5], [-1e4, -1e4 + 30, -1e4 + 3],
                       [100.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2, 0, 1])
    loss, d = ops.softmax_cross_entropy(logits, labels)
    rloss, rd = ref.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert loss == pytest.approx(rloss, rel=1e-5)
    ref.assert_close(d, rd, rtol=1e-5, atol=1e-7)
    tloss, td = torch_cross_entropy(logits, labels)
    assert loss == pytest.approx(tloss, rel=1e-5)
    ref.assert_close(d, td, rtol=1e-5, atol=1e-7)


def test_cross_entropy_nan_logits_like_torch():
    logits, labels = make_logits((3, 4))
    logits[1, 2] = np.nan
    loss, d = ops.softmax_cross_entropy(logits, labels)
    tloss, td = torch_cross_entropy(logits, labels)
    assert np.isnan(loss) and np.isnan(tloss)
    np.testing.assert_array_equal(np.isnan(d), np.isnan(td))


@pytest.mark.parametrize("case", [(1, 2), (3, 4), (5, 3)], ids=str)
def test_cross_entropy_finite_differences(case):
    logits, labels = make_logits(case, seed=21, scale=2.0)
    gc.gradcheck(lambda logits, labels: ops.softmax_cross_entropy(logits, labels)[0],
                 lambda G, logits, labels: {"logits": ops.softmax_cross_entropy(logits, labels)[1]},
                 dict(logits=logits, labels=labels))


def test_cross_entropy_finite_differences_reject_a_gradient_not_divided_by_n():
    logits, labels = make_logits((3, 4), seed=22)
    with pytest.raises(AssertionError, match="gradient of logits"):
        gc.gradcheck(lambda logits, labels: ops.softmax_cross_entropy(logits, labels)[0],
                     lambda G, logits, labels: {"logits": 3 * ops.softmax_cross_entropy(logits, labels)[1]},
                     dict(logits=logits, labels=labels))


def test_cross_entropy_returns_fresh_gradients():
    logits, labels = make_logits((16, 10))
    first = ops.softmax_cross_entropy(logits, labels)
    ops.softmax_cross_entropy(logits * 7, (labels + 1) % 10)
    second = ops.softmax_cross_entropy(logits, labels)
    assert first[0] == second[0]
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.shares_memory(first[1], second[1]) and not np.shares_memory(second[1], logits)


# label smoothing: target (1 - s) onehot + s / C, as torch's CrossEntropyLoss(label_smoothing=s)


def torch_smoothed_cross_entropy(logits, labels, s):
    t = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=s)(t, torch.from_numpy(np.asarray(labels, np.int64)))
    loss.backward()
    return loss.item(), t.grad.numpy()


@pytest.mark.parametrize("s", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("case", [(1, 10), (3, 17), (64, 10)], ids=str)
def test_label_smoothing_matches_reference_and_torch(case, s):
    logits, labels = make_logits(case, seed=5)
    loss, d = ops.softmax_cross_entropy(logits, labels, s)
    rloss, rd = ref.softmax_cross_entropy(logits, labels, s)
    assert loss == pytest.approx(rloss, rel=1e-5, abs=1e-6)
    ref.assert_close(d, rd, rtol=1e-5, atol=1e-7)
    tloss, td = torch_smoothed_cross_entropy(logits, labels, s)
    assert loss == pytest.approx(tloss, rel=1e-5, abs=1e-6)
    ref.assert_close(d, td, rtol=1e-5, atol=1e-7)
    plain_loss, plain_d = ops.softmax_cross_entropy(logits, labels)
    assert abs(loss - plain_loss) > 1e-3 and np.abs(d - plain_d).max() > 1e-4  # it does something


def test_label_smoothing_zero_is_the_plain_loss_bit_for_bit():
    logits, labels = make_logits((64, 10), seed=6)
    assert ops.softmax_cross_entropy(logits, labels, 0.0)[0] == ops.softmax_cross_entropy(logits, labels)[0]
    np.testing.assert_array_equal(ops.softmax_cross_entropy(logits, labels, 0.0)[1],
                                  ops.softmax_cross_entropy(logits, labels)[1])


@pytest.mark.parametrize("case", [(1, 2), (3, 4), (5, 3)], ids=str)
def test_label_smoothing_finite_differences(case):
    logits, labels = make_logits(case, seed=23, scale=2.0)
    gc.gradcheck(lambda logits, labels: ops.softmax_cross_entropy(logits, labels, 0.2)[0],
                 lambda G, logits, labels: {"logits": ops.softmax_cross_entropy(logits, labels, 0.2)[1]},
                 dict(logits=logits, labels=labels))


def test_label_smoothing_finite_differences_reject_the_unsmoothed_gradient():
    logits, labels = make_logits((3, 4), seed=24)
    with pytest.raises(AssertionError, match="gradient of logits"):
        gc.gradcheck(lambda logits, labels: ops.softmax_cross_entropy(logits, labels, 0.2)[0],
                     lambda G, logits, labels: {"logits": ops.softmax_cross_entropy(logits, labels)[1]},
                     dict(logits=logits, labels=labels))


@pytest.mark.parametrize("s", [-0.1, 1.5, float("nan")])
def test_label_smoothing_out_of_range_is_a_value_error(s):
    logits, labels = make_logits((2, 3))
    with pytest.raises(ValueError, match=r"label smoothing must be in \[0, 1\]"):
        ops.softmax_cross_entropy(logits, labels, s)


def test_cross_entropy_loss_object_takes_label_smoothing():
    from pylenet.losses import CrossEntropyLoss
    logits, labels = make_logits((8, 10), seed=7)
    loss, d = CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    tloss, td = torch_smoothed_cross_entropy(logits, labels, 0.1)
    assert loss == pytest.approx(tloss, rel=1e-5)
    ref.assert_close(d, td, rtol=1e-5, atol=1e-7)
    for bad in (-0.5, 2, "0.1", True):
        with pytest.raises(ValueError, match="label_smoothing must be a number in"):
            CrossEntropyLoss(label_smoothing=bad)


# ---------------------------------------------------------------------------------------------
# mean squared error


@pytest.mark.parametrize("shape", [(1,), (1, 1), (3, 17), (16, 10), (2, 3, 4, 5), (1000,)], ids=str)
def test_mse_matches_reference_and_torch(shape):
    rng = np.random.default_rng(len(shape))
    pred = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    loss, d = ops.mse_loss(pred, target)
    assert type(loss) is float
    ref.assert_fresh_f32(d)
    assert d.shape == pred.shape
    rloss, rd = ref.mse_loss(pred, target)
    assert loss == pytest.approx(rloss, rel=1e-5)
    ref.assert_close(d, rd, rtol=1e-5, atol=1e-8)
    t = torch.tensor(pred, requires_grad=True)
    tl = F.mse_loss(t, torch.from_numpy(target))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-5)
    ref.assert_close(d, t.grad.numpy(), rtol=1e-5, atol=1e-8)
    ref.note_maxerr("mse_loss", [loss], [tl.item()])
    ref.note_maxerr("mse_loss", d, t.grad.numpy())


def test_mse_finite_differences():
    rng = np.random.default_rng(23)
    pred = rng.standard_normal((3, 4)).astype(np.float32)
    target = rng.standard_normal((3, 4)).astype(np.float32)
    gc.gradcheck(lambda pred, target: ops.mse_loss(pred, target)[0],
                 lambda G, pred, target: {"pred": ops.mse_loss(pred, target)[1]},
                 dict(pred=pred, target=target))
    with pytest.raises(AssertionError, match="gradient of pred"):
        gc.gradcheck(lambda pred, target: ops.mse_loss(pred, target)[0],
                     lambda G, pred, target: {"pred": ops.mse_loss(pred, target)[1] / 2},
                     dict(pred=pred, target=target))


def test_mse_nan_and_inf_like_torch():
    pred = np.array([[1.0, np.nan], [np.inf, 0.0]], np.float32)
    target = np.zeros((2, 2), np.float32)
    loss, d = ops.mse_loss(pred, target)
    t = torch.tensor(pred, requires_grad=True)
    tl = F.mse_loss(t, torch.from_numpy(target))
    tl.backward()
    assert np.isnan(loss) and np.isnan(tl.item())
    np.testing.assert_array_equal(d, t.grad.numpy())
