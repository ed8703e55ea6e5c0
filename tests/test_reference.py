"""Self-tests of the test oracles: the float64 reference against PyTorch (float64), and the
finite-difference checker against correct and deliberately wrong gradients. No pylenet needed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcheck as gc
import reference as ref

CONV_CASES = [
    # N, C, H, W, K, R, S, stride, padding
    (1, 1, 1, 1, 1, 1, 1, 1, 0),
    (2, 3, 17, 17, 4, 5, 5, 1, 2),
    (1, 2, 7, 5, 3, 3, 2, 2, 1),
    (3, 1, 2, 2, 2, 5, 5, 1, 2),  # kernel larger than the input, fits the padded input
    (1, 2, 9, 4, 1, 1, 3, 3, 2),  # padding > kernel
    (2, 1, 8, 8, 2, 2, 2, 3, 0),  # stride > kernel: untouched pixels
]


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64)).requires_grad_(True)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_reference_matches_torch(case):
    N, C, H, W, K, R, S, stride, padding = case
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((N, C, H, W)), rng.standard_normal((K, C, R, S)), rng.standard_normal(K)
    tx, tw, tb = t64(x), t64(w), t64(b)
    ty = F.conv2d(tx, tw, tb, stride=stride, padding=padding)
    y = ref.conv2d_forward(x, w, b, stride, padding)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = ref.conv2d_backward(x, w, dy, stride, padding)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.conv2d_backward_dx_full(w, dy, x.shape, stride, padding), dx,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N, C, H, W, kernel, stride", [
    (1, 1, 1, 1, 1, 1), (2, 3, 6, 6, 2, 2), (1, 2, 7, 5, 3, 2), (2, 1, 5, 8, 2, 3), (1, 1, 6, 6, 3, 1)])
def test_pool_reference_matches_torch(N, C, H, W, kernel, stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, C, H, W))
    tx = t64(x)
    ty, tidx = F.max_pool2d(tx, kernel, stride, return_indices=True)
    y, argmax = ref.maxpool2d_forward(x, kernel, stride)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(argmax, tidx.numpy())
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ref.maxpool2d_backward(dy, argmax, x.shape), tx.grad.numpy(), atol=1e-14)

    tx = t64(x)
    ty = F.avg_pool2d(tx, kernel, stride)
    np.testing.assert_allclose(ref.avgpool2d_forward(x, kernel, stride), ty.detach().numpy(), rtol=1e-12)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ref.avgpool2d_backward(dy, x.shape, kernel, stride), tx.grad.numpy(),
                               rtol=1e-12, atol=1e-14)


def test_maxpool_reference_ties_take_first():
    y, argmax = ref.maxpool2d_forward(np.ones((1, 1, 4, 6)), 2, 2)
    np.testing.assert_array_equal(argmax[0, 0], [[0, 2, 4], [12, 14, 16]])
    np.testing.assert_array_equal(y, 1.0)


def test_linear_reference_matches_torch():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((3, 7)), rng.standard_normal(3)
    tx, tw, tb = t64(x), t64(w), t64(b)
    ty = F.linear(tx, tw, tb)
    np.testing.assert_allclose(ref.linear_forward(x, w, b), ty.detach().numpy(), rtol=1e-12)
    dy = rng.standard_normal((5, 3))
    ty.backward(torch.from_numpy(dy))
    for got, want in zip(ref.linear_backward(x, w, dy), (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, tfn", [("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                                       ("relu", torch.relu)])
def test_activation_reference_matches_torch(name, tfn):
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(20) * 5, [0.0, -0.0, 50.0, -50.0, 800.0, -800.0,
                                                      np.inf, -np.inf, np.nan]])
    tx = t64(x)
    ty = tfn(tx)
    y = getattr(ref, f"{name}_forward")(x)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14, atol=1e-300)
    dy = rng.standard_normal(x.shape)
    ty.backward(torch.from_numpy(dy))
    arg = x if name == "relu" else y
    dx = getattr(ref, f"{name}_backward")(arg, dy)
    finite = np.isfinite(x)  # torch's relu backward passes dy through at NaN; not part of the spec
    np.testing.assert_allclose(dx[finite], tx.grad.numpy()[finite], rtol=1e-12, atol=1e-15)


def test_losses_reference_match_torch():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6, 4)) * 3
    logits[0] += 1e4  # the row max is subtracted
    labels = rng.integers(0, 4, 6)
    np.testing.assert_allclose(ref.softmax(logits), torch.softmax(torch.from_numpy(logits), 1).numpy(),
                               rtol=1e-12)
    t = t64(logits)
    tl = F.cross_entropy(t, torch.from_numpy(labels))
    tl.backward()
    loss, d = ref.softmax_cross_entropy(logits, labels)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-10, atol=1e-15)

    pred, target = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    t = t64(pred)
    tl = F.mse_loss(t, torch.from_numpy(target))
    tl.backward()
    loss, d = ref.mse_loss(pred, target)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# the finite-difference checker, on float32 stand-ins built from the reference


def conv_f32(x, w, b, stride=1, padding=1):
    return ref.conv2d_forward(x, w, b, stride, padding).astype(np.float32)


def conv_grads(G, x, w, b, stride=1, padding=1):
    dx, dw, db = ref.conv2d_backward(x, w, G, stride, padding)
    return {"x": dx, "w": dw, "b": db}


def conv_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=rng.standard_normal((2, 2, 5, 4)).astype(np.float32),
                w=rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
                b=rng.standard_normal(3).astype(np.float32), stride=2)


def test_gradcheck_accepts_correct_conv_gradient():
    inputs = conv_inputs()
    before = {k: np.copy(v) for k, v in inputs.items()}
    errors = gc.gradcheck(conv_f32, conv_grads, inputs)
    assert max(errors.values()) < gc.TOL / 10, errors  # a wide margin for correct code
    for k in before:
        np.testing.assert_array_equal(inputs[k], before[k])  # the checker perturbs copies


@pytest.mark.parametrize("breakage", [
    lambda g: {**g, "w": 1.01 * g["w"]},                         # 1% too large
    lambda g: {**g, "w": g["w"].transpose(0, 1, 3, 2)},          # kernel gradient transposed
    lambda g: {**g, "w": g["w"][:, :, ::-1, ::-1]},              # kernel gradient flipped
    lambda g: {**g, "x": 0.99 * g["x"]},                         # 1% too small
    lambda g: {**g, "b": g["b"] / 2},                            # a bias term missing
    lambda g: {**g, "x": np.roll(g["x"], 1, axis=3)},            # off by one pixel
])
def test_gradcheck_rejects_wrong_conv_gradient(breakage):
    with pytest.raises(AssertionError, match="gradient of"):
        gc.gradcheck(conv_f32, lambda G, **kw: breakage(conv_grads(G, **kw)), conv_inputs())


def test_gradcheck_handles_curved_and_scalar_ops():
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((3, 4)) * 2).astype(np.float32)
    errors = gc.gradcheck(lambda x: ref.tanh_forward(x).astype(np.float32),
                          lambda G, x: {"x": ref.tanh_backward(ref.tanh_forward(x), G)}, {"x": x})
    assert errors["x"] < gc.TOL / 4
    labels = rng.integers(0, 4, 3)
    errors = gc.gradcheck(lambda logits, labels: np.float32(ref.softmax_cross_entropy(logits, labels)[0]),
                          lambda G, logits, labels: {"logits": ref.softmax_cross_entropy(logits, labels)[1]},
                          {"logits": x, "labels": labels})
    assert errors["logits"] < gc.TOL / 4
    with pytest.raises(AssertionError):
        gc.gradcheck(lambda x: ref.tanh_forward(x).astype(np.float32),
                     lambda G, x: {"x": 1.01 * ref.tanh_backward(ref.tanh_forward(x), G)}, {"x": x})


def test_separated_values_are_far_from_kinks():
    v = np.sort(gc.separated_values(np.random.default_rng(0), (3, 7)).ravel())
    assert np.diff(v).min() > 2 * gc.EPS and np.abs(v).min() > gc.EPS
