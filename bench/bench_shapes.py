"""Convolution shapes of small CNNs: pylenet against PyTorch eager, forward and backward.

For each shape (batch 64 by default; channels up to 128, maps up to 32x32, kernels 1-5,
padding 0-2, stride 1-2) both libraries run the same convolution on the same arrays:
pylenet.ops.conv2d_forward / conv2d_backward (dx, dw and db, the batch split across the core's
threads) and torch's F.conv2d / aten.convolution_backward (dx, dw and db, no autograd graph:
the least overhead torch has). Each pair is checked to agree before it is timed; then the two
are timed in alternating rounds and the medians are reported, with pylenet's speed over
torch's (> 1: pylenet is faster). A convolution with a 1x1 output is also timed as the Linear
layer it equals (pylenet.ops.linear_forward / linear_backward), the yardstick of "no cliff".

--simd LEVEL forces pylenet's level (PYLENET_SIMD) and caps oneDNN's to the same instruction
set (ONEDNN_MAX_CPU_ISA), as bench/compare_peers.py does. Prints one line per shape and the
machine; --json writes the figures.
Usage: python bench/bench_shapes.py [--threads 2] [--batch 64] [--simd LEVEL] [--rounds 7]
       [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_peers import PEER_ISA, cpu_model, per_call  # noqa: E402  (the same caps as the peer benchmark)

# (name, C, K, H, kernel, stride, padding): the layers of the nets README measures and the
# corners of the small-CNN range.
SHAPES = [
    ("lenet C1", 1, 6, 32, 5, 1, 0),
    ("lenet C3", 6, 16, 14, 5, 1, 0),
    ("lenet C5 as conv (1x1 out)", 16, 120, 5, 5, 1, 0),
    ("mnist-example conv1", 1, 32, 28, 3, 1, 0),
    ("mnist-example conv2", 32, 64, 26, 3, 1, 0),
    ("1->32 3x3 pad 1", 1, 32, 28, 3, 1, 1),
    ("32->64 3x3 pad 1", 32, 64, 28, 3, 1, 1),
    ("64->128 3x3 pad 1 14x14", 64, 128, 14, 3, 1, 1),
    ("128->128 3x3 pad 1 7x7", 128, 128, 7, 3, 1, 1),
    ("128->128 3x3 pad 1 4x4", 128, 128, 4, 3, 1, 1),
    ("3->32 5x5 pad 2 32x32", 3, 32, 32, 5, 1, 2),
    ("32->64 3x3 stride 2 pad 1", 32, 64, 32, 3, 2, 1),
    ("64->128 3x3 stride 2 pad 1", 64, 128, 16, 3, 2, 1),
    ("64->64 1x1", 64, 64, 16, 1, 1, 0),
    ("128->64 1x1 8x8", 128, 64, 8, 1, 1, 0),
]
QUICK = {"lenet C5 as conv (1x1 out)", "mnist-example conv2", "64->128 3x3 pad 1 14x14",
         "128->128 3x3 pad 1 7x7", "32->64 3x3 stride 2 pad 1"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--simd", default=None, help="pylenet's SIMD level (avx512, avx2, sse2, scalar)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per shape (median reported)")
    ap.add_argument("--quick", action="store_true", help="a few shapes, fewer rounds")
    ap.add_argument("--json", default=None, metavar="PATH")
    return ap.parse_args(argv)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def force_level(simd: str | None) -> None:
    """Before pylenet or torch is imported: pylenet at `simd` (PYLENET_SIMD) and torch's oneDNN
    capped to the same level (compare_peers.PEER_ISA); pylenet from this checkout."""
    if simd:
        os.environ["PYLENET_SIMD"] = simd
        if simd in PEER_ISA:
            os.environ["ONEDNN_MAX_CPU_ISA"] = PEER_ISA[simd][0]
    sys.path.insert(0, str(REPO))


def torch_label(torch) -> str:
    """'torch VERSION', with the oneDNN cap when force_level set one."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"torch {torch.__version__}" + (f", oneDNN capped to {cap}" if cap else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    force_level(args.simd)
    import torch
    import torch.nn.functional as F

    from pylenet import ops
    ops.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    shapes = [s for s in SHAPES if not args.quick or s[0] in QUICK]
    rounds = 3 if args.quick else args.rounds
    print(f"conv shapes, batch {args.batch}, {args.threads} threads, pylenet {ops.simd_level()} "
          f"({torch_label(torch)}); "
          f"{cpu_model()}")
    print(f"{'shape':32s} {'out':>9s} {'fwd ms':>8s} {'torch':>8s} {'x':>6s}   {'bwd ms':>8s} {'torch':>8s} {'x':>6s}")
    rows = []
    for name, C, K, H, R, stride, pad in shapes:
        N = args.batch
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (rng.standard_normal((K, C, R, R)) / np.sqrt(C * R * R)).astype(np.float32)
        b = rng.standard_normal(K).astype(np.float32)
        P = (H + 2 * pad - R) // stride + 1
        dy = rng.standard_normal((N, K, P, P)).astype(np.float32)
        xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))

        def torch_fwd():
            with torch.no_grad():
                return F.conv2d(xt, wt, bt, stride, pad)

        def torch_bwd():
            return torch.ops.aten.convolution_backward(dyt, xt, wt, [K], [stride] * 2, [pad] * 2, [1, 1],
                                                       False, [0, 0], 1, [True, True, True])

        def ours_fwd():
            return ops.conv2d_forward(x, w, b, stride, pad)

        def ours_bwd():
            return ops.conv2d_backward(x, w, dy, stride, pad)

        # Validate before timing.
        err_f = rel(ours_fwd(), torch_fwd().numpy())
        got, ref = ours_bwd(), torch_bwd()
        err_b = max(rel(g, r.numpy()) for g, r in zip(got, ref))
        if err_f > 1e-4 or err_b > 1e-3:
            print(f"{name}: pylenet and torch disagree (forward {err_f:.2g}, backward {err_b:.2g}); not timed")
            return 1
        times = {"fwd": [], "tfwd": [], "bwd": [], "tbwd": []}
        for r in range(rounds):
            pairs = [("fwd", ours_fwd), ("tfwd", torch_fwd), ("bwd", ours_bwd), ("tbwd", torch_bwd)]
            if r % 2:
                pairs = pairs[1::-1] + pairs[3:1:-1]
            for key, fn in pairs:
                times[key].append(per_call(fn, 0.05)[0])
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = {"shape": name, "C": C, "K": K, "H": H, "kernel": R, "stride": stride, "padding": pad,
               "out": P, "fwd_ms": med["fwd"], "torch_fwd_ms": med["tfwd"], "bwd_ms": med["bwd"],
               "torch_bwd_ms": med["tbwd"]}
        if P == 1 and pad == 0 and R == H:  # the Linear this convolution equals
            xf, wf = x.reshape(N, -1), w.reshape(K, -1)
            dyf = dy.reshape(N, K)
            row["linear_fwd_ms"] = statistics.median(per_call(lambda: ops.linear_forward(xf, wf, b), 0.05)[0] for _ in range(rounds)) * 1e3
            row["linear_bwd_ms"] = statistics.median(per_call(lambda: ops.linear_backward(xf, wf, dyf), 0.05)[0] for _ in range(rounds)) * 1e3
        rows.append(row)
        line = (f"{name:32s} {f'{K}x{P}x{P}':>9s} {med['fwd']:8.3f} {med['tfwd']:8.3f} "
                f"{med['tfwd'] / med['fwd']:5.2f}x   {med['bwd']:8.3f} {med['tbwd']:8.3f} "
                f"{med['tbwd'] / med['bwd']:5.2f}x")
        if "linear_fwd_ms" in row:
            line += (f"   as Linear: fwd {row['linear_fwd_ms']:.3f} ms ({med['fwd'] / row['linear_fwd_ms']:.2f}x its "
                     f"time), bwd {row['linear_bwd_ms']:.3f} ms ({med['bwd'] / row['linear_bwd_ms']:.2f}x)")
        print(line, flush=True)
    slow = [r for r in rows if r["torch_fwd_ms"] < r["fwd_ms"] or r["torch_bwd_ms"] < r["bwd_ms"]]
    print(f"{len(rows) - len(slow)} of {len(rows)} shapes at least as fast as torch in both directions"
          + (f"; slower: {', '.join(r['shape'] for r in slow)}" if slow else ""))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"cpu": cpu_model(), "simd": ops.simd_level(), "threads": args.threads,
                                               "batch": args.batch, "torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
