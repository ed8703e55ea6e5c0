"""SIMD levels: what build_info reports, forcing a level (PYLENET_SIMD at import, or
set_simd_level), refusing one the CPU cannot run, and every runnable level computing the same
LeNet-5 step as the float64 reference, bit-identically for any thread count."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from pylenet import LeNet5, ops
from pylenet.engine import cpu_net_for
from reference import conv2d_forward as conv2d_forward_ref
from reference import linear_forward as linear_forward_ref

INFO = ops.build_info()
RUNNABLE = INFO["simd_supported"]


@pytest.fixture
def restore_level():
    before = ops.simd_level()
    yield
    ops.set_simd_level(before)


def run_python(code, **env):
    """Runs `code` in a fresh interpreter from the repository root with extra environment."""
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def test_build_info_reports_levels():
    compiled = INFO["simd_compiled"]
    assert compiled[-1] == "scalar" and set(RUNNABLE) <= set(compiled)
    assert INFO["simd_used"] == ops.simd_level() and INFO["simd_used"] in RUNNABLE
    assert set(compiled) <= {"avx512", "avx2", "sse2", "neon", "scalar"}


@pytest.mark.parametrize("level", RUNNABLE)
def test_environment_forces_each_level(level):
    proc = run_python("import pylenet.ops as o; print(o.simd_level(), o.build_info()['simd_used'])",
                      PYLENET_SIMD=level)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [level, level]


def test_auto_picks_the_best_runnable_level():
    proc = run_python("import pylenet.ops as o; print(o.simd_level())", PYLENET_SIMD="auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == RUNNABLE[0]


@pytest.mark.parametrize("value, words", [("avx1024", "unknown SIMD level"),
                                          ("AVX2 ", "unknown SIMD level")])
def test_a_bad_level_fails_the_import_clearly(value, words):
    proc = run_python("import pylenet", PYLENET_SIMD=value)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and words in last and "choose auto" in last, last


def test_a_level_of_another_architecture_is_refused():
    other = "neon" if "sse2" in INFO["simd_compiled"] else "avx2"
    proc = run_python("import pylenet", PYLENET_SIMD=other)
    assert proc.returncode != 0
    assert "not compiled into this build" in proc.stderr, proc.stderr


def test_set_simd_level_refuses_without_changing_anything(restore_level):
    before = ops.simd_level()
    with pytest.raises(ValueError, match="unknown SIMD level"):
        ops.set_simd_level("avx1024")
    with pytest.raises(TypeError):
        ops.set_simd_level(3)
    assert ops.simd_level() == before


def lenet_step(level, threads, seed=0):
    """Loss, logits and gradients of one fused training step at `level` on `threads` threads."""
    ops.set_simd_level(level)
    before = ops.get_num_threads()
    ops.set_num_threads(threads)
    try:
        model = LeNet5(seed=seed)
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((37, 1, 32, 32)).astype(np.float32)
        labels = rng.integers(0, 10, 37)
        net = cpu_net_for(model)
        loss, out = net.train_step(x, labels)
        grads = [p.grad.copy() for p in model.parameters()]
        return loss, out, grads
    finally:
        ops.set_num_threads(before)


@pytest.mark.parametrize("level", RUNNABLE)
def test_each_level_is_thread_count_invariant(level, restore_level):
    loss1, out1, g1 = lenet_step(level, 1)
    loss2, out2, g2 = lenet_step(level, 2)
    assert loss1 == loss2
    np.testing.assert_array_equal(out1, out2)
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("level", RUNNABLE)
def test_each_level_matches_the_others_to_float32_rounding(level, restore_level):
    loss0, out0, g0 = lenet_step(RUNNABLE[0], 1)
    loss, out, g = lenet_step(level, 1)
    assert abs(loss - loss0) <= 1e-5 * abs(loss0)
    np.testing.assert_allclose(out, out0, rtol=1e-4, atol=1e-5)
    for a, b in zip(g, g0):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())


@pytest.mark.parametrize("level", RUNNABLE)
@pytest.mark.parametrize("shape, stride, pad", [((3, 2, 9, 11), 1, 1), ((2, 3, 17, 13), 2, 1),
                                                ((1, 1, 32, 32), 1, 0)])
def test_each_level_conv_and_linear_match_float64(level, shape, stride, pad, restore_level):
    ops.set_simd_level(level)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((5, shape[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    y = ops.conv2d_forward(x, w, b, stride, pad)
    want = conv2d_forward_ref(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                              stride, pad)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    a = rng.standard_normal((7, 37)).astype(np.float32)
    wl = rng.standard_normal((19, 37)).astype(np.float32)
    np.testing.assert_allclose(ops.linear_forward(a, wl, None),
                               linear_forward_ref(a.astype(np.float64), wl.astype(np.float64), None),
                               rtol=1e-5, atol=1e-5)
