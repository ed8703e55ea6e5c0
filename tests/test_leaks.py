"""Memory stays flat: 10,000 calls of every op in pylenet.ops (valid calls, calls that convert
their inputs, calls that raise) and 200 LeNet-5 training steps on random batches of 64, both the
layer-by-layer path and the fused Trainer, leave the resident set size (RSS, /proc/self/statm)
where a warm-up left it, within LEAK_BOUND.

Shapes are chosen so that every output is at least ~1 KiB: a leak of one output per call then
grows RSS by 10 MiB or more over 10,000 calls, past the bound.
"""
import gc
import os

import numpy as np
import pytest

import pylenet
from pylenet import ops

with open("/proc/self/maps") as _maps:
    # ASan holds freed memory in quarantine (256 MiB by default): RSS says nothing there.
    pytestmark = pytest.mark.skipif("libasan" in _maps.read(), reason="RSS is not meaningful under ASan")

LEAK_BOUND = 8 << 20  # bytes of RSS growth tolerated after the warm-up
CALLS = 10_000
STEPS = 200


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(run, warmup, count):
    """RSS growth in bytes over run(count), measured after run(warmup)."""
    run(warmup)
    gc.collect()
    before = rss()
    run(count)
    gc.collect()
    return rss() - before


def _randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def op_calls():
    """name -> (valid call, call whose inputs need a conversion, call that raises)."""
    rng = np.random.default_rng(0)
    x4, w4, b4 = _randn(rng, 2, 3, 12, 12), _randn(rng, 4, 3, 3, 3), _randn(rng, 4)
    dy4 = _randn(rng, 2, 4, 10, 10)
    xp = _randn(rng, 2, 3, 16, 16)
    yp, argmax = ops.maxpool2d_forward(xp)
    dyp = _randn(rng, *yp.shape)
    x2, w2, b2, dy2 = _randn(rng, 16, 64), _randn(rng, 32, 64), _randn(rng, 32), _randn(rng, 16, 32)
    a = _randn(rng, 4, 256)
    logits, labels = _randn(rng, 32, 16), rng.integers(0, 16, 32)
    f64 = lambda arr: np.asfortranarray(arr, dtype=np.float64)  # noqa: E731  (a copy to make)
    bad = np.zeros((3, 3), np.float32)
    mask, w3 = (rng.random((4, 3)) < 0.5).astype(np.float32), _randn(rng, 3)
    return {
        "conv2d_forward": (lambda: ops.conv2d_forward(x4, w4, b4),
                           lambda: ops.conv2d_forward(f64(x4), f64(w4), f64(b4)),
                           lambda: ops.conv2d_forward(x4, bad)),
        "conv2d_backward": (lambda: ops.conv2d_backward(x4, w4, dy4),
                            lambda: ops.conv2d_backward(f64(x4), w4, f64(dy4)),
                            lambda: ops.conv2d_backward(x4, w4, bad)),
        "maxpool2d_forward": (lambda: ops.maxpool2d_forward(xp),
                              lambda: ops.maxpool2d_forward(f64(xp)),
                              lambda: ops.maxpool2d_forward(bad)),
        "maxpool2d_backward": (lambda: ops.maxpool2d_backward(dyp, argmax, xp.shape),
                               lambda: ops.maxpool2d_backward(f64(dyp), argmax.astype(np.uint16), xp.shape),
                               lambda: ops.maxpool2d_backward(dyp, argmax + 10 ** 6, xp.shape)),
        "avgpool2d_forward": (lambda: ops.avgpool2d_forward(xp),
                              lambda: ops.avgpool2d_forward(f64(xp)),
                              lambda: ops.avgpool2d_forward(xp, kernel=99)),
        "avgpool2d_backward": (lambda: ops.avgpool2d_backward(dyp, xp.shape),
                               lambda: ops.avgpool2d_backward(f64(dyp), list(xp.shape)),
                               lambda: ops.avgpool2d_backward(bad, xp.shape)),
        "linear_forward": (lambda: ops.linear_forward(x2, w2, b2),
                           lambda: ops.linear_forward(f64(x2), f64(w2), b2.tolist()),
                           lambda: ops.linear_forward(x2, bad)),
        "linear_backward": (lambda: ops.linear_backward(x2, w2, dy2),
                            lambda: ops.linear_backward(f64(x2), f64(w2), f64(dy2)),
                            lambda: ops.linear_backward(x2, w2, bad)),
        "sigmoid_forward": (lambda: ops.sigmoid_forward(a), lambda: ops.sigmoid_forward(f64(a)),
                            lambda: ops.sigmoid_forward("a")),
        "sigmoid_backward": (lambda: ops.sigmoid_backward(a, a), lambda: ops.sigmoid_backward(f64(a), a),
                             lambda: ops.sigmoid_backward(a, bad)),
        "tanh_forward": (lambda: ops.tanh_forward(a), lambda: ops.tanh_forward(f64(a)),
                         lambda: ops.tanh_forward(None)),
        "tanh_backward": (lambda: ops.tanh_backward(a, a), lambda: ops.tanh_backward(a, f64(a)),
                          lambda: ops.tanh_backward(a, bad)),
        "relu_forward": (lambda: ops.relu_forward(a), lambda: ops.relu_forward(f64(a)),
                         lambda: ops.relu_forward(a.astype(np.complex64))),
        "relu_backward": (lambda: ops.relu_backward(a, a), lambda: ops.relu_backward(f64(a), f64(a)),
                          lambda: ops.relu_backward(a, bad)),
        "softmax": (lambda: ops.softmax(logits), lambda: ops.softmax(f64(logits)),
                    lambda: ops.softmax(a[0])),
        "softmax_cross_entropy": (lambda: ops.softmax_cross_entropy(logits, labels),
                                  lambda: ops.softmax_cross_entropy(f64(logits), labels.astype(np.uint8)),
                                  lambda: ops.softmax_cross_entropy(logits, labels + 16)),
        "mse_loss": (lambda: ops.mse_loss(a, a), lambda: ops.mse_loss(f64(a), a.tolist()),
                     lambda: ops.mse_loss(a, bad)),
        # the ops of LeNet5(variant="lecun98")
        "scaled_tanh_forward": (lambda: ops.scaled_tanh_forward(a), lambda: ops.scaled_tanh_forward(f64(a)),
                                lambda: ops.scaled_tanh_forward(None)),
        "scaled_tanh_backward": (lambda: ops.scaled_tanh_backward(a, a),
                                 lambda: ops.scaled_tanh_backward(f64(a), a),
                                 lambda: ops.scaled_tanh_backward(a, bad)),
        "rescale_forward": (lambda: ops.rescale_forward(a, 2.0, 1.0), lambda: ops.rescale_forward(f64(a), 2, 1),
                            lambda: ops.rescale_forward(None, 2.0, 1.0)),
        "rescale_backward": (lambda: ops.rescale_backward(a, 2.0), lambda: ops.rescale_backward(f64(a), 2),
                             lambda: ops.rescale_backward("a", 2.0)),
        "masked_conv2d_forward": (lambda: ops.masked_conv2d_forward(x4, w4, mask, b4),
                                  lambda: ops.masked_conv2d_forward(f64(x4), f64(w4), mask.tolist(), f64(b4)),
                                  lambda: ops.masked_conv2d_forward(x4, w4, bad)),
        "masked_conv2d_backward": (lambda: ops.masked_conv2d_backward(x4, w4, mask, dy4),
                                   lambda: ops.masked_conv2d_backward(f64(x4), w4, f64(mask), f64(dy4)),
                                   lambda: ops.masked_conv2d_backward(x4, w4, mask, bad)),
        "subsample2d_forward": (lambda: ops.subsample2d_forward(xp, w3, w3),
                                lambda: ops.subsample2d_forward(f64(xp), w3.tolist(), None),
                                lambda: ops.subsample2d_forward(xp, bad)),
        "subsample2d_backward": (lambda: ops.subsample2d_backward(xp, w3, dyp),
                                 lambda: ops.subsample2d_backward(f64(xp), w3, f64(dyp)),
                                 lambda: ops.subsample2d_backward(xp, w3, bad)),
        "rbf_forward": (lambda: ops.rbf_forward(x2, w2), lambda: ops.rbf_forward(f64(x2), f64(w2)),
                        lambda: ops.rbf_forward(x2, bad)),
        "rbf_backward": (lambda: ops.rbf_backward(x2, w2, dy2), lambda: ops.rbf_backward(f64(x2), w2, f64(dy2)),
                         lambda: ops.rbf_backward(x2, w2, bad)),
        "rbf_map_loss": (lambda: ops.rbf_map_loss(logits, labels),
                         lambda: ops.rbf_map_loss(f64(logits), labels.astype(np.uint8)),
                         lambda: ops.rbf_map_loss(logits, labels + 16)),
        # any element-wise kind by name, BatchNorm, Dropout and global pooling
        "elementwise_forward": (lambda: ops.elementwise_forward("tanh", a), lambda: ops.elementwise_forward("relu", f64(a)),
                                lambda: ops.elementwise_forward("conv2d", a)),
        "elementwise_backward": (lambda: ops.elementwise_backward("sigmoid", a, a, a),
                                 lambda: ops.elementwise_backward("relu", f64(a), a, a),
                                 lambda: ops.elementwise_backward("tanh", a, a, bad)),
        "batchnorm_forward_train": (lambda: ops.batchnorm_forward_train(xp, w3, w3, w3, np.abs(w3)),
                                    lambda: ops.batchnorm_forward_train(f64(xp), None, None, None, None),
                                    lambda: ops.batchnorm_forward_train(xp, bad, None, None, None)),
        "batchnorm_forward_eval": (lambda: ops.batchnorm_forward_eval(xp, w3, w3, w3, np.abs(w3)),
                                   lambda: ops.batchnorm_forward_eval(f64(xp), None, None, f64(w3), np.abs(w3)),
                                   lambda: ops.batchnorm_forward_eval(xp, None, None, None, None)),
        "batchnorm_backward": (lambda: ops.batchnorm_backward(xp, xp, w3, np.abs(w3), w3),
                               lambda: ops.batchnorm_backward(f64(xp), xp, w3, np.abs(w3), None),
                               lambda: ops.batchnorm_backward(xp, bad, w3, w3, w3)),
        "dropout_forward": (lambda: ops.dropout_forward(a, 0.5, 1, 2, 3, 4), lambda: ops.dropout_forward(f64(a), 0.1),
                            lambda: ops.dropout_forward(a, 1.5)),
        "dropout_backward": (lambda: ops.dropout_backward(a, 0.5, 1, 2, 3, 4), lambda: ops.dropout_backward(f64(a), 0.1),
                             lambda: ops.dropout_backward(a, -0.5)),
        "global_avgpool2d_forward": (lambda: ops.global_avgpool2d_forward(xp),
                                     lambda: ops.global_avgpool2d_forward(f64(xp)),
                                     lambda: ops.global_avgpool2d_forward(bad)),
        "global_avgpool2d_backward": (lambda: ops.global_avgpool2d_backward(xp[:, :, :1, :1], xp.shape),
                                      lambda: ops.global_avgpool2d_backward(f64(xp[:, :, 0, 0]), list(xp.shape)),
                                      lambda: ops.global_avgpool2d_backward(bad, xp.shape)),
    }


OPS = op_calls()


def test_every_op_is_covered():
    names = {n for n in ops.__all__
             if n not in ("build_info", "get_num_threads", "set_num_threads", "simd_level", "set_simd_level")}
    assert names == set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_calls_do_not_leak(name):
    valid, converting, raising = OPS[name]

    def run(n):
        for i in range(n):
            valid()
            if i % 4 == 0:  # a quarter as many conversions and errors: they are slower
                converting()
                try:
                    raising()
                except (ValueError, TypeError):
                    pass
                else:
                    raise AssertionError(f"{name}: the bad call did not raise")

    grown = growth(run, 1000, CALLS)
    assert grown < LEAK_BOUND, (f"{name}: RSS grew by {grown / 2 ** 20:.2f} MiB over {CALLS} calls "
                                f"(bound {LEAK_BOUND / 2 ** 20:.0f} MiB)")
    print(f"\nLEAK {name}: RSS growth {grown / 2 ** 10:.0f} KiB over {CALLS} calls")


def _batches(count, rng):
    for _ in range(count):
        yield (rng.standard_normal((64, 1, 32, 32)).astype(np.float32),
               rng.integers(0, 10, 64))


def test_lenet5_layer_by_layer_training_does_not_leak():
    """forward, loss, backward and an SGD step through the Python layers, 200 times."""
    model = pylenet.LeNet5(seed=0)
    opt = pylenet.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = pylenet.CrossEntropyLoss()
    rng = np.random.default_rng(0)

    def run(n):
        for x, y in _batches(n, rng):
            out = model.forward(x)
            loss, dout = loss_fn(out, y)
            model.backward(dout)
            opt.step()
        assert np.isfinite(loss)

    grown = growth(run, 20, STEPS)
    assert grown < LEAK_BOUND, (f"RSS grew by {grown / 2 ** 20:.2f} MiB over {STEPS} steps "
                                f"(bound {LEAK_BOUND / 2 ** 20:.0f} MiB)")
    print(f"\nLEAK layer-by-layer LeNet5: RSS growth {grown / 2 ** 10:.0f} KiB over {STEPS} steps")


def test_lenet5_fused_training_does_not_leak():
    """pylenet.Trainer (the fused core path), SGD, 10 batches of 64 per epoch, 20 epochs."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (640, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 640)
    model = pylenet.LeNet5(seed=0)
    trainer = pylenet.Trainer(model, pylenet.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                              batch_size=64, progress=False)
    epochs = [0]

    def run(steps):
        epochs[0] += steps // 10
        trainer.fit((images, labels), epochs=epochs[0])

    grown = growth(run, 20, STEPS)
    assert trainer.epoch == (20 + STEPS) // 10
    assert grown < LEAK_BOUND, (f"RSS grew by {grown / 2 ** 20:.2f} MiB over {STEPS} steps "
                                f"(bound {LEAK_BOUND / 2 ** 20:.0f} MiB)")
    print(f"\nLEAK fused Trainer LeNet5: RSS growth {grown / 2 ** 10:.0f} KiB over {STEPS} steps")
