"""The matrices of the convolution lecture: a convolution written as a matrix product, both ways.

A convolution s = u * w is linear in the input u and linear in the kernel w, so it is a matrix
product either way round:

    s = W u   with W = conv_matrix(w, u.shape)    (banded, Toeplitz-like: ds/du = W)
    s = U w   with U = input_matrix(u, w.shape)   (im2col: ds/dw = U)

and the chain rule gives the backward pass: for an output gradient g, dL/du = W^T g and
dL/dw = U^T g. The 2-D functions follow the core's conv2d (pylenet.ops.conv2d_forward):
a cross-correlation (the kernel is not flipped), NCHW, zero padding, any stride, and the same
index layout, so that conv2d_forward(u[None], w)[0].ravel() == conv_matrix(w, u.shape) @ u.ravel().

The lecture's slides use the textbook convolution instead, in which the kernel is flipped
(s_i = sum_j w_j u_{i-j}); the 1-D functions do that by default (flip=True) and the
deep-learning cross-correlation with flip=False. The two differ only by reversing the kernel.

Max pooling is linear once its argmax is known: y = P x with P = pool_matrix(argmax, x.shape),
a 0/1 matrix with one 1 per row, and its backward is dx = P^T dy.

Everything here is plain numpy, written for reading rather than speed; sparse=True returns
scipy.sparse CSR matrices (scipy is imported only then).
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "conv_output_size", "conv_matrix", "input_matrix", "conv_input_gradient",
    "conv_weight_gradient", "check_conv_gradients", "conv1d_matrix", "conv1d_input_matrix",
    "pool_matrix",
]


# ------------------------------------------------------------------------------------ checks

def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _pair(name: str, value) -> tuple[int, int]:
    """An int or a pair of ints >= 1 as (rows, columns)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (R, S), got {value!r}")
        return _int(name, value[0], 1), _int(name, value[1], 1)
    k = _int(name, value, 1)
    return k, k


def _chw(name: str, shape) -> tuple[int, int, int]:
    """(C, H, W) from a shape (C, H, W) or (H, W) (one channel)."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be a shape (C, H, W) or (H, W), got {shape!r}") from None
    if len(shape) == 2:
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(f"{name} must be (C, H, W) or (H, W), got {shape}")
    return tuple(_int(f"{name} entries", s, 1) for s in shape)


def _float_array(name: str, value, ndims: tuple) -> np.ndarray:
    """value as float64 if it is float64, else float32; ndim must be in ndims."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {a.dtype}")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {a.shape}")
    return a.astype(np.float64 if a.dtype == np.float64 else np.float32, copy=False)


def conv_output_size(n: int, k: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one axis: (n + 2 padding - k) // stride + 1."""
    return (n + 2 * padding - k) // stride + 1


def _out_sizes(H, W, R, S, stride, padding) -> tuple[int, int]:
    if H + 2 * padding < R or W + 2 * padding < S:
        raise ValueError(f"the kernel {R}x{S} is larger than the input {H}x{W} padded by {padding}")
    return conv_output_size(H, R, stride, padding), conv_output_size(W, S, stride, padding)


def _finish(rows, cols, vals, shape, dtype, sparse: bool):
    """A dense or CSR matrix of `shape` with vals at (rows, cols); every position occurs once."""
    if sparse:
        from scipy.sparse import csr_matrix
        return csr_matrix((vals.astype(dtype, copy=False), (rows, cols)), shape=shape)
    out = np.zeros(shape, dtype)
    out[rows, cols] = vals
    return out


# ------------------------------------------------------------------------------- 2-D: W and U

def _windows(C, H, W, R, S, P, Q, stride, padding):
    """Index grids over (p, q, c, r, s): the input pixel (ih, iw) under kernel tap (r, s) at
    output (p, q), and whether it lies inside the unpadded input."""
    p, q, c, r, s = np.ix_(np.arange(P), np.arange(Q), np.arange(C), np.arange(R), np.arange(S))
    ih = p * stride - padding + r
    iw = q * stride - padding + s
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    return p, q, c, r, s, ih, iw, inside


def conv_matrix(w, input_shape, stride: int = 1, padding: int = 0, sparse: bool = False):
    """W (K*P*Q, C*H*W) with conv2d_forward(u[None], w)[0].ravel() == W @ u.ravel() for u of
    input_shape (C, H, W): row k*P*Q + p*Q + q holds the kernel w[k] laid over the input where
    output pixel (k, p, q) reads it (cross-correlation, as the core computes it). It is also
    ds/du, and the input gradient is W.T @ g. w (K, C, R, S); float64 stays float64, else float32."""
    w = _float_array("w", w, (4,))
    K, Cw, R, S = w.shape
    C, H, Wd = _chw("input_shape", input_shape)
    if Cw != C:
        raise ValueError(f"w has {Cw} input channels (shape {w.shape}) but input_shape {input_shape} has {C}")
    stride, padding = _int("stride", stride, 1), _int("padding", padding, 0)
    P, Q = _out_sizes(H, Wd, R, S, stride, padding)
    p, q, c, r, s, ih, iw, inside = _windows(C, H, Wd, R, S, P, Q, stride, padding)
    k = np.arange(K).reshape((K,) + (1,) * 5)
    shape6 = (K, P, Q, C, R, S)
    rows = np.broadcast_to(k * (P * Q) + p * Q + q, shape6)
    cols = np.broadcast_to(c * (H * Wd) + ih * Wd + iw, shape6)
    vals = np.broadcast_to(w[:, None, None], shape6)   # w[k, c, r, s] at every (p, q)
    mask = np.broadcast_to(inside, shape6)             # taps on the zero padding read nothing
    return _finish(rows[mask], cols[mask], vals[mask], (K * P * Q, C * H * Wd), w.dtype, sparse)


def input_matrix(u, kernel_size, stride: int = 1, padding: int = 0, sparse: bool = False):
    """U (P*Q, C*R*S) with conv2d_forward(u[None], w)[0, k].ravel() == U @ w[k].ravel() for
    every output channel k: row p*Q + q is the (zero-padded) input patch that output pixel
    (p, q) reads, in w[k]'s (c, r, s) order. This is im2col; it is ds/dw, and the kernel
    gradient of channel k is U.T @ g[k].ravel(). u (C, H, W) or (H, W); kernel_size R or (R, S)."""
    u = _float_array("u", u, (2, 3))
    if u.ndim == 2:
        u = u[None]
    C, H, Wd = u.shape
    R, S = _pair("kernel_size", kernel_size)
    stride, padding = _int("stride", stride, 1), _int("padding", padding, 0)
    P, Q = _out_sizes(H, Wd, R, S, stride, padding)
    p, q, c, r, s, ih, iw, inside = _windows(C, H, Wd, R, S, P, Q, stride, padding)
    shape5 = (P, Q, C, R, S)
    rows = np.broadcast_to(p * Q + q, shape5)
    cols = np.broadcast_to(c * (R * S) + r * S + s, shape5)
    mask = np.broadcast_to(inside, shape5)
    vals = u[np.broadcast_to(c, shape5)[mask], np.broadcast_to(ih, shape5)[mask],
             np.broadcast_to(iw, shape5)[mask]]
    return _finish(rows[mask], cols[mask], vals, (P * Q, C * R * S), u.dtype, sparse)


# ----------------------------------------------------------------------- the gradient identities

def conv_input_gradient(w, g, input_shape, stride: int = 1, padding: int = 0) -> np.ndarray:
    """dL/du (C, H, W) = W^T g, W = conv_matrix(w, input_shape): the input gradient as the
    lecture writes it, for an output gradient g (K, P, Q). Equals the core's conv2d_backward dx."""
    W = conv_matrix(w, input_shape, stride, padding)
    g = _float_array("g", g, (3,))
    if g.size != W.shape[0]:
        raise ValueError(f"g must have the output's {W.shape[0]} values (K, P, Q), got shape {g.shape}")
    return (W.T @ g.ravel().astype(W.dtype)).reshape(_chw("input_shape", input_shape))


def conv_weight_gradient(u, g, kernel_size, stride: int = 1, padding: int = 0) -> np.ndarray:
    """dL/dw (K, C, R, S): for each output channel k, U^T g[k], U = input_matrix(u, kernel_size):
    the kernel gradient as the lecture writes it. Equals the core's conv2d_backward dw."""
    U = input_matrix(u, kernel_size, stride, padding)
    g = _float_array("g", g, (3,))
    if g.shape[1] * g.shape[2] != U.shape[0]:
        raise ValueError(f"g must be (K, P, Q) with P*Q = {U.shape[0]} output pixels, got shape {g.shape}")
    u = np.asarray(u)
    C = 1 if u.ndim == 2 else u.shape[0]
    R, S = _pair("kernel_size", kernel_size)
    dw = U.T @ g.reshape(g.shape[0], -1).T.astype(U.dtype)   # (C*R*S, K): column k is U^T g[k]
    return dw.T.reshape(g.shape[0], C, R, S)


def check_conv_gradients(u, w, g, stride: int = 1, padding: int = 0) -> dict:
    """The lecture's identities against the core (pylenet.ops), for one input u (C, H, W),
    kernels w (K, C, R, S) and output gradient g (K, P, Q): the largest absolute difference
    of each pair, as {"forward": W u vs conv2d_forward, "forward_U": U w[k] vs conv2d_forward,
    "dx": W^T g vs conv2d_backward's dx, "dw": U^T g vs its dw}, in float64 matrices."""
    from pylenet import ops

    # The core computes in float32: the matrices get the same float32 values, held in float64.
    u, w, g = (np.asarray(a, np.float32).astype(np.float64) for a in (u, w, g))
    R, S = w.shape[2:]
    u32, w32 = u.astype(np.float32)[None], w.astype(np.float32)
    y = ops.conv2d_forward(u32, w32, None, stride, padding)[0]
    dx, dw, _ = ops.conv2d_backward(u32, w32, g.astype(np.float32)[None], stride, padding)
    W = conv_matrix(w, u.shape, stride, padding)
    U = input_matrix(u, (R, S), stride, padding)
    by_U = (U @ w.reshape(w.shape[0], -1).T).T             # (K, P*Q): row k is U w[k]
    return {
        "forward": float(np.abs(W @ u.ravel() - y.ravel()).max()),
        "forward_U": float(np.abs(by_U.ravel() - y.ravel()).max()),
        "dx": float(np.abs(conv_input_gradient(w, g, u.shape, stride, padding) - dx[0]).max()),
        "dw": float(np.abs(conv_weight_gradient(u, g, (R, S), stride, padding) - dw).max()),
    }


# ------------------------------------------------------------------------- the 1-D example

def _kernel1d(w):
    """A 1-D kernel as a list (numbers, or symbols such as the slides' letters) and whether it is numeric."""
    if isinstance(w, (str, bytes)):
        raise TypeError("w must be a sequence (e.g. ['z', 'y', 'x'] or an array), not one string")
    items = list(np.asarray(w).ravel()) if isinstance(w, np.ndarray) else list(w)
    if not items:
        raise ValueError("w must hold at least one value")
    numeric = all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in items)
    return items, numeric


def _band(taps: list, numeric: bool, n_rows: int, n_cols: int, offset):
    """A matrix whose entry (i, j) is taps[offset(i, j)] when that index is valid, else 0."""
    dtype = np.float64 if numeric else object
    out = np.zeros((n_rows, n_cols), dtype)
    for i in range(n_rows):
        for j in range(n_cols):
            t = offset(i, j)
            if t is not None and 0 <= t < len(taps):
                out[i, j] = taps[t]
    return out


def conv1d_matrix(w, n: int, padding: int = 0, stride: int = 1, flip: bool = True) -> np.ndarray:
    """The banded matrix W of the lecture's 1-D example: s = W u for u of length n, zero-padded
    by `padding` on both sides. flip=True (the default, the slides' textbook convolution)
    flips the kernel, s_i = sum_j w_j u_{i-j}: for w = [z, y, x] and padding 1, row i reads
    x u_{i-1} + y u_i + z u_{i+1}. flip=False is the deep-learning cross-correlation (the
    core's conv2d on a 1 x n image), s_i = sum_j w_j u_{i+j}. w may hold numbers (a float64
    matrix) or symbols such as strings (an object matrix with 0 off the band)."""
    taps, numeric = _kernel1d(w)
    n = _int("n", n, 1)
    padding, stride = _int("padding", padding, 0), _int("stride", stride, 1)
    k = len(taps)
    if n + 2 * padding < k:
        raise ValueError(f"the kernel ({k} taps) is longer than the input ({n}) padded by {padding}")
    m = conv_output_size(n, k, stride, padding)
    # Output i reads padded positions i*stride .. i*stride + k-1, i.e. input j at tap
    # j + padding - i*stride; flipping the kernel reads the taps from the other end.
    tap = (lambda i, j: k - 1 - (j + padding - i * stride)) if flip else (lambda i, j: j + padding - i * stride)
    return _band(taps, numeric, m, n, tap)


def conv1d_input_matrix(u, kernel_size: int, padding: int = 0, stride: int = 1,
                        flip: bool = True) -> np.ndarray:
    """U of the 1-D example: s = U w for kernels w of kernel_size taps, the same s as
    conv1d_matrix(w, len(u), padding, stride, flip) @ u. With flip=True row i is the input
    window read backwards (w_0 meets the rightmost pixel), with flip=False forwards (im2col).
    u may hold numbers or symbols (strings give an object matrix with 0 in the padding)."""
    items, numeric = _kernel1d(u)
    k = _int("kernel_size", kernel_size, 1)
    padding, stride = _int("padding", padding, 0), _int("stride", stride, 1)
    n = len(items)
    if n + 2 * padding < k:
        raise ValueError(f"the kernel ({k} taps) is longer than the input ({n}) padded by {padding}")
    m = conv_output_size(n, k, stride, padding)
    pos = (lambda i, t: i * stride + (k - 1 - t) - padding) if flip else (lambda i, t: i * stride + t - padding)
    return _band(items, numeric, m, k, pos)


# -------------------------------------------------------------------------------- max pooling

def pool_matrix(argmax, input_shape, sparse: bool = False):
    """P (C*P*Q, C*H*W), the 0/1 matrix of a max-pool whose winners are `argmax`: y = P x and
    the backward pass dx = P^T dy routes each output gradient to its window's maximum.
    argmax (C, P, Q) holds flat indices ih*W + iw into each H*W plane, as
    pylenet.ops.maxpool2d_forward returns them (take [0] of its (N, C, P, Q) result);
    input_shape is (C, H, W)."""
    a = np.asarray(argmax)
    if a.dtype.kind not in "iu":
        raise TypeError(f"argmax must hold integer indices, got dtype {a.dtype}")
    if a.ndim != 3:
        raise ValueError(f"argmax must be (C, P, Q) (one sample of maxpool2d_forward's argmax), got shape {a.shape}")
    C, H, W = _chw("input_shape", input_shape)
    if a.shape[0] != C:
        raise ValueError(f"argmax has {a.shape[0]} channels but input_shape {tuple(input_shape)} has {C}")
    if a.size and (a.min() < 0 or a.max() >= H * W):
        raise ValueError(f"argmax values must lie in [0, {H * W}) (flat indices into a {H}x{W} plane), "
                         f"got {a.min()}..{a.max()}")
    rows = np.arange(a.size)
    cols = (np.arange(C)[:, None, None] * (H * W) + a).ravel()
    return _finish(rows, cols, np.ones(a.size), (a.size, C * H * W), np.float32, sparse)
