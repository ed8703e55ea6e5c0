"""Net.block_gradients, Net.mean_loss and sum_blocks: the core's batch split, handed out by whole
blocks, adds back up to train_step bit for bit (the basis of data-parallel training)."""
import numpy as np
import pytest

import pylenet
from pylenet import _core
from pylenet.engine import cpu_net_for

SHAPE = (1, 32, 32)


def _batch(N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, *SHAPE)).astype(np.float32), rng.integers(0, 10, N)


def _splits(nb):
    """Ways of cutting blocks [0, nb) into consecutive ranges: whole, halves, one by one, uneven."""
    return [[0, nb], [0, nb // 2, nb], list(range(nb + 1)), [0, min(1, nb), nb]]


def _in_ranges(fused, x, y, N, split, loss="cross_entropy"):
    """Each range [b0, b1) computed on its own samples; rows, loss sums and outputs concatenated."""
    nb = _core.batch_blocks(N)
    rows, sums, outs = [], [], []
    for b0, b1 in zip(split[:-1], split[1:]):
        s0, s1 = N * b0 // nb, N * b1 // nb
        g, l, o = fused.block_gradients(x[s0:s1], y[s0:s1], N, b0, b1, loss)
        assert g.shape == (b1 - b0, fused.gradient_size) and l.shape == (b1 - b0,) and o.shape == (s1 - s0, 10)
        rows.append(g), sums.append(l), outs.append(o)
    return np.concatenate(rows), np.concatenate(sums), np.concatenate(outs)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("N", [1, 7, 17, 64, 100])
@pytest.mark.parametrize("variant", ["modern", "lecun98"])
def test_blocks_add_up_to_train_step(N, threads, variant, restore_threads):
    _core.set_num_threads(threads)
    model = pylenet.LeNet5(seed=3, variant=variant)
    loss = "cross_entropy" if variant == "modern" else "rbf_map"
    fused = cpu_net_for(model, SHAPE)
    x, y = _batch(N)
    ref_loss, ref_out = fused.train_step(x, y, loss)
    ref = np.concatenate([p.grad.ravel() for p in fused.params])
    nb = _core.batch_blocks(N)
    for split in _splits(nb):
        rows, sums, out = _in_ranges(fused, x, y, N, split, loss)
        assert rows.shape[0] == nb
        assert np.array_equal(_core.sum_blocks(rows).view(np.uint32), ref.view(np.uint32)), split
        assert fused.mean_loss(sums, N, loss) == ref_loss
        assert np.array_equal(out, ref_out)
        # The chain of data-parallel training: a partial sum continued by the next range.
        partial = None
        for b0, b1 in zip(split[:-1], split[1:]):
            if b1 > b0:
                part = rows[b0:b1] if partial is None else np.concatenate([partial[None], rows[b0:b1]])
                partial = _core.sum_blocks(part)
        assert np.array_equal(partial, ref)


def test_gradient_size_is_lenet5s_parameter_count():
    fused = cpu_net_for(pylenet.LeNet5(), SHAPE)
    assert fused.gradient_size == sum(p.data.size for p in fused.params) == 61706


def test_set_gradients_writes_every_parameter():
    fused = cpu_net_for(pylenet.LeNet5(), SHAPE)
    row = np.arange(fused.gradient_size, dtype=np.float32)
    fused.set_gradients(row)
    assert np.array_equal(np.concatenate([p.grad.ravel() for p in fused.params]), row)
    with pytest.raises(ValueError, match="holds 3 floats"):
        fused.set_gradients(row[:3])


def test_outputs_are_overwritten_not_accumulated():
    """Calling twice gives the same rows (the block buffers are cleared first)."""
    fused = cpu_net_for(pylenet.LeNet5(seed=1), SHAPE)
    x, y = _batch(64)
    first = fused.block_gradients(x[8:24], y[8:24], 64, 1, 3)
    second = fused.block_gradients(x[8:24], y[8:24], 64, 1, 3)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_sum_blocks_order_and_single_row():
    parts = np.array([[1e8, 1.0], [1.0, 1e8], [-1e8, -1e8]], np.float32)
    # ((1e8 + 1) - 1e8) = 0 in float32, while 1 + (1e8 - 1e8) = 1: the order is the rows'.
    assert _core.sum_blocks(parts).tolist() == [0.0, 0.0]
    assert _core.sum_blocks(parts[:1]).tolist() == parts[0].tolist()
    with pytest.raises(ValueError, match="nblocks >= 1"):
        _core.sum_blocks(np.zeros((0, 3), np.float32))


def test_bad_block_ranges_and_inputs():
    fused = cpu_net_for(pylenet.LeNet5(), SHAPE)
    x, y = _batch(64)
    with pytest.raises(ValueError, match=r"blocks \[3, 9\) must lie in \[0, 8\]"):
        fused.block_gradients(x, y, 64, 3, 9)
    with pytest.raises(ValueError, match=r"x must hold the 16 samples of blocks \[0, 2\)"):
        fused.block_gradients(x, y, 64, 0, 2)
    with pytest.raises(ValueError, match="labels must have shape"):
        fused.block_gradients(x[:16], y[:15], 64, 0, 2)
    with pytest.raises(ValueError, match="labels"):
        fused.block_gradients(x[:16], np.full(16, 10), 64, 0, 2)
    with pytest.raises(ValueError, match="N"):
        fused.block_gradients(x[:0], y[:0], 0, 0, 0)
    with pytest.raises(ValueError, match="a batch of 64 has 8 blocks, got 3"):
        fused.mean_loss(np.zeros(3), 64)
    rows, sums, out = fused.block_gradients(x[:0], y[:0], 64, 2, 2)  # no blocks: nothing to do
    assert rows.shape == (0, fused.gradient_size) and sums.shape == (0,) and out.shape == (0, 10)
