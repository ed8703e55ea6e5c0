"""A first, small run of pylenet's GPU network on the device, checked against its host emulation.

bench/gpu_check.sh runs it right after the build, so that a program that cannot be captured or
launched shows in seconds, with CUDA's message, before the long parts; and again under
compute-sanitizer's memcheck, which is why it is small. Every kind of program the network
captures runs: inference (forward, predict_u8) at two batch sizes, training steps from host
batches (captured, then replayed), the device dataset's steps (whole batches and a partial last
one), and the backward and loss test hooks. Each result is compared with the emulation's
(pylenet._core.GpuNet(emulate=True)) at float32 tolerances. Then a batch the device has no room
for (cudaMalloc out of memory, caught) must leave the network working: its captured programs
replayed, new ones captured and launched, a training step taken (--skip-oom leaves this out, as
under compute-sanitizer, which reports the failed cudaMalloc).

Exits 0 when all agree, 1 at the first disagreement or CUDA error (printed), 2 when the device
cannot be used (CUDA's reason printed). --smoke puts the emulation in the device's place, so
that the script itself runs anywhere (`make test-cuda-build`), and skips the out-of-memory part.
Usage: python bench/gpu_probe.py [--smoke] [--skip-oom]
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

if importlib.util.find_spec("pylenet") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the in-place build of this checkout
import pylenet  # noqa: E402
from pylenet import Conv2d, Flatten, LeNet5, Linear, MaxPool2d, Sequential, _core  # noqa: E402
from pylenet.data import pad_and_normalize  # noqa: E402
from pylenet.engine import describe  # noqa: E402
from pylenet.batches import _LUT  # noqa: E402


def close(what: str, device, emulated, rtol: float = 1e-4) -> None:
    """Raises AssertionError naming `what` unless the two agree at float32 tolerance."""
    device, emulated = np.asarray(device), np.asarray(emulated)
    scale = max(1.0, float(np.abs(emulated).max())) if emulated.size else 1.0
    np.testing.assert_allclose(device, emulated, rtol=rtol, atol=rtol * scale, err_msg=what)


def nets(model, smoke: bool):
    """(device, emulated) GpuNets of `model`, holding its parameters, with SGD and momentum
    (smoke: the first emulated too)."""
    out = []
    for emulate in (smoke, True):
        net = _core.GpuNet([describe(layer) for _, layer in model.layers], (1, 32, 32), emulate=emulate)
        net.set_params([p.data for p in model.parameters()])
        net.set_optimizer("sgd", momentum=0.9)
        out.append(net)
    return out


def out_of_memory_then_on() -> None:
    """A forward pass whose second activation needs about 300 GiB fails with CUDA's out of
    memory; the same network then replays the program it captured before, captures and launches
    new ones (a caught CUDA error must not fail the next launch, and no program may keep memory
    that the failed resize released) and trains."""
    model = Sequential(Conv2d(1, 64, 1, rng=np.random.default_rng(1)), MaxPool2d(16, 16), Flatten(),
                       Linear(64 * 64 * 64, 10, rng=np.random.default_rng(2)))
    side, huge = 1024, 1200  # 1200 samples of 64 x 1024 x 1024 floats
    net = _core.GpuNet([describe(layer) for _, layer in model.layers], (1, side, side), emulate=False)
    net.set_params([p.data for p in model.parameters()])
    x = np.zeros((huge, 1, side, side), np.float32)  # pages never touched: the device fails first
    x[:3] = np.random.default_rng(3).standard_normal((3, 1, side, side))
    before = net.forward(x[:2])
    try:
        net.forward(x)
    except RuntimeError as e:
        if "out of memory" not in str(e):
            raise
        print(f"gpu_probe: out of memory as planned ({e})")
    else:
        raise AssertionError(f"a batch of {huge} x 64 x {side} x {side} floats fit on the device")
    assert np.array_equal(net.forward(x[:2]), before), "the captured program after out of memory"
    assert np.array_equal(net.forward(x[:3])[:2], before), "a program captured after out of memory"
    loss, _, applied = net.train_step(x[:3], np.array([1, 2, 3]), 0.01)
    assert applied and np.isfinite(loss), ("a training step after out of memory", loss, applied)


def main(argv: list[str]) -> int:
    if not set(argv) <= {"--smoke", "--skip-oom"}:
        print("usage: python bench/gpu_probe.py [--smoke] [--skip-oom]", file=sys.stderr)
        return 2
    smoke = "--smoke" in argv
    info = pylenet.cuda_info()
    if not info["usable"] and not smoke:
        print(f"gpu_probe: no usable GPU: {info['reason']}")
        return 2
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 40)
    x = pad_and_normalize(images)
    dev, emu = nets(LeNet5(seed=0), smoke)
    try:
        for n in (3, 16):  # two inference programs of each kind
            close(f"forward, batch {n}", dev.forward(x[:n]), emu.forward(x[:n]))
            close(f"predict_u8, batch {n}", dev.predict_u8(images[:n], _LUT, 2), emu.predict_u8(images[:n], _LUT, 2))
        for step in range(3):  # captured at the first step, replayed after
            batch = slice(8 * step, 8 * step + 16)
            (dl, dout, _), (el, eout, _) = (net.train_step(x[batch], labels[batch], 0.05) for net in (dev, emu))
            close(f"train_step {step}: loss", dl, el, rtol=1e-5)
            close(f"train_step {step}: outputs", dout, eout)
        order = rng.permutation(40)
        lrs = np.full(3, 0.05, np.float32)
        for net in (dev, emu):
            net.set_dataset(images, labels, _LUT, 2)
        (dls, dok, dap), (els, eok, eap) = (net.train_indices(order, 16, lrs, "cross_entropy", False)
                                            for net in (dev, emu))
        close("train_indices: losses", dls, els, rtol=1e-5)
        assert dap.tolist() == eap.tolist() and dev.optimizer_steps == emu.optimizer_steps == 6, (
            "train_indices: applied steps", dap, eap, dev.optimizer_steps, emu.optimizer_steps)
        for i, (p, q) in enumerate(zip(dev.get_params(), emu.get_params())):
            close(f"parameter {i} after 6 steps", p, q)
        dy = rng.standard_normal((5, 10)).astype(np.float32)
        (ddx, dgrads), (edx, egrads) = (net.backward(x[:5], dy) for net in (dev, emu))
        close("backward: dx", ddx, edx)
        for i, (g, h) in enumerate(zip(dgrads, egrads)):
            close(f"backward: gradient {i}", g, h)
        out = 4 * rng.standard_normal((7, 10)).astype(np.float32)
        (dv, dd), (ev, ed) = (net.loss(out, labels[:7], "cross_entropy") for net in (dev, emu))
        close("loss hook", dv, ev, rtol=1e-5)
        close("loss hook: gradient", dd, ed)
        assert dev.optimizer_steps == 6, ("the loss hook counted as a step", dev.optimizer_steps)
        if not smoke and "--skip-oom" not in argv:
            out_of_memory_then_on()
    except (AssertionError, RuntimeError) as e:
        print(f"gpu_probe: FAILED: {type(e).__name__}: {e}")
        return 1
    print(f"gpu_probe: the device agrees with the emulation on every program "
          f"({time.perf_counter() - t0:.1f} s, {'smoke: emulated' if smoke else info['name']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
