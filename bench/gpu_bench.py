"""pylenet on a CUDA GPU beside PyTorch on the same GPU: training, a whole epoch, inference.

The same LeNet-5 (pylenet.LeNet5(seed=0) and its torch twin from compare_peers.py, with the
same initial weights), the same SGD (lr 0.01, momentum 0.9), the same images. Each peer is
validated first: on one batch of 64, loss, logits, gradients and one SGD update must agree with
pylenet's GPU network (itself checked against pylenet's CPU engine), and inference outputs with
pylenet.predict's; a peer that disagrees is not timed and the script exits 1. Then the variants
of a workload are timed in alternating rounds (the order rotates each round); the median is
reported. torch runs with TF32 off (cuDNN's default allows it for convolutions), so both
libraries do float32 arithmetic.

- train b64, b256, b1024 (img/s over --images images): pylenet.fit(model.to("cuda"), (uint8
  images, labels), device="cuda") as users run it (one dataset upload per fit, weights back to
  the host after the epoch); pylenet._core.GpuNet.train_indices over the dataset kept on the
  device (each batch size's step captured once as a CUDA graph and replayed; one
  synchronisation per call); torch eager over batches already on the device; torch with the
  whole step (forward, loss, backward, SGD) captured as one CUDA graph and replayed (static
  input buffers, the pattern of PyTorch's "whole network capture"). The torch loops keep each
  step's loss on the device and read them back once, as train_indices does.
- epoch b256: seconds for one epoch over the 60,000 training images, the same variants; then
  pylenet's test accuracy after that epoch (real MNIST only).
- infer b1 (us per call) and b10000 (img/s): pylenet.predict(model, uint8 digits, device="cuda")
  (host digits in, host labels and probabilities out); torch model(x) + softmax on the
  normalised batch copied to the device, results copied back, eager and as a CUDA graph.
--compile adds torch.compile(mode="reduce-overhead") (its compile time is reported apart);
it is off by default because compiling every shape does not fit the device check's time box.

--smoke runs every code path tiny on the CPU, so that CI can check the script without a GPU:
torch on the CPU (the graph variants call the captured step function eagerly), pylenet with
PYLENET_CUDA_EMULATE=1 (its GPU network emulated on the host); the figures mean nothing there.

MNIST: --data, else shared/data/mnist in this checkout (a gitignored folder, filled before a
device run: mkdir -p shared/data/mnist && cp ../shared/data/mnist/*.gz shared/data/mnist/), else
../shared/data/mnist; with none, synthetic digits (random pixels and labels), said in the output
and the JSON, for the speed figures only.

Prints one fixed-format line per (workload, library, variant), then pylenet's speed over each
torch variant's, and writes OUT/gpu_bench.json (OUT: --out, else $OUT, else ./gpu_check_out)
after every workload, so that a run cut short still leaves what it measured. --budget seconds:
later workloads get one round when it runs short, and are skipped (said so) once it is spent.
Usage: python bench/gpu_bench.py [--smoke] [--data DIR] [--out DIR] [--compile] [--budget S]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
from compare_peers import LR, MOMENTUM, TOL, TorchEager, cpu_model, pylenet_reference, rel_err  # noqa: E402

# Workload sizes: training batches, images per timed round, (epoch images, epoch batch), test
# digits for the accuracy after that epoch, inference batches, rounds (at most: the budget may
# allow fewer), seconds per timed inference block.
FULL = {"batches": (64, 256, 1024), "images": 16384, "epoch": (60000, 256), "test": 10000,
        "infer": (1, 10000), "rounds": 5, "min_time": 0.2}
SMOKE = {"batches": (8, 16, 32), "images": 64, "epoch": (256, 32), "test": 500, "infer": (1, 64),
         "rounds": 1, "min_time": 0.0}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="every code path, tiny, on the CPU (torch on the CPU, pylenet's GPU network "
                         "emulated: PYLENET_CUDA_EMULATE=1)")
    ap.add_argument("--data", default=None, help="MNIST folder (default: shared/data/mnist here, then "
                                                 "../shared/data/mnist, else synthetic digits)")
    ap.add_argument("--out", default=None, help="folder for gpu_bench.json (default $OUT, else ./gpu_check_out)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per variant")
    ap.add_argument("--images", type=int, default=None, help="training images per timed round")
    ap.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run (default 240)")
    ap.add_argument("--compile", action="store_true", help="add torch.compile(mode='reduce-overhead')")
    args = ap.parse_args(argv)
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.rounds:
        sizes["rounds"] = args.rounds
    if args.images:
        sizes["images"] = args.images
    args.sizes = sizes
    args.out = Path(args.out or os.environ.get("OUT") or "gpu_check_out")
    return args


def write(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def per_call(f, min_time: float) -> float:
    """Seconds per call of f over enough calls to fill min_time, after one warm-up call."""
    f()
    n = 1
    while True:
        t = timed(lambda: [f() for _ in range(n)])
        if t >= min_time:
            return t / n
        n = max(n * 2, int(n * min_time / max(t, 1e-9) * 1.2))


def compare(got: dict, ref: dict) -> dict:
    """Relative errors of a peer's loss, logits, gradients and update against pylenet's."""
    return {"loss": abs(got["loss"] - ref["loss"]) / abs(ref["loss"]),
            "logits": rel_err(got["logits"], ref["logits"]),
            "grads": max(rel_err(g, r) for g, r in zip(got["grads"], ref["grads"])),
            "update": max(rel_err(g, r) for g, r in zip(got["update"], ref["update"]))}


# ---------------------------------------------------------------------------- pylenet

class Pylenet:
    """pylenet on its GPU: the public API (model.to("cuda"), fit, predict) and, for step timing,
    a GpuNet of the same network with the dataset kept on the device."""

    def __init__(self, pylenet, emulate: bool):
        from pylenet import _core
        from pylenet.engine import describe
        from pylenet.batches import _LUT, PAD
        self.pylenet, self.lut, self.pad = pylenet, _LUT, PAD
        self.model = pylenet.LeNet5(seed=0).to("cuda")
        self.init = [p.data.copy() for p in self.model.parameters()]
        self.net = _core.GpuNet([describe(layer) for _, layer in self.model.layers], (1, 32, 32),
                                emulate=emulate)
        shapes = [tuple(s) for s in self.net.param_shapes]
        assert shapes == [a.shape for a in self.init], (shapes, [a.shape for a in self.init])
        # Once: set_optimizer drops the captured graphs (its constants are part of them).
        self.net.set_optimizer("sgd", momentum=MOMENTUM)
        self.dataset = None  # (images, labels) now on the GpuNet

    def reset_model(self):
        for p, a in zip(self.model.parameters(), self.init):
            p.data[...] = a  # in place: the cached GPU network keeps the parameter objects

    def reset_net(self):
        """The GpuNet back to the initial weights and a fresh SGD state, keeping its captured
        graphs. set_params compares against what it last uploaded or downloaded, not against
        what training left on the device, so get_params first makes it see the trained weights."""
        self.net.get_params()
        self.net.set_params(self.init)
        self.net.set_optimizer_state(None, 0)

    def reference(self, x, y) -> dict:
        """Loss, logits, gradients and one SGD update of the GPU network on one batch."""
        self.reset_net()
        logits = self.net.forward(x)
        loss, dout = self.net.loss(logits, y, "cross_entropy")
        _, grads = self.net.backward(x, dout)
        self.reset_net()
        step_loss, _, applied = self.net.train_step(x, y, LR, "cross_entropy")
        # The fused step's loss is the loss hook's (within TOL["loss"], checked by the caller).
        assert applied, "the first SGD step was skipped (a loss that is not finite)"
        update = [p - a for p, a in zip(self.net.get_params(), self.init)]
        return {"loss": float(loss), "step_loss": float(step_loss), "logits": np.array(logits),
                "grads": grads, "update": update}

    def fit_epoch(self, images, labels, batch: int):
        """One epoch through pylenet.fit, from the initial weights."""
        self.reset_model()
        opt = self.pylenet.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        return self.pylenet.fit(self.model, (images, labels), epochs=1, batch_size=batch, optimizer=opt,
                                augment="none", progress=False, device="cuda", seed=0)

    def set_dataset(self, images, labels):
        if self.dataset is None or self.dataset[0] is not images:
            self.net.set_dataset(images, labels, self.lut, self.pad)
            self.dataset = (images, labels)

    def indices_epoch(self, order: np.ndarray, batch: int):
        """One epoch of GpuNet.train_indices over the device dataset, from the initial weights."""
        self.reset_net()
        lrs = np.full(-(-len(order) // batch), LR, np.float32)
        losses, _, applied = self.net.train_indices(order, batch, lrs, "cross_entropy")
        assert applied.all() and np.isfinite(losses).all()
        return losses

    def predict(self, raw):
        return self.pylenet.predict(self.model, raw, device="cuda")


# ---------------------------------------------------------------------------- torch

class TorchGpu:
    """compare_peers.py's torch twin of LeNet5 on a device, trained eagerly over batches already
    there; each step's loss stays on the device until the epoch ends."""

    library = "torch"
    train_variant = "eager, device batches"
    infer_variant = "eager model(x)"

    def __init__(self, torch, init, device):
        self.torch, self.F, self.device = torch, torch.nn.functional, device
        self.model = TorchEager(torch, init).model.to(device)
        self.params = list(self.model.parameters())
        self.init = [torch.from_numpy(a).to(device) for a in init]
        self.module = self.model
        self.compile_s = None  # seconds compiling in the last prepare_* (torch.compile only)
        self.step_begin = lambda: None

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def reset(self):
        with self.torch.no_grad():
            for t, a in zip(self.params, self.init):
                t.copy_(a)

    def to_device(self, x, y):
        return self.torch.from_numpy(x).to(self.device), self.torch.from_numpy(y).to(self.device)

    def check(self, x, y) -> dict:
        self.reset()
        tx, ty = self.to_device(x, y)
        opt = self.torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)
        opt.zero_grad()
        out = self.module.train()(tx)
        loss = self.F.cross_entropy(out, ty)
        loss.backward()
        grads = [p.grad.cpu().numpy() for p in self.params]
        opt.step()
        update = [(p.detach() - a).cpu().numpy() for p, a in zip(self.params, self.init)]
        res = {"loss": loss.item(), "logits": out.detach().cpu().numpy(), "grads": grads, "update": update}
        self.reset()
        return res

    def prepare_train(self, np_batches):
        self.batches = [self.to_device(x, y) for x, y in np_batches]
        self.train_epoch()  # warm-up (cuDNN picks its algorithms, torch.compile compiles)

    def train_epoch(self) -> float:
        self.reset()
        model = self.module.train()
        opt = self.torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)
        losses = []
        for x, y in self.batches:
            self.step_begin()
            loss = self.F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return float(self.torch.stack(losses).sum())  # the one synchronisation

    def prepare_infer(self, x):
        """A callable: host float batch in, (labels, probabilities) on the host out."""
        model = self.module.eval()
        host = self.torch.from_numpy(x)

        def fwd():
            with self.torch.inference_mode():
                self.step_begin()
                p = self.F.softmax(model(host.to(self.device)), dim=1)
                return p.argmax(dim=1).cpu(), p.cpu()
        return fwd


class TorchCompiled(TorchGpu):
    """The same module through torch.compile(mode="reduce-overhead") (CUDA graphs by inductor)."""

    library = "torch.compile"
    train_variant = "reduce-overhead, eager step"
    infer_variant = "reduce-overhead model(x)"

    def __init__(self, torch, init, device):
        super().__init__(torch, init, device)
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
        self.module = torch.compile(self.model, mode="reduce-overhead", dynamic=False)
        # Each step or call starts a new run of its CUDA graphs (earlier outputs may be reused).
        self.step_begin = torch.compiler.cudagraph_mark_step_begin

    def prepare_train(self, np_batches):
        self.batches = [self.to_device(x, y) for x, y in np_batches]
        first = timed(self.train_epoch)
        steady = timed(self.train_epoch)
        self.compile_s = max(first - steady, 0.0)

    def prepare_infer(self, x):
        fwd = super().prepare_infer(x)
        first = timed(fwd)
        steady = timed(fwd)
        self.compile_s = max(first - steady, 0.0)
        return fwd


class TorchGraphs(TorchGpu):
    """The whole training step (forward, loss, backward, SGD) captured as one CUDA graph per batch
    shape and replayed over static input buffers; inference likewise. Without a GPU (--smoke)
    the captured function is called eagerly on the same buffers instead."""

    library = "torch"
    train_variant = "CUDA graph of the whole step"
    infer_variant = "CUDA graph of model(x)"

    def __init__(self, torch, init, device):
        super().__init__(torch, init, device)
        self.graphed = device == "cuda"
        if not self.graphed:
            self.train_variant = "graph's step, run eagerly (smoke)"
            self.infer_variant = "graph's model(x), run eagerly (smoke)"
        # One optimizer for every captured step: its momentum buffers are part of the graphs.
        self.opt = torch.optim.SGD(self.params, lr=LR, momentum=MOMENTUM)
        self.steps = {}  # batch shape -> (static x, static y, static loss, static out, replay)

    def fresh_optimizer(self):
        """Momentum buffers at zero: buf = 0.9 * 0 + g is the first step's buf = g."""
        with self.torch.no_grad():
            for p in self.params:
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()

    def step_for(self, x, y):
        """The captured step for this batch shape (captured on first sight)."""
        key = tuple(x.shape)
        if key in self.steps:
            return self.steps[key]
        torch, F, model = self.torch, self.F, self.model.train()
        sx, sy = x.clone(), y.clone()
        holder = {}

        def step():
            out = model(sx)
            loss = F.cross_entropy(out, sy)
            loss.backward()
            self.opt.step()
            # This graph's own tensors (each capture allocates its gradients in its own pool).
            holder["out"], holder["loss"] = out, loss
            holder["grads"] = [p.grad for p in self.params]

        if self.graphed:
            # Warm up on a side stream (the optimizer makes its momentum buffers here), then
            # capture with the gradients unset, so that backward allocates them in the graph.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.opt.zero_grad(set_to_none=True)
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                step()
            replay = graph.replay
        else:
            def replay():
                self.opt.zero_grad(set_to_none=True)
                step()
        self.steps[key] = (sx, sy, holder, replay)
        return self.steps[key]

    def check(self, x, y) -> dict:
        tx, ty = self.to_device(x, y)
        sx, sy, holder, replay = self.step_for(tx, ty)
        self.reset()
        self.fresh_optimizer()
        sx.copy_(tx)
        sy.copy_(ty)
        replay()
        grads = [g.cpu().numpy() for g in holder["grads"]]  # the step's, read after its update
        update = [(p.detach() - a).cpu().numpy() for p, a in zip(self.params, self.init)]
        res = {"loss": holder["loss"].item(), "logits": holder["out"].detach().cpu().numpy(),
               "grads": grads, "update": update}
        self.reset()
        return res

    def prepare_train(self, np_batches):
        self.batches = [self.to_device(x, y) for x, y in np_batches]
        for x, y in self.batches:
            self.step_for(x, y)
        self.train_epoch()

    def train_epoch(self) -> float:
        self.reset()
        self.fresh_optimizer()
        losses = []
        for x, y in self.batches:
            sx, sy, holder, replay = self.step_for(x, y)
            sx.copy_(x)
            sy.copy_(y)
            replay()
            losses.append(holder["loss"].detach().clone())
        return float(self.torch.stack(losses).sum())

    def prepare_infer(self, x):
        torch, F, model = self.torch, self.F, self.model.eval()
        host = torch.from_numpy(x)
        sx = host.to(self.device)
        holder = {}

        def forward():
            p = F.softmax(model(sx), dim=1)
            holder["labels"], holder["probs"] = p.argmax(dim=1), p

        with torch.no_grad():
            if self.graphed:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        forward()
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    forward()
                replay = graph.replay
            else:
                replay = forward

        def fwd():
            with torch.no_grad():
                sx.copy_(host)
                replay()
                return holder["labels"].cpu(), holder["probs"].cpu()
        return fwd


# ---------------------------------------------------------------------------- the run

# Each workload's share of the budget; its rounds are what fits in it, going by the warm-up.
SHARES = {"train": 0.15, "epoch": 0.3, "infer": 0.08}


def failure(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


class Run:
    """One benchmark run: the peers, the results, the budget and the report."""

    def __init__(self, args, pylenet, torch, device):
        self.args, self.sizes = args, args.sizes
        self.pylenet, self.torch, self.device = pylenet, torch, device
        self.start = time.perf_counter()
        self.results, self.notes, self.skipped, self.validation = [], [], {}, {}
        self.status = 0
        self.report = {}
        self.mine, self.peers = None, []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def note(self, text: str):
        self.notes.append(text)
        print(f"note: {text}", flush=True)

    def fail(self, what: str, why: str):
        self.skipped[what] = why
        print(f"FAIL {what}: {why}", flush=True)
        self.status = 1

    def rounds(self, workload: str, share: float, round_s: float) -> int:
        """As many rounds as fit in the workload's share of the budget (one round takes about
        round_s), at most --rounds, at least one while any budget is left."""
        left = self.args.budget - self.elapsed()
        fit = int(min(share * self.args.budget, left) / max(round_s, 1e-9))
        rounds = max(1, min(self.sizes["rounds"], fit))
        if rounds < self.sizes["rounds"]:
            self.note(f"{workload}: {rounds} round(s) of {self.sizes['rounds']}, to stay within the "
                      f"{self.args.budget:.0f} s budget (a round takes about {round_s:.1f} s)")
        return rounds

    def spent(self, workload: str) -> bool:
        if self.elapsed() < self.args.budget:
            return False
        self.note(f"{workload}: skipped, the {self.args.budget:.0f} s budget is spent")
        return True

    def add_row(self, workload, library, variant, unit, values, compile_s=None):
        med = statistics.median(values)
        row = {"workload": workload, "library": library, "variant": variant, "unit": unit,
               "median": med, "rounds": values, "compile_s": compile_s}
        self.results.append(row)
        comp = f"  compile {compile_s:6.2f} s" if compile_s else ""
        value = f"{med:12.1f}" if med >= 100 else f"{med:12.4f}"
        print(f"{workload:<12} {library:<14} {variant:<36} {value} {unit}{comp}", flush=True)

    def alternate(self, workload, variants, rounds):
        """Runs every variant once per round, rotating the order; a variant that raises is
        reported and dropped. Returns per-variant samples."""
        samples = {name: [] for name, _ in variants}
        live = list(variants)
        for r in range(rounds):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for name, run in order:
                try:
                    samples[name].append(run())
                except Exception as e:  # noqa: BLE001 - one broken variant must not end the run
                    self.fail(f"{workload} {name}", failure(e))
                    live = [v for v in live if v[0] != name]
                    samples.pop(name)
        return samples

    def save(self):
        self.report.update({"results": self.results, "notes": self.notes, "skipped": self.skipped,
                            "validation": self.validation, "elapsed_s": self.elapsed(),
                            "ratios": ratios(self.results)})
        write(self.report, self.args.out)

    # ------------------------------------------------------------ validation

    def check(self, name: str, got: dict, ref: dict) -> bool:
        err = compare(got, ref)
        ok = all(err[k] <= TOL[k] for k in TOL)
        self.validation[name] = {"loss": got["loss"], "loss_pylenet": ref["loss"], "rel_err": err, "ok": ok}
        print(f"check b{len(ref['logits'])} {name:<40} loss {got['loss']:.6f} vs {ref['loss']:.6f}; rel err " +
              ", ".join(f"{k} {v:.1e}" for k, v in err.items()) + f": {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            self.status = 1
        return ok

    def validate(self, x, y):
        """pylenet's GPU network against its CPU engine, then each peer against pylenet's GPU."""
        self.mine = Pylenet(self.pylenet, emulate=self.args.smoke)
        ref = self.mine.reference(x, y)
        self.check("pylenet GPU vs pylenet CPU", ref, pylenet_reference(self.pylenet, x, y))
        gap = abs(ref["step_loss"] - ref["loss"]) / abs(ref["loss"])
        print(f"check b{len(y)} pylenet GPU train_step loss vs GpuNet.loss: rel err {gap:.1e}: "
              f"{'ok' if gap <= TOL['loss'] else 'FAIL'}", flush=True)
        self.validation["pylenet GPU train_step loss"] = {"rel_err": gap, "ok": gap <= TOL["loss"]}
        if gap > TOL["loss"]:
            self.status = 1
        makers = [TorchGpu, TorchGraphs] + ([TorchCompiled] if self.args.compile else [])
        for make in makers:
            name = f"{make.library} {make.train_variant}"
            try:
                peer = make(self.torch, self.mine.init, self.device)
                name = f"{peer.library} {peer.train_variant}"
                got = peer.check(x, y)
            except Exception as e:  # noqa: BLE001 - a broken peer is reported, not fatal
                self.fail(name, f"check failed to run: {failure(e)}")
                continue
            if self.check(name, got, ref):
                self.peers.append(peer)
        self.save()

    # ------------------------------------------------------------ workloads

    def train(self, workload: str, images, labels, batch: int, unit: str, share: float):
        """One epoch over images per round, each variant: img/s (unit "img/s") or seconds ("s")."""
        from pylenet.data import DataLoader
        if self.spent(workload):
            return
        n, mine = len(images), self.mine
        loader = DataLoader(images, labels, batch, shuffle=True, seed=0)
        np_batches = list(loader)
        order = np.ascontiguousarray(loader.order(0), dtype=np.int64)  # the batches np_batches holds
        value = (lambda t: n / t) if unit == "img/s" else (lambda t: t)
        warm = timed(lambda: mine.fit_epoch(images, labels, batch))
        mine.set_dataset(images, labels)
        warm += timed(lambda: mine.indices_epoch(order, batch))  # captures the step's graphs
        if "train_indices repeats" not in self.validation:
            # From the same start the same losses, bit for bit: the reset works, and the
            # device's fixed-order reductions are deterministic.
            same = bool(np.array_equal(mine.indices_epoch(order, batch), mine.indices_epoch(order, batch)))
            self.validation["train_indices repeats"] = {"batch": batch, "ok": same}
            print(f"check {workload} pylenet GpuNet.train_indices twice from the same start: "
                  f"{'the same losses' if same else 'FAIL: different losses'}", flush=True)
            if not same:
                self.status = 1
        variants = [("pylenet|fit(device='cuda')", lambda: value(timed(lambda: mine.fit_epoch(images, labels, batch)))),
                    ("pylenet|GpuNet.train_indices", lambda: value(timed(lambda: mine.indices_epoch(order, batch))))]
        for p in self.peers:
            try:
                warm += timed(lambda: p.prepare_train(np_batches))
            except Exception as e:  # noqa: BLE001
                self.fail(f"{workload} {p.library} {p.train_variant}", failure(e))
                continue
            variants.append((f"{p.library}|{p.train_variant}",
                             (lambda p=p: value(timed(lambda: (p.train_epoch(), p.sync()))))))
        rounds = self.rounds(workload, share, warm)
        for name, values in self.alternate(workload, variants, rounds).items():
            library, variant = name.split("|")
            comp = next((p.compile_s for p in self.peers if p.library == library and p.compile_s), None)
            self.add_row(workload, library, variant, unit, values, comp)
        self.save()

    def accuracy(self, images, labels, batch: int, test_x, test_y):
        """pylenet's test accuracy after one epoch on the GPU (real MNIST: it must learn)."""
        history = self.mine.fit_epoch(images, labels, batch)
        predicted, _ = self.mine.predict(test_x)
        acc = float((predicted == test_y).mean())
        self.report["epoch_accuracy"] = {"images": len(images), "batch": batch, "test_images": len(test_x),
                                         "train": history["accuracy"][-1], "test": acc}
        print(f"pylenet after one epoch of {len(images)} images at batch {batch} on the GPU: test accuracy "
              f"{acc:.2%} on {len(test_x)} digits (chance: 10%)", flush=True)
        if len(images) >= 10000 and acc < 0.5:
            self.fail("epoch accuracy", f"pylenet did not learn on the GPU ({acc:.2%})")
        self.save()

    def infer(self, workload: str, digits, share: float):
        """predict on uint8 digits against the peers' forward on the same normalised batch."""
        from pylenet.data import pad_and_normalize
        if self.spent(workload):
            return
        bs = len(digits)
        raw = digits if bs > 1 else digits[0]   # one (28, 28) digit: predict's N=1
        x = pad_and_normalize(digits)
        self.mine.reset_model()
        _, probs = self.mine.predict(raw)
        variants = [("pylenet|predict(uint8, device='cuda')", lambda: self.mine.predict(raw))]
        compile_s = {}
        for p in self.peers:
            try:
                p.reset()
                fwd = p.prepare_infer(x)
                _, got = fwd()
            except Exception as e:  # noqa: BLE001
                self.fail(f"{workload} {p.library} {p.infer_variant}", failure(e))
                continue
            err = rel_err(got.numpy(), probs)
            ok = err <= TOL["logits"]
            self.validation[f"{workload} {p.library} {p.infer_variant}"] = {"rel_err_probs": err, "ok": ok}
            print(f"check {workload} {p.library} {p.infer_variant}: probabilities rel err {err:.1e}: "
                  f"{'ok' if ok else 'FAIL'}", flush=True)
            if ok:
                variants.append((f"{p.library}|{p.infer_variant}", fwd))
                compile_s[p.library] = p.compile_s
            else:
                self.status = 1
        min_time = self.sizes["min_time"]
        rounds = self.rounds(workload, share, len(variants) * 2 * max(min_time, 0.01))
        timed_variants = [(name, (lambda f=f: per_call(f, min_time))) for name, f in variants]
        for name, secs in self.alternate(workload, timed_variants, rounds).items():
            library, variant = name.split("|")
            if bs == 1:
                self.add_row(workload, library, variant, "us/call", [1e6 * s for s in secs], compile_s.get(library))
            else:
                self.add_row(workload, library, variant, "img/s", [bs / s for s in secs], compile_s.get(library))
        self.save()


def find_mnist(given):
    """The first folder holding both MNIST splits, or None."""
    from pylenet.data import missing_files
    candidates = [Path(given)] if given else [REPO / "shared" / "data" / "mnist",
                                              REPO.parent / "shared" / "data" / "mnist"]
    for c in candidates:
        if c.is_dir() and not missing_files("mnist", "train", c) and not missing_files("mnist", "test", c):
            return c
    return None


def machine_info(pylenet, torch, device) -> dict:
    info = {"cpu": cpu_model(), "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
            "pylenet": pylenet.__version__, "pylenet_path": str(Path(pylenet.__file__).parent),
            "pylenet_build": pylenet.ops.build_info(), "pylenet_cuda": pylenet.cuda_info(),
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None, "nvidia_smi": None}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,"
                            "clocks.mem,temperature.gpu,power.draw", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if q.returncode == 0:
            info["nvidia_smi"] = q.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return info


def speed(row: dict) -> float:
    """Higher is faster, whatever the unit."""
    return 1.0 / row["median"] if row["unit"] in ("us/call", "s") else row["median"]


def ratios(results: list[dict]) -> list[dict]:
    """pylenet speed / torch speed for every pylenet and torch variant of a workload."""
    table = []
    for workload in dict.fromkeys(r["workload"] for r in results):
        rows = [r for r in results if r["workload"] == workload]
        for mine in (r for r in rows if r["library"] == "pylenet"):
            for peer in (r for r in rows if r["library"] != "pylenet"):
                table.append({"workload": workload, "pylenet": mine["variant"],
                              "peer": f"{peer['library']} {peer['variant']}",
                              "ratio": speed(mine) / speed(peer)})
    return table


def print_ratios(table: list[dict]):
    if table:
        print("\nratios: pylenet speed / torch speed (> 1: pylenet faster)")
    for t in table:
        print(f"{t['workload']:<12} {t['pylenet']:<34} vs {t['peer']:<40} {t['ratio']:7.2f}x")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["PYLENET_CUDA_EMULATE"] = "1"  # "cuda" runs pylenet's GPU network on the host
    import torch
    if importlib.util.find_spec("pylenet") is None:
        sys.path.insert(0, str(REPO))  # the in-place build of this checkout
    import pylenet

    device = "cpu" if args.smoke else "cuda"
    cuda = pylenet.cuda_info()
    if not args.smoke:
        if not cuda["usable"]:
            print(f"FAIL: pylenet cannot use a GPU here: {cuda['reason']} (built with CUDA: "
                  f"{cuda['compiled']}); --smoke runs without one", flush=True)
            return 1
        if not torch.cuda.is_available():
            print("FAIL: torch sees no GPU", flush=True)
            return 1
        torch.backends.cudnn.allow_tf32 = False   # float32 arithmetic, as pylenet's
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True     # each batch shape gets cuDNN's fastest algorithm
    torch.manual_seed(0)
    run = Run(args, pylenet, torch, device)
    machine = machine_info(pylenet, torch, device)
    run.report = {"machine": machine, "smoke": args.smoke, "device": device,
                  "config": {**args.sizes, "lr": LR, "momentum": MOMENTUM, "tolerances": TOL,
                             "budget_s": args.budget, "compile": args.compile}}
    gpu = f"{machine['gpu']} ({machine['nvidia_smi']})" if machine["gpu"] else \
        "no GPU (smoke: torch on the CPU, pylenet's GPU network emulated)"
    print(f"machine: {gpu}; {machine['cpu']}; torch {machine['torch']} (CUDA {machine['torch_cuda']}, "
          f"cuDNN {machine['cudnn']}); pylenet {machine['pylenet']} from {machine['pylenet_path']}, CUDA "
          f"{cuda['runtime_version']} for {','.join(cuda['archs']) or '-'}; python {machine['python']}",
          flush=True)

    data = find_mnist(args.data)
    if data is not None:
        train_x, train_y = pylenet.load_mnist("train", root=data, download=False, progress=False)
        test_x, test_y = pylenet.load_mnist("test", root=data, download=False, progress=False)
        run.report["data"] = str(data)
        print(f"data: MNIST from {data}", flush=True)
    else:
        rng = np.random.default_rng(0)
        train_x = rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8)
        train_y = rng.integers(0, 10, 60000).astype(np.int64)
        test_x, test_y = train_x[:10000], train_y[:10000]
        run.report["data"] = "synthetic"
        run.note("no MNIST found (--data, shared/data/mnist, ../shared/data/mnist): synthetic digits "
                 "(random pixels and labels); the speed figures hold, no accuracy is reported")

    from pylenet.data import DataLoader
    x64, y64 = next(iter(DataLoader(train_x[:64], train_y[:64], 64, shuffle=True, seed=0)))
    run.validate(x64, y64)

    sizes = run.sizes
    for bs in sizes["batches"]:
        n = min(sizes["images"], len(train_x))
        n -= n % bs if n >= bs else 0  # whole batches: one captured shape per batch size
        run.train(f"train b{bs}", train_x[:n], train_y[:n], bs, "img/s", SHARES["train"])
    n, bs = min(sizes["epoch"][0], len(train_x)), sizes["epoch"][1]
    run.train(f"epoch b{bs}", train_x[:n], train_y[:n], bs, "s", SHARES["epoch"])
    if data is not None and not run.spent("epoch accuracy"):
        run.accuracy(train_x[:n], train_y[:n], bs, test_x[:sizes["test"]], test_y[:sizes["test"]])
    for bs in sizes["infer"]:
        run.infer(f"infer b{bs}", test_x[:bs], SHARES["infer"])

    run.save()
    print_ratios(run.report["ratios"])
    print(f"gpu_bench: {'OK' if run.status == 0 else 'FAILED'} in {run.elapsed():.0f} s; wrote "
          f"{args.out / 'gpu_bench.json'}", flush=True)
    return run.status


if __name__ == "__main__":
    sys.exit(main())
