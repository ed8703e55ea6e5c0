"""pylenet against PyTorch in one process: same MNIST batches, weights, optimizer and threads.

Validates first (same weights on the same batch: loss, logits, gradients and one SGD update
agree), then times, alternating the two libraries round by round and reporting the median:

- training from Python at batch 16, 64, 256: pylenet as users run it (Trainer.train_epoch over
  a DataLoader, i.e. gather + pad + normalise + fused.train_step + SGD.step per batch) and as
  a bare loop of fused.train_step + SGD.step over pre-made batches; torch's idiomatic loop
  (forward, F.cross_entropy, zero_grad, backward, step) over pre-made tensors made with
  torch.from_numpy from the same DataLoader batches;
- inference through each library's Python API at batch 1 (us/image) and 1000 (images/s):
  pylenet.predict on uint8 digits and the fused forward on a pre-normalised array against
  torch's model(x) under inference_mode on pre-normalised tensors;
- where a pylenet training step spends its time (loader, core train_step, optimizer, rest).

Prints one fixed-format line per variant and writes JSON (default build/compare_torch.json).
Usage: python bench/compare_torch.py [--quick] [--threads 1,2] [--data DIR] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch  # before pylenet: the process then uses torch's libgomp for both (same soname)
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the in-place build of this checkout, not an installed copy

import pylenet  # noqa: E402
from pylenet.data import DataLoader, pad_and_normalize  # noqa: E402
from pylenet.engine import fused_for  # noqa: E402
from pylenet.optim import SGD  # noqa: E402

LR, MOMENTUM = 0.01, 0.9
TRAIN_BATCHES = (16, 64, 256)


def parse_args(argv=None):
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and images (smoke run)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--data", default=default_data, help=f"MNIST folder (default {default_data})")
    ap.add_argument("--out", default=str(REPO / "build" / "compare_torch.json"), help="JSON output")
    ap.add_argument("--images", type=int, default=None, help="training images per timed epoch")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per library")
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or min(args.threads) < 1:
        ap.error("--threads needs counts >= 1")
    args.images = args.images or (1024 if args.quick else 4096)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.min_time = 0.05 if args.quick else 0.2  # seconds per timed inference block
    return args


# ---------------------------------------------------------------------------- setup

def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gomp = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                   if "libgomp" in line}) if Path("/proc/self/maps").exists() else []
    info = pylenet.ops.build_info()
    return {"cpu": model, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "pylenet": pylenet.__version__, "pylenet_simd_used": info["simd_used"],
            "pylenet_compiler": info["compiler"], "pylenet_openmp": info["openmp"],
            "libgomp_loaded": gomp, "loadavg_at_start": load_average()}


def load_average() -> float | None:
    """The 1-minute load average (other processes compete for the cores being timed)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def torch_lenet5() -> nn.Sequential:
    """torch.nn twin of pylenet.LeNet5(activation="relu", pooling="max")."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),     # 1@32x32 -> 6@28x28 -> 6@14x14
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),    # -> 16@10x10 -> 16@5x5
        nn.Flatten(),                                       # -> 400
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


class Pair:
    """A pylenet LeNet5 and its torch twin, both resettable to the same initial weights."""

    def __init__(self, seed: int = 0):
        self.model = pylenet.LeNet5(seed=seed)
        self.init = [p.data.copy() for p in self.model.parameters()]
        self.tmodel = torch_lenet5()
        self.tparams = list(self.tmodel.parameters())
        assert [tuple(t.shape) for t in self.tparams] == [a.shape for a in self.init]
        self.reset()

    def reset(self):
        for p, a in zip(self.model.parameters(), self.init):
            p.data[...] = a  # in place: the fused engine keeps the parameter objects
        with torch.no_grad():
            for t, a in zip(self.tparams, self.init):
                t.copy_(torch.from_numpy(a))


def batches(images, labels, batch_size):
    """The epoch-0 batches a DataLoader(shuffle=True, seed=0) yields, as numpy and torch."""
    loader = DataLoader(images, labels, batch_size, shuffle=True, seed=0)
    np_batches = list(loader)
    return loader, np_batches, [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in np_batches]


# ---------------------------------------------------------------------------- validation

def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def validate(pair: Pair, x: np.ndarray, y: np.ndarray) -> dict:
    """Same weights, same batch: loss, logits, every gradient and one SGD update agree."""
    pair.reset()
    fused = fused_for(pair.model)
    opt = SGD(pair.model.parameters(), lr=LR, momentum=MOMENTUM)
    loss, out = fused.train_step(x, y, "cross_entropy")
    tout = pair.tmodel(torch.from_numpy(x))
    tloss = F.cross_entropy(tout, torch.from_numpy(y))
    topt = torch.optim.SGD(pair.tparams, lr=LR, momentum=MOMENTUM)
    topt.zero_grad()
    tloss.backward()
    grads = max(rel_err(p.grad, t.grad.numpy()) for p, t in zip(pair.model.parameters(), pair.tparams))
    opt.step()
    topt.step()
    with torch.no_grad():
        update = max(rel_err(p.data - a, t.numpy() - a)
                     for p, t, a in zip(pair.model.parameters(), pair.tparams, pair.init))
    res = {"batch": len(y), "loss_pylenet": float(loss), "loss_torch": tloss.item(),
           "loss_rel_err": abs(float(loss) - tloss.item()) / abs(tloss.item()),
           "logits_rel_err": rel_err(out, tout.detach().numpy()), "grads_rel_err": grads,
           "update_rel_err": update}
    tol = {"loss_rel_err": 1e-5, "logits_rel_err": 1e-4, "grads_rel_err": 1e-3, "update_rel_err": 1e-3}
    res["ok"] = all(res[k] <= v for k, v in tol.items())
    res["tolerances"] = tol
    pair.reset()
    return res


# ---------------------------------------------------------------------------- timed runs

def run_pylenet_epoch(pair: Pair, loader: DataLoader, threads: int) -> float:
    """Seconds for Trainer.train_epoch over the loader's epoch 0 (what fit() runs per epoch)."""
    pair.reset()
    trainer = pylenet.Trainer(pair.model, SGD(pair.model.parameters(), lr=LR, momentum=MOMENTUM),
                              batch_size=loader.batch_size, progress=False, threads=threads)
    loader.set_epoch(0)
    t0 = time.perf_counter()
    trainer.train_epoch(loader)
    return time.perf_counter() - t0


def run_pylenet_premade(pair: Pair, np_batches) -> float:
    """Seconds for fused.train_step + SGD.step over pre-made batches (no loader)."""
    pair.reset()
    fused = fused_for(pair.model)
    opt = SGD(pair.model.parameters(), lr=LR, momentum=MOMENTUM)
    t0 = time.perf_counter()
    for x, y in np_batches:
        fused.train_step(x, y, "cross_entropy")
        opt.step()
    return time.perf_counter() - t0


def run_torch_epoch(pair: Pair, t_batches) -> float:
    """Seconds for torch's idiomatic loop over pre-made tensors (loss read back, as Trainer does)."""
    pair.reset()
    model = pair.tmodel.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    total = 0.0
    t0 = time.perf_counter()
    for x, y in t_batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    return time.perf_counter() - t0


def breakdown(pair: Pair, loader: DataLoader, np_batches) -> dict:
    """Seconds per epoch of each part of a pylenet epoch, measured one part at a time."""
    loader.set_epoch(0)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    t_loader = time.perf_counter() - t0
    pair.reset()
    fused = fused_for(pair.model)
    t0 = time.perf_counter()
    for x, y in np_batches:
        fused.train_step(x, y, "cross_entropy")
    t_step = time.perf_counter() - t0
    opt = SGD(pair.model.parameters(), lr=LR, momentum=MOMENTUM)
    opt.step()  # the first step allocates the momentum buffers, as in the epoch
    t0 = time.perf_counter()
    for _ in np_batches[1:]:
        opt.step()
    t_opt = (time.perf_counter() - t0) * len(np_batches) / max(len(np_batches) - 1, 1)
    pair.reset()
    return {"loader": t_loader, "train_step": t_step, "optimizer": t_opt}


def per_call(f, min_time: float) -> float:
    """Seconds per call of f, over enough calls to fill min_time (after one warm-up call)."""
    f()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n
        n = max(n * 2, int(n * min_time / max(t, 1e-9) * 1.2))


# ---------------------------------------------------------------------------- main

def median(xs):
    return statistics.median(xs)


def row(results, workload, threads, unit, py_rounds, th_rounds, higher_is_better):
    """Adds a result; rounds are already in `unit`. ratio = pylenet speed / torch speed."""
    py, th = median(py_rounds), median(th_rounds)
    ratio = py / th if higher_is_better else th / py
    results.append({"workload": workload, "threads": threads, "unit": unit, "pylenet": py,
                    "torch": th, "ratio": ratio, "pylenet_rounds": py_rounds, "torch_rounds": th_rounds})
    print(f"{workload:<34} | threads={threads} | {unit:<6} | pylenet {py:11.1f} | torch {th:11.1f} | "
          f"ratio {ratio:5.2f}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_interop_threads(1)
    machine = machine_info()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable); "
          f"python {machine['python']}, numpy {machine['numpy']}, torch {machine['torch']}; "
          f"pylenet {machine['pylenet']} simd_used={machine['pylenet_simd_used']} "
          f"openmp={machine['pylenet_openmp']}; libgomp: {', '.join(machine['libgomp_loaded']) or '-'}")
    load, usable = machine["loadavg_at_start"], machine["cores_usable"] or 1
    if load is not None and load > 0.5:
        print(f"warning: load average {load:.2f} on {usable} usable cores: other processes are "
              f"running, so timings are noisy (multi-thread ones most: a descheduled OpenMP thread "
              f"stalls every barrier)")

    all_images, labels = pylenet.load_mnist("train", root=args.data)
    n = min(args.images, len(all_images))
    images, labels = all_images[:n], labels[:n]
    print(f"data: first {n} MNIST training images from {args.data}; {args.rounds} rounds, "
          f"median reported; ratio = pylenet speed / torch speed", flush=True)

    pair = Pair(seed=0)
    torch.set_num_threads(args.threads[0])
    pylenet.ops.set_num_threads(args.threads[0])
    _, first, _ = batches(images[:64], labels[:64], 64)
    check = validate(pair, *first[0])
    print(f"check first batch (64): loss pylenet {check['loss_pylenet']:.6f} torch {check['loss_torch']:.6f} "
          f"(rel {check['loss_rel_err']:.1e}); rel err logits {check['logits_rel_err']:.1e}, grads "
          f"{check['grads_rel_err']:.1e}, SGD update {check['update_rel_err']:.1e}: "
          f"{'ok' if check['ok'] else 'FAIL'}", flush=True)
    report = {"machine": machine, "config": {"images": n, "rounds": args.rounds, "threads": args.threads,
                                             "quick": args.quick, "lr": LR, "momentum": MOMENTUM},
              "validation": check, "results": [], "breakdown": []}
    if not check["ok"]:
        print("FAIL: pylenet and torch disagree on the same batch; nothing timed")
        write(report, args.out)
        return 1

    results = report["results"]
    one, digits1000 = all_images[0], all_images[:1000]  # uint8 (28, 28) and (1000, 28, 28)
    x1 = pad_and_normalize(one)                          # float32 (1, 1, 32, 32)
    x1000 = pad_and_normalize(digits1000)
    t1, t1000 = torch.from_numpy(x1), torch.from_numpy(x1000)
    fused = fused_for(pair.model)

    for threads in args.threads:
        torch.set_num_threads(threads)
        pylenet.ops.set_num_threads(threads)
        for bs in TRAIN_BATCHES:
            loader, np_b, t_b = batches(images, labels, bs)
            run_pylenet_epoch(pair, loader, threads), run_torch_epoch(pair, t_b)  # warm-up
            py, py_pre, th, parts = [], [], [], []
            for _ in range(args.rounds):
                epoch = run_pylenet_epoch(pair, loader, threads)
                py.append(n / epoch)
                th.append(n / run_torch_epoch(pair, t_b))
                py_pre.append(n / run_pylenet_premade(pair, np_b))
                parts.append({"epoch": epoch, **breakdown(pair, loader, np_b)})
            row(results, f"train b{bs} (Trainer+DataLoader)", threads, "img/s", py, th, True)
            row(results, f"train b{bs} (pre-made batches)", threads, "img/s", py_pre, th, True)
            # Each part's fastest round over the fastest epoch: noise only ever adds time, so
            # minima are the steadiest estimate of each share. The rest is train_epoch's own
            # Python (loss and accuracy bookkeeping, the disabled progress bar).
            best = {k: min(p[k] for p in parts) for k in parts[0]}
            share = {k: best[k] / best["epoch"] for k in ("train_step", "loader", "optimizer")}
            share["rest"] = 1.0 - sum(share.values())
            steps = len(np_b)
            step_ms = 1e3 * best["epoch"] / steps
            report["breakdown"].append({"batch": bs, "threads": threads, "steps": steps,
                                        "step_ms": step_ms, "share": share, "rounds": parts})
            print(f"  pylenet epoch b{bs} threads={threads}: {step_ms:8.3f} ms/step = core train_step "
                  f"{100 * share['train_step']:5.1f}% + DataLoader {100 * share['loader']:5.1f}% + "
                  f"SGD.step {100 * share['optimizer']:5.1f}% + rest of train_epoch "
                  f"{100 * share['rest']:5.1f}%  (fastest of {args.rounds} rounds)", flush=True)

        # Inference, batch 1: us per image (lower is better), and batch 1000: images/s.
        pair.tmodel.eval()
        with torch.inference_mode():
            tfwd1 = lambda: pair.tmodel(t1)  # noqa: E731
            tfwd1000 = lambda: pair.tmodel(t1000)  # noqa: E731
            cases = [
                ("infer b1 predict(uint8)", 1, lambda: pylenet.predict(pair.model, one), tfwd1),
                ("infer b1 fused.forward(float)", 1, lambda: fused.forward(x1), tfwd1),
                ("infer b1000 predict(uint8)", 1000, lambda: pylenet.predict(pair.model, digits1000), tfwd1000),
                ("infer b1000 fused.forward(float)", 1000, lambda: fused.forward(x1000), tfwd1000),
            ]
            for name, bs, fp, ft in cases:
                py, th = [], []
                for _ in range(args.rounds):
                    py.append(per_call(fp, args.min_time))
                    th.append(per_call(ft, args.min_time))
                if bs == 1:
                    row(results, name, threads, "us/img", [1e6 * t for t in py], [1e6 * t for t in th], False)
                else:
                    row(results, name, threads, "img/s", [bs / t for t in py], [bs / t for t in th], True)
        pair.tmodel.train()

    write(report, args.out)
    return 0


def write(report: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
