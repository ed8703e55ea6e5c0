"""Float64 numpy reference implementations of every pylenet op, plus the comparison helpers and
the MAXERR log that the op tests share. Never imported by the package.

Dimension letters (as in core/): N batch, C input channels, H W input height and width,
K output channels, R S kernel height and width, P Q output height and width, I O linear
input and output features. Activations are NCHW, conv weights (K, C, R, S), bias (K,).

The reference is written from the math, not from the core's algorithm: convolution is a sum of
shifted windows of an explicitly zero-padded input (correlation, like PyTorch); the input
gradient is the scatter of W^T dy back into the padded input (and, independently, the "full"
correlation of the stride-dilated dy with the flipped kernel, see conv2d_backward_dx_full);
the weight gradient correlates the padded input with dy.

MAXERR (largest absolute error against PyTorch, per op): every op test that compares pylenet with
torch.nn.functional calls note_maxerr(op, got, want). When a test module finishes, the autouse
fixture maxerr_report prints one line per op it touched,

    MAXERR <op> <value>

(visible with `pytest -s tests/test_*.py`), and the whole table of this pytest process is written
as JSON {op: value} to $PYLENET_MAXERR_JSON, by default <tempdir>/pylenet_maxerr.json.
"""
import json
import os
import tempfile

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# helpers


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def out_size(size, kernel, stride, padding=0):
    """Output length along one axis: floor((size + 2 * padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def pad_nchw(x, padding):
    """x (N, C, H, W) -> (N, C, H + 2 padding, W + 2 padding) with zeros around each plane."""
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def _taps(r, s, stride, P, Q):
    """Index of xp[:, :, p * stride + r, q * stride + s] over all p < P, q < Q."""
    return (slice(None), slice(None),
            slice(r, r + stride * (P - 1) + 1, stride),
            slice(s, s + stride * (Q - 1) + 1, stride))


# ---------------------------------------------------------------------------------------------
# conv2d


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """x (N, C, H, W), w (K, C, R, S), b (K,) or None -> y (N, K, P, Q) in float64.

    y[n, k, p, q] = b[k] + sum_{c, r, s} xp[n, c, p * stride + r, q * stride + s] * w[k, c, r, s]
    where xp is x zero-padded by `padding` on every side.
    """
    x, w = _f64(x), _f64(w)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = out_size(H, R, stride, padding), out_size(W, S, stride, padding)
    xp = pad_nchw(x, padding)
    y = np.zeros((N, K, P, Q))
    for r in range(R):
        for s in range(S):
            y += np.einsum("ncpq,kc->nkpq", xp[_taps(r, s, stride, P, Q)], w[:, :, r, s])
    if b is not None:
        y += _f64(b)[None, :, None, None]
    return y


def conv2d_backward(x, w, dy, stride=1, padding=0):
    """x (N, C, H, W), w (K, C, R, S), dy (N, K, P, Q) -> (dx, dw, db) in float64.

    From y[n,k,p,q] = b[k] + sum_{c,r,s} xp[n,c,p*stride+r,q*stride+s] * w[k,c,r,s]:
      dxp[n,c,p*stride+r,q*stride+s] += sum_k w[k,c,r,s] * dy[n,k,p,q]   (scatter of W^T dy)
      dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * xp[n,c,p*stride+r,q*stride+s]
      db[k]       = sum_{n,p,q} dy[n,k,p,q]
    dx is dxp without the padding; pixels no window touches get 0.
    """
    x, w, dy = _f64(x), _f64(w), _f64(dy)
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2:]
    xp = pad_nchw(x, padding)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for r in range(R):
        for s in range(S):
            taps = _taps(r, s, stride, P, Q)
            dxp[taps] += np.einsum("nkpq,kc->ncpq", dy, w[:, :, r, s])
            dw[:, :, r, s] = np.einsum("nkpq,ncpq->kc", dy, xp[taps])
    dx = dxp[:, :, padding:padding + H, padding:padding + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def conv2d_backward_dx_full(w, dy, x_shape, stride=1, padding=0):
    """The input gradient a second way: the "full" correlation of dy, dilated by the stride,
    with the kernel flipped in (R, S) and transposed in (K, C). Used to cross-check the scatter.

    dxp[i] = sum_r dyd[i - r] * w[r]  =  sum_r' dyd_padded[i + r'] * w[R - 1 - r']
    """
    w, dy = _f64(w), _f64(dy)
    N, C, H, W = x_shape
    K, _, R, S = w.shape
    P, Q = dy.shape[2:]
    Hd, Wd = (P - 1) * stride + 1, (Q - 1) * stride + 1
    dyd = np.zeros((N, K, Hd, Wd))
    dyd[:, :, ::stride, ::stride] = dy
    dyd = np.pad(dyd, ((0, 0), (0, 0), (R - 1, R - 1), (S - 1, S - 1)))
    w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, K, R, S)
    used = conv2d_forward(dyd, w_flip)  # (N, C, Hd + R - 1, Wd + S - 1)
    dxp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    dxp[:, :, :used.shape[2], :used.shape[3]] = used
    return dxp[:, :, padding:padding + H, padding:padding + W]


# ---------------------------------------------------------------------------------------------
# pooling (no padding, floor rule for windows that do not tile the input)


def maxpool2d_forward(x, kernel=2, stride=2):
    """x (N, C, H, W) -> (y (N, C, P, Q) float64, argmax (N, C, P, Q) int64).

    argmax is the flat index h * W + w into each H*W plane of the first maximum of the window in
    row-major order (PyTorch's tie rule); a window holding NaN gives NaN and the first NaN.
    """
    x = _f64(x)
    N, C, H, W = x.shape
    P, Q = out_size(H, kernel, stride), out_size(W, kernel, stride)
    y = np.empty((N, C, P, Q))
    argmax = np.empty((N, C, P, Q), dtype=np.int64)
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * stride, q * stride
            window = x[:, :, h0:h0 + kernel, w0:w0 + kernel].reshape(N, C, kernel * kernel)
            j = np.argmax(window, axis=2)  # first maximum; numpy treats NaN as the maximum
            y[:, :, p, q] = np.take_along_axis(window, j[..., None], axis=2)[..., 0]
            argmax[:, :, p, q] = (h0 + j // kernel) * W + w0 + j % kernel
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape):
    """dy (N, C, P, Q), argmax (N, C, P, Q) flat plane indices -> dx (N, C, H, W) float64.

    From y[n,c,p,q] = x[n,c].flat[argmax[n,c,p,q]]: dx[n,c].flat[argmax[n,c,p,q]] += dy[n,c,p,q]
    (overlapping windows that share a maximum add up).
    """
    dy = _f64(dy)
    N, C, H, W = x_shape
    dx = np.zeros((N * C, H * W))
    rows = np.repeat(np.arange(N * C), dy[0, 0].size if dy.size else 0)
    np.add.at(dx, (rows, np.asarray(argmax).reshape(-1)), dy.reshape(-1))
    return dx.reshape(N, C, H, W)


def avgpool2d_forward(x, kernel=2, stride=2):
    """x (N, C, H, W) -> y (N, C, P, Q): the mean of each kernel x kernel window."""
    x = _f64(x)
    N, C, H, W = x.shape
    P, Q = out_size(H, kernel, stride), out_size(W, kernel, stride)
    y = np.empty((N, C, P, Q))
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * stride, q * stride
            y[:, :, p, q] = x[:, :, h0:h0 + kernel, w0:w0 + kernel].mean(axis=(2, 3))
    return y


def avgpool2d_backward(dy, x_shape, kernel=2, stride=2):
    """dy (N, C, P, Q) -> dx (N, C, H, W): each dy spread evenly, dy / kernel^2, over its window."""
    dy = _f64(dy)
    N, C, H, W = x_shape
    P, Q = dy.shape[2:]
    dx = np.zeros((N, C, H, W))
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * stride, q * stride
            dx[:, :, h0:h0 + kernel, w0:w0 + kernel] += dy[:, :, p, q, None, None] / kernel ** 2
    return dx


# ---------------------------------------------------------------------------------------------
# linear


def linear_forward(x, w, b=None):
    """x (N, I), w (O, I), b (O,) or None -> y (N, O) = x w^T + b."""
    y = _f64(x) @ _f64(w).T
    return y if b is None else y + _f64(b)


def linear_backward(x, w, dy):
    """From y = x w^T + b: dx = dy w (N, I), dw = dy^T x (O, I), db = sum_n dy (O,)."""
    x, w, dy = _f64(x), _f64(w), _f64(dy)
    return dy @ w, dy.T @ x, dy.sum(axis=0)


# ---------------------------------------------------------------------------------------------
# activations (any shape)


def sigmoid_forward(x):
    """1 / (1 + exp(-x)), written so that neither branch overflows."""
    x = _f64(x)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(y, dy):
    """From y = sigmoid(x): dx = dy * y * (1 - y), in terms of the forward output y."""
    y = _f64(y)
    return _f64(dy) * y * (1.0 - y)


def tanh_forward(x):
    return np.tanh(_f64(x))


def tanh_backward(y, dy):
    """From y = tanh(x): dx = dy * (1 - y^2), in terms of the forward output y."""
    y = _f64(y)
    return _f64(dy) * (1.0 - y * y)


def relu_forward(x):
    """max(x, 0) with NaN kept (np.maximum propagates NaN, like torch.relu)."""
    return np.maximum(_f64(x), 0.0)


def relu_backward(x, dy):
    """From y = max(x, 0): dx = dy where x > 0, else 0 (0 at x == 0, like PyTorch)."""
    return np.where(_f64(x) > 0, _f64(dy), 0.0)


# ---------------------------------------------------------------------------------------------
# softmax and losses


def softmax(x):
    """x (N, C) -> p (N, C): exp(x - rowmax) / sum exp(x - rowmax)."""
    x = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels, smoothing=0.0):
    """logits (N, C), labels (N,) -> (loss, dlogits), against the target
    t = (1 - smoothing) onehot + smoothing / C.

    loss = mean_n (logsumexp(logits[n]) - sum_c t[n, c] logits[n, c]);  dlogits = (p - t) / N.
    """
    x = _f64(logits)
    labels = np.asarray(labels).astype(np.int64)
    N, C = x.shape
    t = np.full((N, C), smoothing / C)
    t[np.arange(N), labels] += 1.0 - smoothing
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    loss = float(np.mean(lse - (t * x).sum(axis=1)))
    return loss, (softmax(x) - t) / N


def mse_loss(pred, target):
    """(loss, dpred): loss = mean((pred - target)^2) over all elements; dpred = 2 (pred - target) / numel."""
    d = _f64(pred) - _f64(target)
    return float(np.mean(d * d)), 2.0 * d / d.size


# ---------------------------------------------------------------------------------------------
# comparison helpers shared by the op tests


# ---------------------------------------------------------------------------------------------
# the ops of LeNet5(variant="lecun98")


def scaled_tanh_forward(x):
    """1.7159 tanh(2x/3) (LeCun 1998, Appendix A)."""
    return 1.7159 * np.tanh(2.0 / 3.0 * _f64(x))


def masked_conv2d_forward(x, w, mask, b=None, stride=1, padding=0):
    """conv2d_forward with w (K, C, R, S) times the 0/1 table mask (K, C)."""
    return conv2d_forward(x, _f64(w) * _f64(mask)[:, :, None, None], b, stride, padding)


def subsample2d_forward(x, w, b=None, kernel=2, stride=2):
    """w[c] * (window sum of x[:, c]) + b[c]: avg-pool times kernel^2, scaled per map."""
    s = avgpool2d_forward(x, kernel, stride) * kernel * kernel
    y = s * _f64(w)[None, :, None, None]
    return y if b is None else y + _f64(b)[None, :, None, None]


def rbf_forward(x, centres):
    """y (N, O) = squared Euclidean distance of each row of x (N, I) to each centre (O, I)."""
    d = _f64(x)[:, None, :] - _f64(centres)[None, :, :]
    return (d * d).sum(axis=2)


def rbf_map_loss(y, labels, j=0.1):
    """mean_n y[n, label] + log(exp(-j) + sum_i exp(-y[n, i])) (LeCun 1998, eq. 9)."""
    y = _f64(y)
    n = np.arange(len(y))
    z = np.exp(-j) + np.exp(-y).sum(axis=1)
    return float(np.mean(y[n, labels] + np.log(z)))


def assert_close(got, want, rtol=1e-4, atol=2e-5, what=""):
    """Float32-vs-float64 comparison: |got - want| <= atol * max(1, max|want|) + rtol * |want|.

    NaN must match NaN and +-Inf must match exactly (assert_allclose's equal_nan rule).
    """
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    finite = want[np.isfinite(want)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol * scale,
                               err_msg=what)


def assert_fresh_f32(*arrays):
    """Outputs are new float32 C-contiguous arrays."""
    for a in arrays:
        assert isinstance(a, np.ndarray), type(a)
        assert a.dtype == np.float32, a.dtype
        assert a.flags.c_contiguous
        assert a.flags.writeable


MAXERR = {}
_touched = set()


def maxerr_path():
    return os.environ.get("PYLENET_MAXERR_JSON",
                          os.path.join(tempfile.gettempdir(), "pylenet_maxerr.json"))


def note_maxerr(op, got, want):
    """Record the largest |got - want| (finite entries of want only) for op against PyTorch."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    mask = np.isfinite(want)
    err = float(np.abs(got[mask] - want[mask]).max()) if mask.any() else 0.0
    MAXERR[op] = max(MAXERR.get(op, 0.0), err)
    _touched.add(op)
    return err


@pytest.fixture(scope="module", autouse=True)
def maxerr_report():
    """Imported by each op test module: at module teardown print MAXERR lines and write the JSON."""
    yield
    for op in sorted(_touched):
        print(f"\nMAXERR {op} {MAXERR[op]:.3e}", end="")
    if _touched:
        print()
        with open(maxerr_path(), "w") as f:
            json.dump(MAXERR, f, indent=1, sort_keys=True)
    _touched.clear()
