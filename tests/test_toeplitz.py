"""pylenet.toeplitz, the lecture's matrices, against the core: W u and U w are the convolution,
W^T g and U^T g its gradients, P routes max-pooling; random shapes, strides 1-3, padding 0-2,
1-4 channels. Shapes are never square (H != W, R != S), so a transposed index or an offset
padding shows up as a wrong matrix rather than a lucky one."""
import itertools

import numpy as np
import pytest

from pylenet import ops
from pylenet.toeplitz import (check_conv_gradients, conv1d_input_matrix, conv1d_matrix,
                              conv_input_gradient, conv_matrix, conv_output_size,
                              conv_weight_gradient, input_matrix, pool_matrix)

# Every (stride, padding, channels) of the issue, each with its own random non-square shape.
CASES = list(itertools.product((1, 2, 3), (0, 1, 2), (1, 2, 3, 4)))


def random_case(stride, padding, channels, seed):
    """(u (C, H, W), w (K, C, R, S), g (K, P, Q)) float32, with H != W and R != S."""
    rng = np.random.default_rng(seed)
    while True:
        R, S = rng.integers(1, 5, size=2)
        H, W = rng.integers(max(R, S), 10, size=2)
        if R != S and H != W and conv_output_size(H, R, stride, padding) >= 1 \
                and conv_output_size(W, S, stride, padding) >= 1:
            break
    K = int(rng.integers(1, 4))
    u = rng.standard_normal((channels, H, W)).astype(np.float32)
    w = rng.standard_normal((K, channels, R, S)).astype(np.float32)
    P, Q = conv_output_size(H, R, stride, padding), conv_output_size(W, S, stride, padding)
    g = rng.standard_normal((K, P, Q)).astype(np.float32)
    return u, w, g


def core_forward(u, w, stride, padding):
    return ops.conv2d_forward(u[None], w, None, stride, padding)[0]


def close(a, b, scale):
    """float64 matrix products against the core's float32 sums."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * max(1.0, scale))


@pytest.mark.parametrize("stride,padding,channels", CASES)
def test_W_is_the_convolution_column_by_column(stride, padding, channels):
    """Column j of W is the core's output for the one-hot input e_j (exactly: one product with
    1.0 per output pixel), so every entry of W is checked, with no tolerance."""
    u, w, _ = random_case(stride, padding, channels, seed=100 + stride * 10 + padding * 3 + channels)
    W = conv_matrix(w, u.shape, stride, padding)
    eye = np.eye(u.size, dtype=np.float32).reshape((u.size,) + u.shape)
    responses = ops.conv2d_forward(eye, w, None, stride, padding).reshape(u.size, -1)
    assert W.shape == (responses.shape[1], u.size) and W.dtype == np.float32
    assert np.array_equal(W, responses.T)


@pytest.mark.parametrize("stride,padding,channels", CASES)
def test_U_is_the_convolution_column_by_column(stride, padding, channels):
    """Column (c, r, s) of U is the core's output for a one-hot kernel, exactly."""
    u, w, _ = random_case(stride, padding, channels, seed=200 + stride * 10 + padding * 3 + channels)
    R, S = w.shape[2:]
    U = input_matrix(u, (R, S), stride, padding)
    n = channels * R * S
    kernels = np.eye(n, dtype=np.float32).reshape(n, channels, R, S)
    responses = core_forward(u, kernels, stride, padding).reshape(n, -1)
    assert U.shape == (responses.shape[1], n)
    assert np.array_equal(U, responses.T)


@pytest.mark.parametrize("stride,padding,channels", CASES)
def test_products_and_gradients_match_the_core(stride, padding, channels):
    """W u and U w[k] are conv2d_forward; W^T g and U^T g[k] are conv2d_backward's dx and dw."""
    u, w, g = random_case(stride, padding, channels, seed=300 + stride * 10 + padding * 3 + channels)
    K, _, R, S = w.shape
    y = core_forward(u, w, stride, padding)
    dx, dw, _ = ops.conv2d_backward(u[None], w, g[None], stride, padding)
    W = conv_matrix(w.astype(np.float64), u.shape, stride, padding)
    U = input_matrix(u.astype(np.float64), (R, S), stride, padding)
    scale = float(np.abs(y).max())
    close(W @ u.ravel(), y.ravel(), scale)
    for k in range(K):
        close(U @ w[k].ravel(), y[k].ravel(), scale)
    close((W.T @ g.ravel()).reshape(u.shape), dx[0], float(np.abs(dx).max()))
    close(np.stack([U.T @ g[k].ravel() for k in range(K)]).reshape(w.shape), dw, float(np.abs(dw).max()))
    # The same identities through the module's own functions.
    close(conv_input_gradient(w, g, u.shape, stride, padding), dx[0], float(np.abs(dx).max()))
    close(conv_weight_gradient(u, g, (R, S), stride, padding), dw, float(np.abs(dw).max()))
    errors = check_conv_gradients(u, w, g, stride, padding)
    assert set(errors) == {"forward", "forward_U", "dx", "dw"}
    assert max(errors.values()) < 1e-4 * max(1.0, scale), errors


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (3, 2)])
def test_sparse_matrices_equal_the_dense_ones(stride, padding):
    pytest.importorskip("scipy")
    from scipy.sparse import csr_matrix

    u, w, _ = random_case(stride, padding, 3, seed=400 + stride)
    W = conv_matrix(w, u.shape, stride, padding, sparse=True)
    U = input_matrix(u, w.shape[2:], stride, padding, sparse=True)
    assert isinstance(W, csr_matrix) and isinstance(U, csr_matrix)
    assert np.array_equal(W.toarray(), conv_matrix(w, u.shape, stride, padding))
    assert np.array_equal(U.toarray(), input_matrix(u, w.shape[2:], stride, padding))
    # Banded: each row holds at most C*R*S kernel values.
    assert W.nnz <= W.shape[0] * w[0].size


def test_W_is_banded_toeplitz_for_one_channel():
    """One channel, stride 1, no padding: shifting the output pixel one column shifts the row
    of W one column (the Toeplitz structure the lecture draws)."""
    w = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
    W = conv_matrix(w, (1, 5, 7))
    P, Q = 4, 5
    for p, q in itertools.product(range(P), range(Q - 1)):
        assert np.array_equal(W[p * Q + q + 1], np.roll(W[p * Q + q], 1))
    assert np.array_equal(W[0, :3], [1, 2, 3]) and np.array_equal(W[0, 7:10], [4, 5, 6])
    assert np.count_nonzero(W[0]) == 6


def test_float64_kernels_give_float64_matrices():
    w = np.ones((1, 1, 2, 2))
    assert conv_matrix(w, (1, 3, 3)).dtype == np.float64
    assert conv_matrix(w.astype(np.float32), (3, 3)).dtype == np.float32  # (H, W): one channel
    assert input_matrix(np.ones((3, 3)), 2).dtype == np.float64


# ------------------------------------------------------------------------------------ 1-D

def test_conv1d_matrix_is_the_slides_band():
    """w = [z, y, x], u = [a, ..., f], zero padding 1: row i reads x u_{i-1} + y u_i + z u_{i+1}."""
    W = conv1d_matrix(["z", "y", "x"], 6, padding=1)
    expected = [["y", "z", 0, 0, 0, 0],
                ["x", "y", "z", 0, 0, 0],
                [0, "x", "y", "z", 0, 0],
                [0, 0, "x", "y", "z", 0],
                [0, 0, 0, "x", "y", "z"],
                [0, 0, 0, 0, "x", "y"]]
    assert W.tolist() == expected
    # Without the flip (cross-correlation) the band reads the other way.
    assert conv1d_matrix(["z", "y", "x"], 6, padding=1, flip=False)[1].tolist() == ["z", "y", "x", 0, 0, 0]
    U = conv1d_input_matrix(list("abcdef"), 3, padding=1)
    assert U.tolist()[0] == ["b", "a", 0] and U.tolist()[1] == ["c", "b", "a"] and U.tolist()[5] == [0, "f", "e"]
    # W u and U w give the same symbols: s_1 = x a + y b + z c.
    u, w = list("abcdef"), ["z", "y", "x"]
    for i in range(6):
        by_W = sorted((W[i, j], u[j]) for j in range(6) if W[i, j] != 0)
        by_U = sorted((w[t], U[i, t]) for t in range(3) if U[i, t] != 0)
        assert by_W == by_U


@pytest.mark.parametrize("n,k,padding,stride", [(6, 3, 1, 1), (6, 3, 0, 1), (7, 4, 2, 1), (9, 3, 1, 2), (5, 5, 4, 3)])
def test_conv1d_matrices_against_numpy_and_the_core(n, k, padding, stride):
    rng = np.random.default_rng(n * 100 + k * 10 + padding)
    u, w = rng.standard_normal(n), rng.standard_normal(k)
    flipped = conv1d_matrix(w, n, padding, stride) @ u
    # np.convolve is the textbook convolution; its "full" output is padding k-1.
    full = np.convolve(u, w, "full")
    start = k - 1 - padding
    np.testing.assert_allclose(flipped, full[start:start + stride * len(flipped):stride], atol=1e-12)
    np.testing.assert_allclose(conv1d_input_matrix(u, k, padding, stride) @ w, flipped, atol=1e-12)
    # flip=False is the core's conv2d on a 1 x n image (zero-padded here: the core would pad
    # the single row's top and bottom too).
    corr = conv1d_matrix(w, n, padding, stride, flip=False) @ u
    padded = np.pad(u, padding).astype(np.float32).reshape(1, 1, 1, -1)
    y = ops.conv2d_forward(padded, w.astype(np.float32).reshape(1, 1, 1, k), None, stride, 0)
    np.testing.assert_allclose(corr, y.ravel(), atol=1e-5)
    np.testing.assert_allclose(conv1d_input_matrix(u, k, padding, stride, flip=False) @ w, corr, atol=1e-12)
    np.testing.assert_allclose(conv1d_matrix(w[::-1], n, padding, stride, flip=False), conv1d_matrix(w, n, padding, stride))


# ---------------------------------------------------------------------------------- pooling

@pytest.mark.parametrize("channels,H,W,kernel,stride", [(1, 4, 6, 2, 2), (3, 7, 5, 2, 2), (2, 9, 6, 3, 2),
                                                          (4, 6, 7, 2, 1), (2, 8, 5, 3, 3)])
def test_pool_matrix_routes_the_gradient_to_the_argmax(channels, H, W, kernel, stride):
    rng = np.random.default_rng(channels * 31 + H)
    x = rng.standard_normal((1, channels, H, W)).astype(np.float32)
    y, argmax = ops.maxpool2d_forward(x, kernel, stride)
    P = pool_matrix(argmax[0], x.shape[1:])
    assert P.shape == (y.size, x.size) and set(np.unique(P)) == {0.0, 1.0}
    assert np.array_equal(P.sum(axis=1), np.ones(y.size))      # one winner per window
    assert np.array_equal(P @ x.ravel(), y.ravel())            # y = P x
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = ops.maxpool2d_backward(dy, argmax, x.shape)
    np.testing.assert_allclose(P.T @ dy.ravel(), dx.ravel(), atol=1e-6)  # dx = P^T dy
    pytest.importorskip("scipy")
    assert np.array_equal(pool_matrix(argmax[0], x.shape[1:], sparse=True).toarray(), P)


# ------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("call,error,match", [
    (lambda: conv_matrix(np.ones((1, 2, 3, 3)), (3, 5, 5)), ValueError, "2 input channels"),
    (lambda: conv_matrix(np.ones((2, 3, 3)), (1, 5, 5)), ValueError, "4 dimensions"),
    (lambda: conv_matrix(np.ones((1, 1, 3, 3)), (1, 5, 5), stride=0), ValueError, "stride"),
    (lambda: conv_matrix(np.ones((1, 1, 3, 3)), (1, 5, 5), padding=-1), ValueError, "padding"),
    (lambda: conv_matrix(np.ones((1, 1, 7, 3)), (1, 5, 5)), ValueError, "larger than the input"),
    (lambda: conv_matrix(np.array([["a"]]), (1, 5)), TypeError, "numbers"),
    (lambda: conv_matrix(np.ones((1, 1, 3, 3)), (1, 1, 5, 5)), ValueError, r"\(C, H, W\)"),
    (lambda: input_matrix(np.ones((2, 4, 4)), (2, 2, 2)), ValueError, "kernel_size"),
    (lambda: input_matrix(np.ones(4), 2), ValueError, "dimensions"),
    (lambda: conv_input_gradient(np.ones((1, 1, 2, 2)), np.ones((1, 3, 3)), (1, 5, 5)), ValueError, "16 values"),
    (lambda: conv1d_matrix("zyx", 6), TypeError, "not one string"),
    (lambda: conv1d_matrix([1, 2, 3], 1), ValueError, "longer than the input"),
    (lambda: conv1d_matrix([], 4), ValueError, "at least one"),
    (lambda: pool_matrix(np.zeros((1, 2, 2), np.float32), (1, 4, 4)), TypeError, "integer"),
    (lambda: pool_matrix(np.full((1, 2, 2), 16, np.int32), (1, 4, 4)), ValueError, r"\[0, 16\)"),
    (lambda: pool_matrix(np.zeros((2, 2, 2), np.int32), (1, 4, 4)), ValueError, "2 channels"),
    (lambda: pool_matrix(np.zeros((1, 1, 2, 2), np.int32), (1, 4, 4)), ValueError, r"\(C, P, Q\)"),
])
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
