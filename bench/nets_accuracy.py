"""Test accuracy of the small CNNs of pylenet.models.NETS after a few epochs on real MNIST.

Each net trains with fit(..., recipe=--recipe) at batch 64 from seed 0 on the 60,000 training
images (default "fast": SGD with momentum 0.9, a per-step warm-up then cosine decay to 0 over
the run's epochs, pylenet.recipe.FAST_RECIPE; no augmentation), and is evaluated on the 10,000 test images after every epoch. Prints one
line per epoch and net (test accuracy, seconds of training), and the machine, SIMD level and
threads. The test set is only evaluated, never trained on.
Usage: python bench/nets_accuracy.py [--nets mnist_example,lenet5_bn] [--epochs 3] [--threads 2]
       [--recipe NAME] [--simd LEVEL] [--data DIR]
--simd sets PYLENET_SIMD before pylenet is imported.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="mnist_example,lenet5_bn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipe", default="fast", help="a name in pylenet.recipe.RECIPES (default fast)")
    ap.add_argument("--simd", default=None, help="SIMD level (avx512, avx2, sse2, neon, auto)")
    ap.add_argument("--data", default=default_data, help=f"MNIST folder (default {default_data})")
    args = ap.parse_args(argv)
    if args.simd:
        os.environ["PYLENET_SIMD"] = args.simd
    sys.path.insert(0, str(REPO / "bench"))
    import pylenet
    from pylenet import fit, ops
    from pylenet.models import NETS
    from compare_peers import cpu_model

    train = pylenet.load_mnist("train", root=args.data, download=False, progress=False)
    test = pylenet.load_mnist("test", root=args.data, download=False, progress=False)
    machine = f"{cpu_model()}, simd {ops.simd_level()}, {args.threads} threads"
    for name in args.nets.split(","):
        if name not in NETS:
            ap.error(f"--nets: unknown net {name!r}; choose from {sorted(NETS)}")
        model, _ = NETS[name](0)
        history = fit(model, train, epochs=args.epochs, batch_size=64, validation=test,
                      recipe=args.recipe, threads=args.threads, progress=False, seed=0)
        for epoch, record in enumerate(history.records, 1):
            print(f"{name} ({args.recipe} recipe): {machine}: epoch {epoch}: test accuracy {100 * record['val_accuracy']:.2f}%, "
                  f"train {record['time']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
