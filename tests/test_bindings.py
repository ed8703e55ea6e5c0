"""The binding layer: dtype/contiguity conversion policy, bad-input errors and their messages,
label dtypes, empty batches, thread control (1 vs 2 threads), the GIL release and build_info."""
import copy
import re
import threading
import time

import numpy as np
import pytest

import pylenet
from pylenet import ops

RNG = np.random.default_rng(42)


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


pytestmark = pytest.mark.usefixtures("restore_threads")  # tests here change the thread count


# ---------------------------------------------------------------------------------------------
# conversion policy: every float array-like gives the result of its float32 C-contiguous copy

_pool_x = randn(2, 3, 7, 6)
_pool_y, _pool_argmax = ops.maxpool2d_forward(_pool_x, kernel=3, stride=2)

# op name -> (function, float array arguments, other arguments)
POLICY_CASES = {
    "conv2d_forward": (ops.conv2d_forward, dict(x=randn(2, 3, 7, 6), w=randn(4, 3, 3, 2), b=randn(4)),
                       dict(stride=2, padding=1)),
    "conv2d_backward": (ops.conv2d_backward, dict(x=randn(2, 3, 7, 6), w=randn(4, 3, 3, 2),
                                                  dy=randn(2, 4, 4, 4)), dict(stride=2, padding=1)),
    "maxpool2d_forward": (ops.maxpool2d_forward, dict(x=_pool_x), dict(kernel=3, stride=2)),
    "maxpool2d_backward": (ops.maxpool2d_backward, dict(dy=randn(*_pool_y.shape)),
                           dict(argmax=_pool_argmax, x_shape=_pool_x.shape)),
    "avgpool2d_forward": (ops.avgpool2d_forward, dict(x=_pool_x), dict(kernel=3, stride=2)),
    "avgpool2d_backward": (ops.avgpool2d_backward, dict(dy=randn(*_pool_y.shape)),
                           dict(x_shape=_pool_x.shape, kernel=3, stride=2)),
    "linear_forward": (ops.linear_forward, dict(x=randn(5, 7), w=randn(3, 7), b=randn(3)), {}),
    "linear_backward": (ops.linear_backward, dict(x=randn(5, 7), w=randn(3, 7), dy=randn(5, 3)), {}),
    "sigmoid_forward": (ops.sigmoid_forward, dict(x=randn(2, 3, 4, 5)), {}),
    "sigmoid_backward": (ops.sigmoid_backward, dict(y=np.abs(randn(3, 4)) % 1, dy=randn(3, 4)), {}),
    "tanh_forward": (ops.tanh_forward, dict(x=randn(3, 5)), {}),
    "tanh_backward": (ops.tanh_backward, dict(y=np.tanh(randn(3, 4)), dy=randn(3, 4)), {}),
    "relu_forward": (ops.relu_forward, dict(x=randn(4, 6)), {}),
    "relu_backward": (ops.relu_backward, dict(x=randn(2, 3, 5), dy=randn(2, 3, 5)), {}),
    "softmax": (ops.softmax, dict(x=randn(4, 6)), {}),
    "softmax_cross_entropy": (ops.softmax_cross_entropy, dict(logits=randn(4, 6)),
                              dict(labels=np.array([0, 5, 2, 2]))),
    "mse_loss": (ops.mse_loss, dict(pred=randn(3, 4), target=randn(3, 4)), {}),
}


def variants(a):
    """The same float32 values as other array-likes: name -> value."""
    out = {"float64": a.astype(np.float64), "list": a.tolist()}
    wide = np.zeros(a.shape + (2,), np.float32)
    wide[..., 0] = a
    out["non-contiguous"] = wide[..., 0]
    out["fortran"] = np.asfortranarray(a)
    out["negative-strides"] = np.ascontiguousarray(a[::-1])[::-1] if a.ndim else a
    ro = a.copy()
    ro.flags.writeable = False
    out["read-only"] = ro
    return out


VARIANTS = ["float64", "list", "non-contiguous", "fortran", "negative-strides", "read-only"]


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_same_results(got, want):
    got, want = as_tuple(got), as_tuple(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, np.ndarray):
            assert isinstance(g, np.ndarray) and g.dtype == w.dtype and g.flags.c_contiguous
            np.testing.assert_array_equal(g, w)
        else:
            assert g == w


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op", list(POLICY_CASES))
def test_array_likes_give_the_float32_result_and_stay_untouched(op, variant):
    fn, arrays, others = POLICY_CASES[op]
    want = fn(**arrays, **others)
    converted = {name: variants(a)[variant] for name, a in arrays.items()}
    saved = copy.deepcopy(converted)  # deepcopy makes views contiguous: keep the layout apart
    layout = {name: (v.dtype, v.strides) for name, v in converted.items() if isinstance(v, np.ndarray)}
    got = fn(**converted, **others)
    assert_same_results(got, want)
    for name, value in converted.items():
        if isinstance(value, np.ndarray):
            assert (value.dtype, value.strides) == layout[name]
            np.testing.assert_array_equal(value, saved[name])
        else:
            assert value == saved[name]
    # one argument converted at a time, too
    for name in arrays:
        assert_same_results(fn(**{**arrays, name: converted[name]}, **others), want)


@pytest.mark.parametrize("op", list(POLICY_CASES))
def test_float32_inputs_are_never_modified_and_outputs_are_fresh(op):
    fn, arrays, others = POLICY_CASES[op]
    saved = {name: a.copy() for name, a in arrays.items()}
    outs = [o for o in as_tuple(fn(**arrays, **others)) if isinstance(o, np.ndarray)]
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, saved[name])
        for o in outs:
            assert not np.shares_memory(o, a)
    for o in outs:
        assert o.flags.c_contiguous and o.flags.writeable


def test_argmax_of_any_integer_dtype_and_layout():
    dy = POLICY_CASES["maxpool2d_backward"][1]["dy"]
    want = ops.maxpool2d_backward(dy, _pool_argmax, _pool_x.shape)
    wide = np.zeros(_pool_argmax.shape + (2,), np.int32)
    wide[..., 0] = _pool_argmax
    for argmax in (_pool_argmax.astype(np.int64), _pool_argmax.astype(np.uint16), wide[..., 0],
                   _pool_argmax.tolist(), np.asfortranarray(_pool_argmax)):
        np.testing.assert_array_equal(ops.maxpool2d_backward(dy, argmax, _pool_x.shape), want)
    np.testing.assert_array_equal(ops.maxpool2d_backward(dy, _pool_argmax, list(_pool_x.shape)), want)
    np.testing.assert_array_equal(ops.maxpool2d_backward(dy, _pool_argmax, np.array(_pool_x.shape)), want)


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_labels_of_every_integer_dtype(dtype):
    logits = randn(5, 4)
    labels = np.array([0, 3, 1, 1, 2])
    want = ops.softmax_cross_entropy(logits, labels)
    got = ops.softmax_cross_entropy(logits, labels.astype(dtype))
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    strided = np.zeros(10, dtype)
    strided[::2] = labels
    got = ops.softmax_cross_entropy(logits, strided[::2])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0]), np.array([0, 1], np.float32),
                                    np.array([True, False]), np.array(["0", "1"])], ids=str)
def test_float_bool_or_text_labels_are_a_type_error(labels):
    with pytest.raises(TypeError, match="labels"):
        ops.softmax_cross_entropy(randn(2, 3), labels)


# ---------------------------------------------------------------------------------------------
# bad inputs: ValueError/TypeError whose message names the argument and what was received


def shp(*dims):
    """A loose pattern for a shape in a message: the numbers in order, any short separator."""
    return r"\D{1,3}".join(str(d) for d in dims)


def num(value):
    return rf"(?<![\d.]){re.escape(str(value))}(?![\d.])"


def word(name):
    return rf"\b{re.escape(name)}\b"


x4, w4 = randn(2, 3, 6, 6), randn(4, 3, 3, 3)
dy4 = ops.conv2d_forward(x4, w4)
px = randn(1, 2, 4, 4)
py_, pargmax = ops.maxpool2d_forward(px)

BAD_INPUTS = [
    # id, call, exception, patterns that must all appear in the message
    ("conv x 2-D", lambda: ops.conv2d_forward(randn(3, 4), w4), ValueError, [word("x"), shp(3, 4)]),
    ("conv x 5-D", lambda: ops.conv2d_forward(randn(1, 2, 3, 6, 6), w4), ValueError,
     [word("x"), shp(1, 2, 3, 6, 6)]),
    ("conv w 3-D", lambda: ops.conv2d_forward(x4, randn(4, 3, 3)), ValueError, [word("w"), shp(4, 3, 3)]),
    ("conv channels", lambda: ops.conv2d_forward(x4, randn(4, 2, 3, 3)), ValueError,
     [word("w"), word("x"), num(2), num(3)]),
    ("conv bias length", lambda: ops.conv2d_forward(x4, w4, randn(5)), ValueError,
     [word("b"), num(5), num(4)]),
    ("conv bias 2-D", lambda: ops.conv2d_forward(x4, w4, randn(4, 1)), ValueError, [word("b"), shp(4, 1)]),
    ("conv kernel too big", lambda: ops.conv2d_forward(randn(1, 3, 3, 4), randn(2, 3, 5, 5), padding=0),
     ValueError, [r"kernel|\bw\b", num(5), num(3)]),
    ("conv kernel too big padded", lambda: ops.conv2d_forward(randn(1, 3, 1, 9), randn(2, 3, 4, 1),
                                                              padding=1),
     ValueError, [r"kernel|\bw\b", num(4), num(3)]),
    ("conv stride 0", lambda: ops.conv2d_forward(x4, w4, stride=0), ValueError, [word("stride"), num(0)]),
    ("conv stride -2", lambda: ops.conv2d_forward(x4, w4, stride=-2), ValueError, [word("stride"), "-2"]),
    ("conv padding -1", lambda: ops.conv2d_forward(x4, w4, padding=-1), ValueError,
     [word("padding"), "-1"]),
    ("conv stride float", lambda: ops.conv2d_forward(x4, w4, stride=1.5), TypeError, [r"stride"]),
    ("conv_backward dy shape", lambda: ops.conv2d_backward(x4, w4, randn(2, 4, 3, 4)), ValueError,
     [word("dy"), shp(2, 4, 3, 4)]),
    ("conv_backward dy 3-D", lambda: ops.conv2d_backward(x4, w4, randn(2, 4, 4)), ValueError,
     [word("dy"), shp(2, 4, 4)]),
    ("conv_backward channels", lambda: ops.conv2d_backward(x4, randn(4, 1, 3, 3), dy4), ValueError,
     [word("w"), word("x"), num(1), num(3)]),
    ("conv_backward stride 0", lambda: ops.conv2d_backward(x4, w4, dy4, stride=0), ValueError,
     [word("stride"), num(0)]),
    ("conv_backward padding -3", lambda: ops.conv2d_backward(x4, w4, dy4, padding=-3), ValueError,
     [word("padding"), "-3"]),
    ("maxpool x 3-D", lambda: ops.maxpool2d_forward(randn(2, 4, 4)), ValueError, [word("x"), shp(2, 4, 4)]),
    ("maxpool kernel 0", lambda: ops.maxpool2d_forward(px, kernel=0), ValueError, [word("kernel"), num(0)]),
    ("maxpool stride 0", lambda: ops.maxpool2d_forward(px, stride=0), ValueError, [word("stride"), num(0)]),
    ("maxpool kernel too big", lambda: ops.maxpool2d_forward(randn(1, 1, 4, 3), kernel=4, stride=1),
     ValueError, [word("kernel"), num(4), num(3)]),
    ("maxpool_backward argmax shape", lambda: ops.maxpool2d_backward(py_, pargmax[:, :, :1], px.shape),
     ValueError, [word("argmax"), shp(1, 2, 1, 2)]),
    ("maxpool_backward argmax too big", lambda: ops.maxpool2d_backward(py_, pargmax + 999, px.shape),
     ValueError, [word("argmax"), rf"{num(16)}|\b99\d\b|10\d\d"]),
    ("maxpool_backward argmax == H*W", lambda: ops.maxpool2d_backward(py_, np.full_like(pargmax, 16),
                                                                      px.shape),
     ValueError, [word("argmax"), num(16)]),
    ("maxpool_backward argmax negative", lambda: ops.maxpool2d_backward(py_, pargmax - 100, px.shape),
     ValueError, [word("argmax"), r"-\d+"]),
    ("maxpool_backward argmax float", lambda: ops.maxpool2d_backward(py_, pargmax.astype(np.float32),
                                                                     px.shape),
     TypeError, [word("argmax")]),
    ("maxpool_backward x_shape 3", lambda: ops.maxpool2d_backward(py_, pargmax, (2, 4, 4)), ValueError,
     [word("x_shape"), shp(2, 4, 4)]),
    ("maxpool_backward x_shape 5", lambda: ops.maxpool2d_backward(py_, pargmax, (1, 2, 4, 4, 1)),
     ValueError, [word("x_shape"), shp(1, 2, 4, 4, 1)]),
    ("maxpool_backward x_shape N", lambda: ops.maxpool2d_backward(py_, pargmax, (3, 2, 4, 4)), ValueError,
     [word("x_shape"), num(3), num(1)]),
    ("maxpool_backward x_shape C", lambda: ops.maxpool2d_backward(py_, pargmax, (1, 5, 4, 4)), ValueError,
     [word("x_shape"), num(5), num(2)]),
    ("maxpool_backward x_shape negative", lambda: ops.maxpool2d_backward(py_, pargmax, (1, 2, -4, 4)),
     ValueError, [word("x_shape"), "-4"]),
    ("maxpool_backward x_shape floats", lambda: ops.maxpool2d_backward(py_, pargmax, (1.0, 2, 4, 4)),
     TypeError, [word("x_shape")]),
    ("maxpool_backward x_shape None", lambda: ops.maxpool2d_backward(py_, pargmax, None), TypeError,
     [word("x_shape")]),
    ("maxpool_backward dy 3-D", lambda: ops.maxpool2d_backward(py_[0], pargmax[0], px.shape), ValueError,
     [word("dy"), shp(2, 2, 2)]),
    ("avgpool x 2-D", lambda: ops.avgpool2d_forward(randn(4, 4)), ValueError, [word("x"), shp(4, 4)]),
    ("avgpool kernel too big", lambda: ops.avgpool2d_forward(randn(1, 1, 2, 9), kernel=3), ValueError,
     [word("kernel"), num(3), num(2)]),
    ("avgpool stride -1", lambda: ops.avgpool2d_forward(px, stride=-1), ValueError, [word("stride"), "-1"]),
    ("avgpool_backward dy vs x_shape", lambda: ops.avgpool2d_backward(py_, (1, 2, 6, 6)), ValueError,
     [r"\bdy\b|\bx_shape\b", shp(1, 2, 2, 2)]),
    ("avgpool_backward x_shape 3", lambda: ops.avgpool2d_backward(py_, (2, 4, 4)), ValueError,
     [word("x_shape"), shp(2, 4, 4)]),
    ("avgpool_backward kernel 0", lambda: ops.avgpool2d_backward(py_, px.shape, kernel=0), ValueError,
     [word("kernel"), num(0)]),
    ("linear x 1-D", lambda: ops.linear_forward(randn(7), randn(3, 7)), ValueError, [word("x"), shp(7)]),
    ("linear w 3-D", lambda: ops.linear_forward(randn(2, 7), randn(3, 7, 1)), ValueError,
     [word("w"), shp(3, 7, 1)]),
    ("linear features", lambda: ops.linear_forward(randn(2, 5), randn(3, 4)), ValueError,
     [word("w"), word("x"), num(5), num(4)]),
    ("linear bias length", lambda: ops.linear_forward(randn(2, 4), randn(3, 4), randn(2)), ValueError,
     [word("b"), num(2), num(3)]),
    ("linear_backward dy shape", lambda: ops.linear_backward(randn(2, 4), randn(3, 4), randn(2, 5)),
     ValueError, [word("dy"), shp(2, 5)]),
    ("linear_backward features", lambda: ops.linear_backward(randn(2, 6), randn(3, 4), randn(2, 3)),
     ValueError, [word("x"), word("w"), num(6), num(4)]),
    ("sigmoid_backward shapes", lambda: ops.sigmoid_backward(randn(3, 4), randn(4, 3)), ValueError,
     [word("dy"), shp(4, 3), shp(3, 4)]),
    ("tanh_backward shapes", lambda: ops.tanh_backward(randn(3, 4), randn(12)), ValueError,
     [word("dy"), shp(12), shp(3, 4)]),
    ("relu_backward shapes", lambda: ops.relu_backward(randn(2, 3), randn(2, 3, 1)), ValueError,
     [word("dy"), word("x"), shp(2, 3, 1)]),
    ("softmax x 1-D", lambda: ops.softmax(randn(5)), ValueError, [word("x"), shp(5)]),
    ("softmax x 3-D", lambda: ops.softmax(randn(2, 3, 4)), ValueError, [word("x"), shp(2, 3, 4)]),
    ("ce logits 1-D", lambda: ops.softmax_cross_entropy(randn(5), np.array([1])), ValueError,
     [word("logits"), shp(5)]),
    ("ce labels 2-D", lambda: ops.softmax_cross_entropy(randn(2, 3), np.zeros((2, 1), np.int64)),
     ValueError, [word("labels"), shp(2, 1)]),
    ("ce labels length", lambda: ops.softmax_cross_entropy(randn(4, 3), np.array([0, 1, 2])), ValueError,
     [word("labels"), num(3), num(4)]),
    ("ce label too big", lambda: ops.softmax_cross_entropy(randn(3, 5), np.array([0, 7, 1])), ValueError,
     [word("labels"), num(7)]),
    ("ce label == C", lambda: ops.softmax_cross_entropy(randn(3, 5), np.array([0, 1, 5])), ValueError,
     [word("labels"), num(5)]),
    ("ce label negative", lambda: ops.softmax_cross_entropy(randn(3, 5), np.array([0, -1, 1])), ValueError,
     [word("labels"), "-1"]),
    ("mse shapes", lambda: ops.mse_loss(randn(3, 4), randn(4, 3)), ValueError,
     [r"\bpred\b|\btarget\b", shp(3, 4), shp(4, 3)]),
    ("mse sizes", lambda: ops.mse_loss(randn(12), randn(3, 4)), ValueError,
     [r"\bpred\b|\btarget\b", shp(12), shp(3, 4)]),
    ("x None", lambda: ops.conv2d_forward(None, w4), TypeError, [word("x")]),
    ("w str", lambda: ops.conv2d_forward(x4, "weights"), TypeError, [word("w")]),
    ("x object", lambda: ops.relu_forward(object()), TypeError, [word("x")]),
    ("x complex", lambda: ops.tanh_forward(np.ones(3, np.complex64)), TypeError, [word("x")]),
    ("logits ragged", lambda: ops.softmax_cross_entropy([[1.0, 2.0], [3.0]], np.array([0, 1])),
     (TypeError, ValueError), [word("logits")]),
    ("set_num_threads 0", lambda: ops.set_num_threads(0), ValueError, [num(0)]),
    ("set_num_threads -3", lambda: ops.set_num_threads(-3), ValueError, ["-3"]),
    ("set_num_threads str", lambda: ops.set_num_threads("2"), TypeError, []),
]


@pytest.mark.parametrize("call, exc, patterns", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_naming_argument_and_value(call, exc, patterns):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not found in message {message!r}"


def test_wide_integer_argmax_is_not_wrapped_into_range():
    # argmax of any integer dtype is accepted, so an int64 index past int32 must be range-checked
    # before narrowing: 2**32 + 1 is outside [0, 16), not index 1.
    bad = pargmax.astype(np.int64)
    bad[0, 0, 0, 0] = 2 ** 32 + 1
    with pytest.raises(ValueError, match="argmax"):
        ops.maxpool2d_backward(py_, bad, px.shape)


def test_huge_unsigned_label_is_rejected():
    labels = np.array([0, 2 ** 64 - 1], np.uint64)
    with pytest.raises(ValueError, match="labels"):
        ops.softmax_cross_entropy(randn(2, 3), labels)
    labels = np.array([0, 2 ** 32 + 1], np.uint64)
    with pytest.raises(ValueError, match="labels"):
        ops.softmax_cross_entropy(randn(2, 3), labels)


# ---------------------------------------------------------------------------------------------
# empty batches


def test_empty_batch_conv_pool_linear_activations():
    x = np.zeros((0, 3, 9, 8), np.float32)
    w = randn(4, 3, 3, 3)
    y = ops.conv2d_forward(x, w, randn(4), stride=2, padding=1)
    assert y.shape == (0, 4, 5, 4) and y.dtype == np.float32
    dx, dw, db = ops.conv2d_backward(x, w, y, stride=2, padding=1)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == (4,)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)

    y, argmax = ops.maxpool2d_forward(x, kernel=2, stride=2)
    assert y.shape == argmax.shape == (0, 3, 4, 4) and argmax.dtype == np.int32
    assert ops.maxpool2d_backward(y, argmax, x.shape).shape == x.shape
    y = ops.avgpool2d_forward(x, kernel=3, stride=1)
    assert y.shape == (0, 3, 7, 6)
    assert ops.avgpool2d_backward(y, x.shape, kernel=3, stride=1).shape == x.shape

    xl, wl = np.zeros((0, 7), np.float32), randn(3, 7)
    y = ops.linear_forward(xl, wl, randn(3))
    assert y.shape == (0, 3)
    dx, dw, db = ops.linear_backward(xl, wl, y)
    assert dx.shape == (0, 7) and dw.shape == (3, 7) and db.shape == (3,)
    np.testing.assert_array_equal(dw, 0)
    np.testing.assert_array_equal(db, 0)

    for name in ("sigmoid", "tanh", "relu"):
        for shape in [(0,), (0, 6, 28, 28)]:
            e = np.zeros(shape, np.float32)
            assert getattr(ops, f"{name}_forward")(e).shape == shape
            assert getattr(ops, f"{name}_backward")(e, e).shape == shape


def test_empty_batch_losses_raise():
    with pytest.raises(ValueError, match="logits|batch|empty"):
        ops.softmax_cross_entropy(np.zeros((0, 10), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="pred|empty"):
        ops.mse_loss(np.zeros((0, 10), np.float32), np.zeros((0, 10), np.float32))
    with pytest.raises(ValueError, match="pred|empty"):
        ops.mse_loss(np.zeros(0, np.float32), np.zeros(0, np.float32))


# ---------------------------------------------------------------------------------------------
# threads


def test_set_and_get_num_threads():
    ops.set_num_threads(1)
    assert ops.get_num_threads() == 1
    ops.set_num_threads(2)
    expected = 2 if ops.build_info()["openmp"] else 1
    assert ops.get_num_threads() == expected
    assert isinstance(ops.get_num_threads(), int)


def lenet_calls():
    """One call per op on LeNet-5 shapes, batch 16: name -> zero-argument function."""
    rng = np.random.default_rng(7)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x1, w1, b1 = r(16, 1, 32, 32), r(6, 1, 5, 5), r(6)          # C1: 1@32x32 -> 6@28x28
    dy1 = r(16, 6, 28, 28)
    a1 = r(16, 6, 28, 28)                                         # S2: 6@28x28 -> 6@14x14
    _, arg1 = ops.maxpool2d_forward(a1)
    dp1 = r(16, 6, 14, 14)
    x3, w3, b3 = r(16, 6, 14, 14), r(16, 6, 5, 5), r(16)         # C3: 6@14x14 -> 16@10x10
    dy3 = r(16, 16, 10, 10)
    xf, wf, bf, dyf = r(16, 400), r(120, 400), r(120), r(16, 120)  # F5: 400 -> 120
    logits, labels = r(16, 10), rng.integers(0, 10, 16)
    sig, th = 1 / (1 + np.exp(-a1)), np.tanh(a1)
    return {
        "conv2d_forward C1": lambda: ops.conv2d_forward(x1, w1, b1),
        "conv2d_backward C1": lambda: ops.conv2d_backward(x1, w1, dy1),
        "conv2d_forward C3": lambda: ops.conv2d_forward(x3, w3, b3),
        "conv2d_backward C3": lambda: ops.conv2d_backward(x3, w3, dy3),
        "conv2d_forward C3 stride2 pad2": lambda: ops.conv2d_forward(x3, w3, b3, stride=2, padding=2),
        "maxpool2d_forward": lambda: ops.maxpool2d_forward(a1),
        "maxpool2d_backward": lambda: ops.maxpool2d_backward(dp1, arg1, a1.shape),
        "avgpool2d_forward": lambda: ops.avgpool2d_forward(a1),
        "avgpool2d_backward": lambda: ops.avgpool2d_backward(dp1, a1.shape),
        "linear_forward": lambda: ops.linear_forward(xf, wf, bf),
        "linear_backward": lambda: ops.linear_backward(xf, wf, dyf),
        "sigmoid_forward": lambda: ops.sigmoid_forward(a1),
        "sigmoid_backward": lambda: ops.sigmoid_backward(sig, dy1),
        "tanh_forward": lambda: ops.tanh_forward(a1),
        "tanh_backward": lambda: ops.tanh_backward(th, dy1),
        "relu_forward": lambda: ops.relu_forward(a1),
        "relu_backward": lambda: ops.relu_backward(a1, dy1),
        "softmax": lambda: ops.softmax(logits),
        "softmax_cross_entropy": lambda: ops.softmax_cross_entropy(logits, labels),
        "mse_loss": lambda: ops.mse_loss(a1, dy1),
    }


LENET_CALLS = lenet_calls()
THREAD_REPORT = {}


@pytest.fixture(scope="module", autouse=True)
def print_thread_report():
    yield
    for name, (identical, diff) in sorted(THREAD_REPORT.items()):
        print(f"\nTHREADS {name}: 1 vs 2 threads {'bit-identical' if identical else 'differ'}"
              f" (max abs diff {diff:.3e})", end="")
    if THREAD_REPORT:
        print()


@pytest.mark.parametrize("name", list(LENET_CALLS))
def test_one_and_two_threads_agree(name):
    call = LENET_CALLS[name]
    ops.set_num_threads(1)
    one = as_tuple(call())
    ops.set_num_threads(2)
    two = as_tuple(call())
    identical, diff = True, 0.0
    for a, b in zip(one, two):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * scale)
        identical &= bool(np.array_equal(a, b))
        diff = max(diff, float(np.abs(a - b).max()))
    THREAD_REPORT[name] = (identical, diff)


CONCURRENT_NAMES = ["big conv2d_forward", "big conv2d_backward", "conv2d_forward C3", "conv2d_backward C3",
                    "maxpool2d_forward", "maxpool2d_backward", "linear_forward", "linear_backward",
                    "softmax_cross_entropy", "relu_backward"]


def concurrent_calls(seed):
    """Per-thread data: the LeNet calls on their own arrays plus a conv big enough to take ms."""
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((16, 6, 32, 32)).astype(np.float32)
    wb = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    dyb = rng.standard_normal((16, 16, 28, 28)).astype(np.float32)
    calls = {k: v for k, v in lenet_calls().items() if k in CONCURRENT_NAMES}
    if seed:  # different data per thread: rebuild the small calls from fresh arrays
        xl = rng.standard_normal((16, 400)).astype(np.float32)
        wl = rng.standard_normal((120, 400)).astype(np.float32)
        dyl = rng.standard_normal((16, 120)).astype(np.float32)
        calls["linear_forward"] = lambda: ops.linear_forward(xl, wl)
        calls["linear_backward"] = lambda: ops.linear_backward(xl, wl, dyl)
    calls["big conv2d_forward"] = lambda: ops.conv2d_forward(xb, wb, None, 1, 0)
    calls["big conv2d_backward"] = lambda: ops.conv2d_backward(xb, wb, dyb)
    return calls


@pytest.mark.parametrize("threads", [1, 2])
def test_two_python_threads_get_correct_results(threads):
    ops.set_num_threads(threads)
    workers = [concurrent_calls(seed) for seed in (0, 1)]
    expected = [{name: as_tuple(call()) for name, call in calls.items()} for calls in workers]
    errors = []

    def run(i):
        try:
            for rep in range(2):
                for name in CONCURRENT_NAMES:
                    got = as_tuple(workers[i][name]())
                    for g, want in zip(got, expected[i][name]):
                        if not np.array_equal(g, want):
                            errors.append(f"thread {i} rep {rep} {name}: result differs")
        except Exception as e:  # noqa: BLE001  (reported below, on the main thread)
            errors.append(f"thread {i}: {type(e).__name__}: {e}")

    pool = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in pool)
    assert not errors, errors


def test_the_gil_is_released_during_a_kernel():
    # While a long conv runs on a worker thread, the main thread keeps running Python code;
    # if the kernel held the GIL the main thread would stall for the whole call.
    ops.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((192, 16, 32, 32)).astype(np.float32)  # ~40 ms at AVX-512
    w = rng.standard_normal((64, 16, 5, 5)).astype(np.float32)
    ops.conv2d_forward(x[:4], w)  # warm up
    start = time.perf_counter()
    ops.conv2d_forward(x, w)
    duration = time.perf_counter() - start
    assert duration > 0.02, "the kernel is too quick for this test to mean anything"

    assert max_stall_while(lambda: ops.conv2d_forward(x, w)) < 0.5 * duration


def max_stall_while(fn):
    """Run fn on a worker thread; return the longest the main thread went without running."""
    worker = threading.Thread(target=fn)
    last = time.perf_counter()  # before start(): the worker may run first and hold the GIL
    stall = 0.0
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        stall = max(stall, now - last)
        last = now
    worker.join()
    return stall


def test_the_stall_detector_sees_a_call_that_holds_the_gil():
    # Big-integer arithmetic runs in C without releasing the GIL: the detector must notice.
    big = 7 ** 400_000
    start = time.perf_counter()
    big * big  # noqa: B018
    duration = time.perf_counter() - start
    assert max_stall_while(lambda: big * big) > 0.5 * duration


# ---------------------------------------------------------------------------------------------
# build_info


def test_build_info_keys_and_types():
    info = ops.build_info()
    assert isinstance(info, dict)
    for key in ("version", "compiler", "openmp", "max_threads", "simd_compiled", "simd_used", "cuda"):
        assert key in info, key
    assert isinstance(info["version"], str) and info["version"] == pylenet.__version__
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert type(info["openmp"]) is bool and type(info["cuda"]) is bool
    assert type(info["max_threads"]) is int and info["max_threads"] >= 1
    compiled = info["simd_compiled"]
    assert isinstance(compiled, (list, tuple, str))
    if not isinstance(compiled, str):
        assert all(isinstance(s, str) for s in compiled)
    assert isinstance(info["simd_used"], str)
    if not isinstance(compiled, str) and compiled:
        assert info["simd_used"] in compiled
    if not info["openmp"]:
        assert info["max_threads"] == 1
