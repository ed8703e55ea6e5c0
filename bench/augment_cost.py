"""What the training distortions cost: epoch time of the default recipe with each --augment choice.

For each name in pylenet.data.AUGMENTS: the batch preparation alone (iterating a DataLoader over
the 60,000 training images) and a whole training epoch (Trainer.train_epoch, batch 64), the
median of --repeats epochs after one warm-up epoch, in alternating rounds so that the choices
share the machine's state alike: wall time, and CPU time of the process (on a shared machine
the CPU time at --threads 1 is the figure that other programs do not disturb). Prints one line
per choice and the overheads against "none".
Usage: python bench/augment_cost.py [--threads 2] [--batch-size 64] [--repeats 3] [--data DIR]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default=default_data)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import pylenet
    from pylenet.data import AUGMENTS, DataLoader

    pylenet.ops.set_num_threads(args.threads)
    images, labels = pylenet.load_mnist("train", root=args.data, progress=False)
    trainers = {name: pylenet.Trainer(pylenet.LeNet5(seed=0), batch_size=args.batch_size,
                                      threads=args.threads, progress=False) for name in AUGMENTS}
    loaders = {name: DataLoader(images, labels, args.batch_size, augment=name) for name in AUGMENTS}
    prep = {name: [] for name in AUGMENTS}
    epoch = {name: [] for name in AUGMENTS}
    cpu = {name: [] for name in AUGMENTS}
    for r in range(args.repeats + 1):
        for name in AUGMENTS:
            t0 = time.perf_counter()
            for _ in loaders[name]:
                pass
            t1, c1 = time.perf_counter(), time.process_time()
            trainers[name].train_epoch(loaders[name])
            t2, c2 = time.perf_counter(), time.process_time()
            if r:  # the first round warms up
                prep[name].append(t1 - t0)
                epoch[name].append(t2 - t1)
                cpu[name].append(c2 - c1)
    info = pylenet.ops.build_info()
    print(f"simd {info['simd_used']}, {args.threads} threads, batch {args.batch_size}, "
          f"{len(images)} images, median of {args.repeats}")
    base, base_cpu = statistics.median(epoch["none"]), statistics.median(cpu["none"])
    for name in AUGMENTS:
        e, p, c = (statistics.median(v[name]) for v in (epoch, prep, cpu))
        print(f"augment {name:15s} preparation {p:6.3f} s  epoch {e:6.3f} s wall "
              f"({100 * (e - base) / base:+6.1f}%)  {c:6.3f} s CPU ({100 * (c - base_cpu) / base_cpu:+6.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
