"""pylenet side by side with its peers: PyTorch eager, torch.compile and JAX, in one process each.

Same MNIST batches, same initial weights (pylenet.LeNet5(seed=0)), same SGD (lr 0.01, momentum
0.9), same thread count. Each peer is validated first (same weights, same batch of 64: loss,
logits, gradients and one SGD update must agree with pylenet's); a peer that disagrees is not
timed and the script exits 1. Then the libraries are timed in alternating rounds (the order
rotates each round) and the median is reported:

- training at batch 16, 64, 256 (--quick: 64): pylenet as users run it (Trainer.train_epoch
  over a DataLoader) and as a bare loop of fused.train_step + SGD.step over pre-made batches;
  torch eager's idiomatic loop (forward, F.cross_entropy, zero_grad, backward, step, loss.item())
  over tensors made with torch.from_numpy from the same batches; the same loop on
  torch.compile(model) (inductor, default mode, dynamic=False so that every batch size gets its
  own static graph, as jax.jit specialises); JAX: one jax.jit step (LeNet-5 forward with
  lax.conv_general_dilated and lax.reduce_window, cross-entropy, grad, SGD momentum update) over
  pre-made device arrays, the loss read back every step as the others do;
  then where a pylenet epoch spends its time (DataLoader, core train_step, SGD.step, rest);
- inference at batch 1 (us/image) and 1000 (images/s): pylenet.predict on uint8 digits and the
  fused forward on a pre-normalised array; torch eager and compiled model(x) under
  inference_mode; the jitted JAX forward.
Compile time (torch.compile: the first epoch or call minus a steady one; JAX: lower + compile)
is reported apart from the steady-state figures, which never include it.

Threads: every thread count runs in its own worker process, pinned (sched_setaffinity) to that
many of the usable cores, because XLA sizes its thread pools once, from the process's CPU mask,
when JAX starts, and has no flag for exactly n threads; for 1 thread XLA_FLAGS also gets
--xla_cpu_multi_thread_eigen=false (on jaxlib 0.10 that flag alone keeps a matmul loop at
cpu/wall 0.96; with the TensorFlow-era "intra_op_parallelism_threads=1" after it, the loop still
ran at 1.68). pylenet and torch get set_num_threads(n). Each row reports
cpu/wall (process CPU seconds per wall second while timed) to show how many cores a library
really kept busy.

Prints one fixed-format line per (workload, library, variant), then a ratio table (pylenet speed
over each peer's and over the fastest peer's), and writes JSON (default build/compare_peers.json).
Usage: python bench/compare_peers.py [--quick] [--threads 1,2] [--simd LEVEL] [--peers-isa match|native]
       [--peers torch,torch.compile,jax] [--batches 16,64,256] [--data DIR] [--out PATH]
--simd sets PYLENET_SIMD before pylenet is imported. pylenet is imported from wherever Python
finds it (PYTHONPATH, an install), else from this checkout (--checkout forces the checkout).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LR, MOMENTUM = 0.01, 0.9
PEERS = ("torch", "torch.compile", "jax")
# pylenet level -> (ONEDNN_MAX_CPU_ISA, inductor's cpp.simdlen, XLA --xla_cpu_max_isa): what
# the peers' convolutions, matrix products and generated kernels may use. ATEN_CPU_CAPABILITY is
# left alone (torch 2.13's inductor fails its own bounds check with it), so torch's element-wise
# ATen kernels keep the CPU's best level.
PEER_ISA = {"avx2": ("AVX2", 8, "AVX2"), "sse2": ("SSE41", 4, "SSE4_2")}
TOL = {"loss": 1e-5, "logits": 1e-4, "grads": 1e-3, "update": 1e-3}  # relative errors
HEADLINE = ("train b64", 2)


def parse_args(argv=None):
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 64 only, fewer rounds and images")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--simd", default=None, help="pylenet SIMD level (avx512, avx2, sse2, neon, auto)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"peers to run (default {','.join(PEERS)})")
    ap.add_argument("--peers-isa", choices=("match", "native"), default="match",
                    help="with --simd avx2/sse2, cap the peers' instruction set to the same level "
                         "(ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, XLA's --xla_cpu_max_isa), as on "
                         "a CPU without AVX-512 (default match); native: leave them at their best")
    ap.add_argument("--batches", default=None, help="training batch sizes (default 16,64,256; quick 64)")
    ap.add_argument("--data", default=default_data, help=f"MNIST folder (default {default_data})")
    ap.add_argument("--out", default=str(REPO / "build" / "compare_peers.json"), help="JSON output")
    ap.add_argument("--images", type=int, default=None, help="training images per timed epoch")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per variant")
    ap.add_argument("--checkout", action="store_true", help="import pylenet from this checkout")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one thread count
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if not args.threads or min(args.threads) < 1:
        ap.error("--threads needs counts >= 1")
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(args.peers) - set(PEERS))
    if unknown:
        ap.error(f"--peers: unknown {unknown}; choose from {list(PEERS)}")
    batches = args.batches or ("64" if args.quick else "16,64,256")
    args.batches = [int(b) for b in batches.split(",") if b.strip()]
    args.images = args.images or (1024 if args.quick else 4096)
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.min_time = 0.05 if args.quick else 0.2  # seconds per timed inference block
    return args


def worker_argv(args, threads: int, out: str) -> list[str]:
    """The command line of the worker process for one thread count."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(threads),
            "--out", out, "--peers", ",".join(args.peers) or ",", "--data", args.data,
            "--batches", ",".join(map(str, args.batches)), "--images", str(args.images),
            "--rounds", str(args.rounds)]
    if args.simd:
        argv += ["--simd", args.simd]
    argv += ["--peers-isa", args.peers_isa]
    if args.quick:
        argv.append("--quick")
    if args.checkout:
        argv.append("--checkout")
    return argv


# ---------------------------------------------------------------------------- parent

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return Worker(args).run()
    workers, rc = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            out = str(Path(tmp) / f"threads{threads}.json")
            code = subprocess.call(worker_argv(args, threads, out))
            if code != 0:
                print(f"worker threads={threads} exited with {code}", flush=True)
                rc = 1
            if Path(out).exists():
                workers.append(json.loads(Path(out).read_text()))
    results = [r for w in workers for r in w["results"]]
    report = {"machine": workers[0]["machine"] if workers else None,
              "config": {"threads": args.threads, "batches": args.batches, "images": args.images,
                         "rounds": args.rounds, "quick": args.quick, "peers": args.peers,
                         "simd": args.simd, "lr": LR, "momentum": MOMENTUM, "tolerances": TOL},
              "workers": [{k: w[k] for k in w if k not in ("results", "machine")} for w in workers],
              "results": results, "ratios": ratio_table(results)}
    write(report, args.out)
    return rc


def speed(row: dict) -> float:
    """Higher is faster, whatever the unit."""
    return 1.0 / row["median"] if row["unit"] == "us/img" else row["median"]


def ratio_table(results: list[dict]) -> list[dict]:
    """pylenet speed / peer speed for every pylenet variant and workload; prints the table."""
    peers = [p for p in PEERS if any(r["library"] == p for r in results)]
    keys = sorted({(r["workload"], r["threads"]) for r in results},
                  key=lambda k: (k != HEADLINE, k[0].startswith("infer"), int(k[0].split("b")[-1]), k[1]))
    table = []
    if not results:
        return table
    print("\nratios: pylenet speed / peer speed (> 1: pylenet faster); fastest = the fastest peer")
    print(f"{'workload':<12} {'threads':<8} {'pylenet variant':<28} " +
          " ".join(f"{p:>13}" for p in peers) + f"  {'fastest peer':>24}")
    for workload, threads in keys:
        rows = [r for r in results if r["workload"] == workload and r["threads"] == threads]
        peer_rows = {r["library"]: r for r in rows if r["library"] != "pylenet"}
        fastest = max(peer_rows.values(), key=speed) if peer_rows else None
        for mine in (r for r in rows if r["library"] == "pylenet"):
            ratios = {p: speed(mine) / speed(peer_rows[p]) for p in peer_rows}
            entry = {"workload": workload, "threads": threads, "variant": mine["variant"],
                     "ratios": ratios, "fastest_peer": fastest["library"] if fastest else None,
                     "ratio_fastest": speed(mine) / speed(fastest) if fastest else None,
                     "headline": (workload, threads) == HEADLINE}
            table.append(entry)
            cells = " ".join(f"{ratios[p]:12.2f}x" if p in ratios else f"{'-':>13}" for p in peers)
            best = f"{entry['ratio_fastest']:7.2f}x ({entry['fastest_peer']})" if fastest else "-"
            mark = "  <- headline" if entry["headline"] else ""
            print(f"{workload:<12} {threads:<8} {mine['variant']:<28} {cells}  {best:>24}{mark}")
    return table


def write(report: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


# ---------------------------------------------------------------------------- helpers

def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(f):
    """(wall seconds, CPU seconds) of one call of f."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    f()
    return time.perf_counter() - t0, cpu_seconds() - c0


def per_call(f, min_time: float):
    """(seconds per call, cpu/wall) of f over enough calls to fill min_time, after a warm-up."""
    f()
    n = 1
    while True:
        c0, t0 = cpu_seconds(), time.perf_counter()
        for _ in range(n):
            f()
        t, c = time.perf_counter() - t0, cpu_seconds() - c0
        if t >= min_time:
            return t / n, c / t
        n = max(n * 2, int(n * min_time / max(t, 1e-9) * 1.2))


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (Linux /proc/cpuinfo: a VM's
    name may be only "AMD EPYC", and the family tells Zen 4 (25) from Zen 5 (26)), else
    platform's processor string."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "cpu family", "model") and key not in fields:
                fields[key] = value.strip()
            if not line.strip() and fields:  # the first processor's block is enough
                break
    except OSError:
        pass
    if "model name" in fields:
        extra = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model") if k in fields)
        return f"{fields['model name']} ({extra})" if extra else fields["model name"]
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (other processes compete for the cores being timed)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------- peers

def pylenet_reference(pylenet, x, y):
    """pylenet's loss, logits, gradients and SGD update on one batch (the values peers must match)."""
    from pylenet.engine import cpu_net_for
    from pylenet.optim import SGD
    model = pylenet.LeNet5(seed=0)
    init = [p.data.copy() for p in model.parameters()]
    loss, out = cpu_net_for(model).train_step(x, y, "cross_entropy")
    grads = [p.grad.copy() for p in model.parameters()]
    SGD(model.parameters(), lr=LR, momentum=MOMENTUM).step()
    return {"loss": float(loss), "logits": np.array(out), "grads": grads,
            "update": [p.data - a for p, a in zip(model.parameters(), init)]}


class TorchEager:
    """torch.nn twin of pylenet.LeNet5(activation="relu", pooling="max"), trained eagerly."""

    library = "torch"
    train_variant = "eager loop, pre-made tensors"
    infer_variant = "model(x), inference_mode"

    def __init__(self, torch, init):
        self.torch, self.F = torch, torch.nn.functional
        nn = torch.nn
        self.model = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),     # 1@32x32 -> 6@28x28 -> 6@14x14
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),    # -> 16@10x10 -> 16@5x5
            nn.Flatten(),                                       # -> 400
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10))
        self.params = list(self.model.parameters())
        assert [tuple(t.shape) for t in self.params] == [a.shape for a in init]
        self.init = init
        self.module = self.model
        self.compile_log = {}  # (kind, shape) -> seconds spent compiling, wherever it happened
        self.reset()

    def reset(self):
        with self.torch.no_grad():
            for t, a in zip(self.params, self.init):
                t.copy_(self.torch.from_numpy(a))

    def check(self, x, y) -> dict:
        self.reset()
        model = self.module.train()
        tx, ty = self.torch.from_numpy(x), self.torch.from_numpy(y)
        opt = self.torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)
        opt.zero_grad()
        t0 = time.perf_counter()
        out = model(tx)
        loss = self.F.cross_entropy(out, ty)
        loss.backward()
        first = time.perf_counter() - t0
        grads = [p.grad.numpy().copy() for p in self.params]
        opt.step()
        update = [p.detach().numpy() - a for p, a in zip(self.params, self.init)]
        res = {"loss": loss.item(), "logits": out.detach().numpy(), "grads": grads, "update": update}
        steady, _ = timed(lambda: self.F.cross_entropy(model(tx), ty).backward())  # grads unused
        self.log_compile(("train", tuple(x.shape)), first, steady)
        opt.zero_grad()
        self.reset()
        return res

    def prepare_train(self, np_batches):
        """Makes the batches; returns the compile seconds (None: nothing compiled)."""
        self.batches = [(self.torch.from_numpy(x), self.torch.from_numpy(y)) for x, y in np_batches]
        first, _ = timed(self.train_epoch)
        steady, _ = timed(self.train_epoch)
        epoch_key = ("train epoch", tuple(np_batches[0][0].shape))
        self.log_compile(epoch_key, first, steady)
        return self.compile_seconds([("train", tuple(x.shape)) for x, _ in np_batches] + [epoch_key])

    def log_compile(self, key, first, steady):
        """Notes the extra time of a first call over a steady one (eager: nothing compiles)."""
        self.compile_log.setdefault(key, max(first - steady, 0.0))

    def compile_seconds(self, keys):
        return None

    def train_epoch(self):
        self.reset()
        model = self.module.train()
        opt = self.torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)
        total = 0.0
        for x, y in self.batches:
            loss = self.F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        return total

    def prepare_infer(self, x):
        """(callable, compile seconds or None) for inference on the float batch x."""
        tx = self.torch.from_numpy(x)
        model = self.module.eval()

        def fwd():  # the caller holds torch.inference_mode()
            return model(tx)
        first, _ = timed(fwd)
        steady, _ = timed(fwd)
        self.log_compile(("infer", tuple(x.shape)), first, steady)
        return fwd, self.compile_seconds([("infer", tuple(x.shape))])


class TorchCompiled(TorchEager):
    """The same module through torch.compile (inductor, mode="default", dynamic=False)."""

    library = "torch.compile"
    train_variant = "compiled model, eager step"
    infer_variant = "compiled model(x), inference_mode"

    def __init__(self, torch, init):
        super().__init__(torch, init)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
        self.module = torch.compile(self.model, mode="default", dynamic=False)

    def compile_seconds(self, keys):
        return sum(self.compile_log.get(k, 0.0) for k in set(keys))


class Jax:
    """LeNet-5 in jax.numpy/jax.lax; one jitted step: forward, cross-entropy, grad, SGD momentum."""

    library = "jax"
    train_variant = "jit step, pre-made arrays"
    infer_variant = "jit forward"

    def __init__(self, jax, init):
        self.jax = jax
        jnp, lax = jax.numpy, jax.lax
        self.init = [jnp.asarray(a) for a in init]
        dn = ("NCHW", "OIHW", "NCHW")  # pylenet's layout: activations NCHW, weights (K, C, R, S)

        def conv(x, w, b):
            return lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn) + b[None, :, None, None]

        def pool(x):  # 2x2 max, stride 2
            return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

        def relu(x):
            return jnp.maximum(x, 0.0)

        def forward(params, x):
            w1, b1, w3, b3, w5, b5, w6, b6, w7, b7 = params
            h = pool(relu(conv(x, w1, b1)))          # 1@32x32 -> 6@28x28 -> 6@14x14
            h = pool(relu(conv(h, w3, b3)))          # -> 16@10x10 -> 16@5x5
            h = h.reshape(h.shape[0], -1)            # -> 400, in C, H, W order as torch's Flatten
            h = relu(h @ w5.T + b5)
            h = relu(h @ w6.T + b6)
            return h @ w7.T + b7

        def loss_fn(params, x, y):  # mean of logsumexp(z) - z[label]
            z = forward(params, x)
            return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

        def step(params, buf, x, y):  # torch's SGD: buf = momentum * buf + g (buf starts at 0)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
            buf = [MOMENTUM * b + g for b, g in zip(buf, grads)]
            params = [p - LR * b for p, b in zip(params, buf)]
            return params, buf, loss

        self.forward, self.loss_fn = jax.jit(forward), loss_fn
        self.step = jax.jit(step)
        self.compiled = {}  # batch shape -> AOT-compiled step
        self.compile_log = {}  # batch shape -> seconds of lower + compile

    def zeros(self):
        return [self.jax.numpy.zeros_like(p) for p in self.init]

    def check(self, x, y) -> dict:
        jx, jy = self.jax.numpy.asarray(x), self.jax.numpy.asarray(y.astype(np.int32))
        loss, grads = self.jax.value_and_grad(self.loss_fn)(self.init, jx, jy)
        logits = self.forward(self.init, jx)
        params, _, _ = self.step_for(jx, jy)(self.init, self.zeros(), jx, jy)
        return {"loss": float(loss), "logits": np.asarray(logits), "grads": [np.asarray(g) for g in grads],
                "update": [np.asarray(p) - np.asarray(a) for p, a in zip(params, self.init)]}

    def step_for(self, x, y):
        """The compiled step for this batch shape; compiles (lower + compile) on first sight."""
        key = (x.shape, y.shape)
        if key not in self.compiled:
            t0 = time.perf_counter()
            self.compiled[key] = self.step.lower(self.init, self.zeros(), x, y).compile()
            self.compile_log[key] = time.perf_counter() - t0
        return self.compiled[key]

    def prepare_train(self, np_batches):
        jnp = self.jax.numpy
        self.batches = [(jnp.asarray(x), jnp.asarray(y.astype(np.int32))) for x, y in np_batches]
        for x, y in self.batches:
            x.block_until_ready()
            self.step_for(x, y)
        self.train_epoch()  # warm-up
        return sum(self.compile_log[k] for k in {(x.shape, y.shape) for x, y in self.batches})

    def train_epoch(self):
        params, buf, total = self.init, self.zeros(), 0.0
        for x, y in self.batches:
            params, buf, loss = self.step_for(x, y)(params, buf, x, y)
            total += float(loss)  # reads the loss back, as the torch loop and Trainer do
        return total

    def prepare_infer(self, x):
        jx = self.jax.numpy.asarray(x)
        t0 = time.perf_counter()
        fwd_c = self.forward.lower(self.init, jx).compile()
        compile_s = time.perf_counter() - t0
        return (lambda: fwd_c(self.init, jx).block_until_ready()), compile_s


# ---------------------------------------------------------------------------- worker

class Worker:
    """All libraries at one thread count, in this process."""

    def __init__(self, args):
        self.args = args
        self.threads = args.threads[0]
        self.notes, self.skipped = [], {}
        self.results, self.breakdowns = [], []

    def setup_process(self):
        """Pins the process to `threads` cores and sets the environment before any import."""
        n = self.threads
        usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pinned = None
        if usable and n < len(usable):
            self.pinned = usable[:n]
            os.sched_setaffinity(0, self.pinned)
            self.notes.append(f"process pinned to cores {self.pinned} of {len(usable)} usable "
                              f"(sched_setaffinity), so that XLA sizes its pools for {n} core(s); every library "
                              f"in this process runs on the same cores")
        elif usable:
            self.notes.append(f"not pinned: {n} threads >= {len(usable)} usable cores")
        else:
            self.notes.append("cannot pin (no sched_setaffinity): JAX may use more than "
                              f"{n} thread(s); see cpu/wall")
        if n == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
        if self.args.simd:
            os.environ["PYLENET_SIMD"] = self.args.simd
        cap = PEER_ISA.get(self.args.simd) if self.args.peers_isa == "match" else None
        self.inductor_simdlen = None
        if cap:  # the peers see (nearly) the CPU a user of that level has
            os.environ["ONEDNN_MAX_CPU_ISA"], self.inductor_simdlen, xla = cap
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_max_isa={xla}").strip()
            self.notes.append(f"peers capped to {self.args.simd}: ONEDNN_MAX_CPU_ISA={cap[0]}, "
                              f"inductor cpp.simdlen={cap[1]}, --xla_cpu_max_isa={xla}")

    def import_libraries(self):
        """torch (first: the process then uses its libgomp for both), pylenet, then jax."""
        self.torch = self.jax = None
        wants_torch = any(p in self.args.peers for p in ("torch", "torch.compile"))
        try:
            import torch
            self.torch = torch
            if self.inductor_simdlen:
                import torch._inductor.config as inductor_config
                inductor_config.cpp.simdlen = self.inductor_simdlen
            torch.set_num_interop_threads(1)
            torch.set_num_threads(self.threads)
        except ImportError as e:
            if wants_torch:
                for p in ("torch", "torch.compile"):
                    self.skipped[p] = f"torch not importable ({e})"
        if self.args.checkout or importlib.util.find_spec("pylenet") is None:
            sys.path.insert(0, str(REPO))  # the in-place build of this checkout
        import pylenet
        self.pylenet = pylenet
        pylenet.ops.set_num_threads(self.threads)
        if "jax" in self.args.peers:
            try:
                import jax
                self.jax = jax
            except ImportError as e:
                self.skipped["jax"] = f"jax not importable ({e}); pip install \"jax[cpu]\""

    def machine_info(self) -> dict:
        info = self.pylenet.ops.build_info()
        gomp = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                       if "libgomp" in line or "libomp" in line}) if Path("/proc/self/maps").exists() else []
        return {"cpu": cpu_model(), "machine": platform.machine(), "cores": os.cpu_count(),
                "python": platform.python_version(), "numpy": np.__version__,
                "torch": self.torch.__version__ if self.torch else None,
                "jax": self.jax.__version__ if self.jax else None,
                "pylenet": self.pylenet.__version__, "pylenet_path": str(Path(self.pylenet.__file__).parent),
                "pylenet_simd_requested": self.args.simd, "pylenet_simd_used": info["simd_used"],
                "pylenet_simd_compiled": info["simd_compiled"], "pylenet_compiler": info["compiler"],
                "pylenet_openmp": info["openmp"], "openmp_runtimes_loaded": gomp,
                "xla_flags": os.environ.get("XLA_FLAGS"), "loadavg_at_start": load_average()}

    def make_peers(self, init):
        makers = {"torch": lambda: TorchEager(self.torch, init),
                  "torch.compile": lambda: TorchCompiled(self.torch, init),
                  "jax": lambda: Jax(self.jax, init)}
        peers = []
        for name in self.args.peers:
            if name in self.skipped:
                continue
            try:
                peers.append(makers[name]())
            except Exception as e:  # noqa: BLE001 - a broken peer is reported, not fatal
                self.skipped[name] = f"setup failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return peers

    def validate(self, peers, x, y) -> tuple[list, dict]:
        ref = pylenet_reference(self.pylenet, x, y)
        checks, ok_peers = {}, []
        for peer in peers:
            try:
                got = peer.check(x, y)
            except Exception as e:  # noqa: BLE001 - e.g. torch.compile without a C++ compiler
                self.skipped[peer.library] = f"check failed to run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"skip {peer.library}: {self.skipped[peer.library]}", flush=True)
                continue
            err = {"loss": abs(got["loss"] - ref["loss"]) / abs(ref["loss"]),
                   "logits": rel_err(got["logits"], ref["logits"]),
                   "grads": max(rel_err(g, r) for g, r in zip(got["grads"], ref["grads"])),
                   "update": max(rel_err(g, r) for g, r in zip(got["update"], ref["update"]))}
            ok = all(err[k] <= TOL[k] for k in TOL)
            checks[peer.library] = {"loss_pylenet": ref["loss"], "loss_peer": got["loss"],
                                    "rel_err": err, "ok": ok}
            print(f"check b{len(y)} threads={self.threads} {peer.library:<14} loss {got['loss']:.6f} vs "
                  f"pylenet {ref['loss']:.6f} (rel {err['loss']:.1e}); rel err logits {err['logits']:.1e}, "
                  f"grads {err['grads']:.1e}, SGD update {err['update']:.1e}: {'ok' if ok else 'FAIL'}",
                  flush=True)
            if ok:
                ok_peers.append(peer)
        return ok_peers, checks

    def add_row(self, workload, library, variant, unit, rounds, cpu_per_wall, compile_s=None):
        """One result; rounds are already in `unit`."""
        med = statistics.median(rounds)
        row = {"workload": workload, "threads": self.threads, "library": library, "variant": variant,
               "unit": unit, "median": med, "rounds": rounds, "cpu_per_wall": statistics.median(cpu_per_wall),
               "compile_s": compile_s}
        self.results.append(row)
        comp = f"  compile {compile_s:6.2f} s" if compile_s is not None else ""
        print(f"{workload:<12} threads={self.threads}  {library:<14} {variant:<34} {med:11.1f} {unit:<6} "
              f"cpu/wall {row['cpu_per_wall']:4.2f}{comp}", flush=True)
        if row["cpu_per_wall"] > 1.15 * self.threads + 0.1:
            print(f"  warning: {library} kept {row['cpu_per_wall']:.2f} cores busy with threads={self.threads}")

    def alternate(self, variants, rounds):
        """Runs every variant once per round, rotating the order; returns per-variant samples."""
        samples = {name: ([], []) for name, _ in variants}
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for name, run in order:
                value, cpu_wall = run()
                samples[name][0].append(value)
                samples[name][1].append(cpu_wall)
        return samples

    def run(self) -> int:
        self.setup_process()
        try:
            self.import_libraries()
        except ImportError as e:  # e.g. a --simd level the core or this CPU refuses
            print(f"FAIL: cannot import pylenet: {e}", flush=True)
            return 1
        pylenet, args = self.pylenet, self.args
        from pylenet.data import DataLoader, pad_and_normalize
        from pylenet.engine import cpu_net_for
        from pylenet.optim import SGD

        machine = self.machine_info()
        print(f"machine: {machine['cpu']} ({machine['machine']}), {machine['cores']} cores; python "
              f"{machine['python']}, numpy {machine['numpy']}, torch {machine['torch']}, jax {machine['jax']}; "
              f"pylenet {machine['pylenet']} from {machine['pylenet_path']}, simd level "
              f"{machine['pylenet_simd_used']} (compiled: {', '.join(machine['pylenet_simd_compiled'])}), "
              f"{machine['pylenet_compiler']}, openmp={machine['pylenet_openmp']}", flush=True)
        print(f"threads={self.threads}: " + "; ".join(self.notes) +
              f"; XLA_FLAGS={machine['xla_flags'] or '(unset)'}", flush=True)
        status = 0
        if args.simd and args.simd != "auto" and machine["pylenet_simd_used"] != args.simd:
            print(f"FAIL: --simd {args.simd} asked, pylenet runs {machine['pylenet_simd_used']}")
            status = 1
        load = machine["loadavg_at_start"]
        if load is not None and load > 0.5:
            print(f"warning: load average {load:.2f}: other processes are running, so timings are noisy")
        images, labels = pylenet.load_mnist("train", root=args.data)
        n = min(args.images, len(images))
        train_x, train_y = images[:n], labels[:n]
        print(f"data: first {n} MNIST training images from {args.data}; {args.rounds} rounds, median; "
              f"lr {LR} momentum {MOMENTUM}", flush=True)

        model = pylenet.LeNet5(seed=0)
        init = [p.data.copy() for p in model.parameters()]

        def reset():
            for p, a in zip(model.parameters(), init):
                p.data[...] = a  # in place: the fused engine keeps the parameter objects

        peers = self.make_peers(init)
        for name in args.peers:
            if name in self.skipped and not any(p.library == name for p in peers):
                print(f"skip {name}: {self.skipped[name]}", flush=True)
        first = next(iter(DataLoader(train_x[:64], train_y[:64], 64, shuffle=True, seed=0)))
        peers, checks = self.validate(peers, *first)
        if not all(c["ok"] for c in checks.values()):
            print("FAIL: a peer disagrees with pylenet on the same batch; it is not timed")
            status = 1
        fused = cpu_net_for(model)

        def pylenet_epoch(loader):
            reset()
            trainer = pylenet.Trainer(model, SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
                                      batch_size=loader.batch_size, progress=False, threads=self.threads)
            loader.set_epoch(0)
            trainer.train_epoch(loader)

        def pylenet_premade(np_batches):
            reset()
            opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            for x, y in np_batches:
                fused.train_step(x, y, "cross_entropy")
                opt.step()

        def throughput(f):
            wall, cpu = timed(f)
            return n / wall, cpu / wall

        for bs in args.batches:
            workload = f"train b{bs}"
            loader = DataLoader(train_x, train_y, bs, shuffle=True, seed=0)
            np_batches = list(loader)
            pylenet_epoch(loader)  # warm-up
            compile_s = {}
            for peer in peers:
                compile_s[peer.library] = peer.prepare_train(np_batches)
            variants = [("pylenet|Trainer+DataLoader", lambda: throughput(lambda: pylenet_epoch(loader))),
                        ("pylenet|fused step, pre-made batches", lambda: throughput(lambda: pylenet_premade(np_batches)))]
            variants += [(f"{p.library}|{p.train_variant}", (lambda p=p: throughput(p.train_epoch))) for p in peers]
            samples = self.alternate(variants, args.rounds)
            for name, (values, cw) in samples.items():
                library, variant = name.split("|")
                self.add_row(workload, library, variant, "img/s", values, cw, compile_s.get(library))
            self.breakdown(bs, loader, np_batches, pylenet_epoch, reset, fused, SGD)
            reset()

        one, digits1000 = images[0], images[:1000]  # uint8 (28, 28) and (1000, 28, 28)
        cases = [(1, one, pad_and_normalize(one)), (1000, digits1000, pad_and_normalize(digits1000))]
        with self.torch.inference_mode() if self.torch else contextlib.nullcontext():
            self.time_inference(cases, peers, model, fused, reset)

        report = {"threads": self.threads, "machine": machine, "notes": self.notes,
                  "pinned_cores": self.pinned, "skipped": self.skipped, "validation": checks,
                  "breakdown": self.breakdowns, "results": self.results}
        write(report, args.out)
        return status

    def breakdown(self, bs, loader, np_batches, pylenet_epoch, reset, fused, SGD):
        """Where a pylenet epoch spends its time: each part timed alone, fastest of the rounds
        (noise only ever adds time); the rest is train_epoch's own Python (loss and accuracy
        bookkeeping, the disabled progress bar)."""
        model = fused.model
        parts = []
        for _ in range(self.args.rounds):
            epoch, _ = timed(lambda: pylenet_epoch(loader))
            loader.set_epoch(0)
            t_loader, _ = timed(lambda: [None for _ in loader])
            reset()
            t_step, _ = timed(lambda: [fused.train_step(x, y, "cross_entropy") for x, y in np_batches])
            opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
            opt.step()  # the first step allocates the momentum buffers, as in the epoch
            t_opt, _ = timed(lambda: [opt.step() for _ in np_batches[1:]])
            t_opt *= len(np_batches) / max(len(np_batches) - 1, 1)
            parts.append({"epoch": epoch, "loader": t_loader, "train_step": t_step, "optimizer": t_opt})
        best = {k: min(p[k] for p in parts) for k in parts[0]}
        share = {k: best[k] / best["epoch"] for k in ("train_step", "loader", "optimizer")}
        share["rest"] = 1.0 - sum(share.values())
        step_ms = 1e3 * best["epoch"] / len(np_batches)
        self.breakdowns.append({"batch": bs, "threads": self.threads, "steps": len(np_batches),
                                "step_ms": step_ms, "share": share, "rounds": parts})
        print(f"  pylenet epoch b{bs} threads={self.threads}: {step_ms:8.3f} ms/step = core train_step "
              f"{100 * share['train_step']:5.1f}% + DataLoader {100 * share['loader']:5.1f}% + SGD.step "
              f"{100 * share['optimizer']:5.1f}% + rest of train_epoch {100 * share['rest']:5.1f}%", flush=True)

    def time_inference(self, cases, peers, model, fused, reset):
        pylenet, args = self.pylenet, self.args
        for bs, raw, x in cases:
            workload = f"infer b{bs}"
            reset()
            variants = [("pylenet|predict(uint8)", lambda raw=raw: pylenet.predict(model, raw)),
                        ("pylenet|fused.forward(float)", lambda x=x: fused.forward(x))]
            compile_s = {}
            for peer in peers:
                fwd, compile_s[peer.library] = peer.prepare_infer(x)
                variants.append((f"{peer.library}|{peer.infer_variant}", fwd))
            timed_variants = [(name, (lambda f=f: per_call(f, args.min_time))) for name, f in variants]
            samples = self.alternate(timed_variants, args.rounds)
            for name, (secs, cw) in samples.items():
                library, variant = name.split("|")
                if bs == 1:
                    self.add_row(workload, library, variant, "us/img", [1e6 * s for s in secs], cw,
                                 compile_s.get(library))
                else:
                    self.add_row(workload, library, variant, "img/s", [bs / s for s in secs], cw,
                                 compile_s.get(library))


if __name__ == "__main__":
    sys.exit(main())
