"""Whole small CNNs, trained from Python: pylenet against PyTorch eager, side by side.

The nets (pylenet.models.NETS): PyTorch's MNIST example net (conv 1->32 3x3, ReLU, conv 32->64
3x3, ReLU, max-pool 2, Dropout 0.25, Linear 9216->128, ReLU, Dropout 0.5, Linear 128->10) and
LeNet-5 with BatchNorm after C1, C3 and F5, and LeNet-5 itself. Each is built in pylenet and
copied into torch (pylenet.interop.to_torch: the same weights); both train on the same real
MNIST batches at batch 64 with SGD (lr 0.01, momentum 0.9): pylenet as fit runs it (the core's
fused step, then the optimizer), torch eager's idiomatic loop (forward, cross_entropy,
zero_grad, backward, step, loss.item()). One step of each is checked to agree first (loss and
gradients; dropout off for the check, since the two draw different masks). Then they are timed
in alternating rounds, and images per second (median) and pylenet's speed over torch's are
printed, with the machine and the SIMD level. --simd caps oneDNN to the same instruction set.
Usage: python bench/compare_nets.py [--threads 2] [--simd LEVEL] [--rounds 5] [--steps 40]
       [--nets mnist_example,lenet5_bn,lenet5] [--data DIR] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shapes import force_level, torch_label  # noqa: E402
from compare_peers import cpu_model  # noqa: E402


def parse_args(argv=None):
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--simd", default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="training steps per timed round")
    ap.add_argument("--nets", default="mnist_example,lenet5_bn,lenet5")
    ap.add_argument("--data", default=default_data)
    ap.add_argument("--json", default=None, metavar="PATH")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    force_level(args.simd)
    import torch
    import torch.nn.functional as F

    import pylenet
    from pylenet import ops
    from pylenet.engine import cpu_net_for
    from pylenet.interop import to_torch
    from pylenet.models import NETS
    from pylenet.optim import SGD

    ops.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    train = pylenet.load_mnist("train", root=args.data, download=False, progress=False)
    B, steps = args.batch, args.steps
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(train[0]))[:B * steps]
    print(f"whole nets, batch {B}, {args.threads} threads, pylenet {ops.simd_level()} "
          f"({torch_label(torch)}); "
          f"{cpu_model()}")
    rows = []
    for name in args.nets.split(","):
        model, shape = NETS[name](seed=0)
        pad = (shape[1] - 28) // 2
        x = pylenet.data.pad_and_normalize(train[0][idx], pad=pad)
        y = train[1][idx].astype(np.int64)
        batches = [(x[i:i + B], y[i:i + B]) for i in range(0, len(x), B)]
        module = to_torch(model).train()
        opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
        topt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        tbatches = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in batches]
        fused = cpu_net_for(model, shape)

        # Agreement first: one step's loss and gradients, dropout off (p = 0 on both sides).
        drops = [(l, m) for (_, l), m in zip(model.layers, module) if isinstance(l, pylenet.Dropout)]
        for layer, m in drops:
            layer.p, m.p = 0.0, 0.0
        fused = cpu_net_for(model, shape)
        loss, _ = fused.train_step(*batches[0])
        module.zero_grad()
        tl = F.cross_entropy(module(tbatches[0][0]), tbatches[0][1])
        tl.backward()
        # relative to each gradient's size, with a floor: a conv bias before a BatchNorm has none
        worst = max(float(np.abs(p.grad - tp.grad.numpy()).max() / max(np.abs(tp.grad.numpy()).max(), 1e-3))
                    for p, tp in zip(model.parameters(), module.parameters()))
        if abs(loss - tl.item()) > 1e-4 * max(1.0, abs(tl.item())) or worst > 5e-3:
            print(f"{name}: pylenet and torch disagree (loss {loss:.6f} vs {tl.item():.6f}, gradients {worst:.2g}); not timed")
            return 1
        for (layer, m), p in zip(drops, [0.25, 0.5][:len(drops)] if name == "mnist_example" else []):
            layer.p, m.p = p, p
        fused = cpu_net_for(model, shape)

        def ours():
            for i, (xb, yb) in enumerate(batches):
                fused.train_step(xb, yb, "cross_entropy", (0, 0, i * B))
                opt.step()

        def theirs():
            for xb, yb in tbatches:
                out = module(xb)
                loss = F.cross_entropy(out, yb)
                topt.zero_grad()
                loss.backward()
                topt.step()
                loss.item()

        ours()
        theirs()  # warm up
        t_ours, t_theirs = [], []
        for r in range(args.rounds):
            for fn, sink in ((ours, t_ours), (theirs, t_theirs))[::1 if r % 2 == 0 else -1]:
                start = time.perf_counter()
                fn()
                sink.append(time.perf_counter() - start)
        ips, tips = B * steps / statistics.median(t_ours), B * steps / statistics.median(t_theirs)
        rows.append({"net": name, "pylenet_img_s": ips, "torch_img_s": tips, "ratio": ips / tips,
                     "params": model.num_parameters()})
        print(f"{name:16s} {model.num_parameters():>9,} params   pylenet {ips:10,.0f} img/s   "
              f"torch eager {tips:10,.0f} img/s   {ips / tips:5.2f}x", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "simd": ops.simd_level(), "threads": args.threads,
                                               "batch": B, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
