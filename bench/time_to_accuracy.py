"""Wall time from start to a target test accuracy with `pylenet train`'s default recipe.

Runs what `pylenet train --data DIR` runs (pylenet.recipe.DEFAULT_RECIPE, which the CLI's
defaults read: optimizer, schedule, batch size, epochs, seed), evaluating on the 10,000 test images after every
epoch, and reports the wall time from this script's start (imports and data loading
included) to the end of the first epoch whose test accuracy reaches --target.
Usage: python bench/time_to_accuracy.py [--simd LEVEL] [--threads 2] [--target 0.99] [--data DIR]
--simd sets PYLENET_SIMD before pylenet is imported.
"""
import time

START = time.perf_counter()  # before the imports: they are part of a user's wait

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    default_data = os.environ.get("PYLENET_DATA") or str(REPO.parent / "shared" / "data" / "mnist")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--simd", help="SIMD level (avx512, avx2, sse2, neon, auto)")
    ap.add_argument("--threads", type=int, default=2, help="core threads (default 2)")
    ap.add_argument("--target", type=float, default=0.99, help="test accuracy to reach (default 0.99)")
    ap.add_argument("--data", default=default_data, help=f"MNIST folder (default {default_data})")
    ap.add_argument("--out", help="JSON file for the per-epoch record")
    args = ap.parse_args(argv)
    if args.simd:
        os.environ["PYLENET_SIMD"] = args.simd
    sys.path.insert(0, str(REPO))
    import pylenet
    from pylenet.recipe import DEFAULT_RECIPE as R, make_optimizer, make_scheduler

    pylenet.ops.set_num_threads(args.threads)
    train = pylenet.load_mnist("train", root=args.data)
    test = pylenet.load_mnist("test", root=args.data)
    model = pylenet.LeNet5(seed=R["seed"])
    optimizer = make_optimizer(model.parameters(), R["optimizer"])
    trainer = pylenet.Trainer(model, optimizer, loss=R["loss"],
                              scheduler=make_scheduler(optimizer, R["epochs"], R["schedule"]),
                              batch_size=R["batch_size"], seed=R["seed"], threads=args.threads,
                              progress=False)
    info = pylenet.ops.build_info()
    print(f"simd {info['simd_used']}, {args.threads} threads, default recipe "
          f"(lr {optimizer.lr}, batch {R['batch_size']}, {R['epochs']} epochs)")
    records, reached = [], None
    for epoch in range(1, R["epochs"] + 1):
        history = trainer.fit(train, epochs=epoch, validation=test)
        record = history.records[-1]
        elapsed = time.perf_counter() - START
        records.append({"epoch": epoch, "val_accuracy": record["val_accuracy"], "elapsed_s": elapsed})
        print(f"epoch {epoch:2d}  test acc {100 * record['val_accuracy']:.2f}%  {elapsed:6.1f} s since start")
        if record["val_accuracy"] >= args.target:
            reached = elapsed
            break
    if reached is None:
        print(f"did not reach {100 * args.target:.1f}% in {R['epochs']} epochs")
    else:
        print(f"time to {100 * args.target:.1f}%: {reached:.1f} s (epoch {records[-1]['epoch']})")
    if args.out:
        Path(args.out).write_text(json.dumps({"simd": info["simd_used"], "threads": args.threads,
                                              "target": args.target, "seconds": reached,
                                              "epochs": records}, indent=1))
    return 0 if reached is not None else 1


if __name__ == "__main__":
    sys.exit(main())
