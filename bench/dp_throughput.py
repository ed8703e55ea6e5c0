"""Data-parallel training's throughput on Ray workers against plain training, and its parts.

Run it inside a loopback-only network namespace (Ray must not use another address here):
    bench/ray_netns.sh python bench/dp_throughput.py --data ../shared/data/mnist

It first checks that every data-parallel run ends with plain training's weights bit for bit,
then prints one line per variant: training images per second (of the last epoch, validation
excluded), and the two parts of a data-parallel step measured apart: the core's compute of
one worker's blocks of a batch, and the messages of the ordered chain reduce (gloo send and
broadcast of the gradient sum, outputs and loss sums) between two Ray workers.
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

import pylenet
from pylenet import _core
from pylenet.distributed import GlooComm, fit_distributed
from pylenet.engine import cpu_net_for


def _plain(train, args):
    model = pylenet.LeNet5(seed=0)
    history = pylenet.fit(model, train, epochs=args.epochs, batch_size=args.batch_size,
                          threads=args.threads, progress=False)
    return model, history


def _compute_ms(blocks: int, batch: int, repeats: int = 50) -> float:
    """ms of block_gradients for `blocks` blocks of a batch (one thread), after a warm-up."""
    fused = cpu_net_for(pylenet.LeNet5(seed=0), (1, 32, 32))
    nb = _core.batch_blocks(batch)
    n = batch * blocks // nb
    x = np.random.default_rng(0).standard_normal((n, 1, 32, 32)).astype(np.float32)
    y = np.arange(n) % 10
    fused.block_gradients(x, y, batch, 0, blocks)
    start = time.perf_counter()
    for _ in range(repeats):
        fused.block_gradients(x, y, batch, 0, blocks)
    return (time.perf_counter() - start) / repeats * 1e3


class _Pinger:
    """A Ray actor in a 2-worker gloo group that times one step's messages of the chain reduce."""

    def join(self, rank: int, group: str) -> None:
        import ray.util.collective as col
        col.init_collective_group(2, rank, backend="gloo", group_name=group)
        self.rank, self.comm = rank, GlooComm(group)

    def run(self, floats: int, steps: int) -> float:
        msg = np.zeros(floats, np.float32)
        for i in range(steps + 10):  # 10 warm-up steps
            if i == 10:
                start = time.perf_counter()
            if self.rank == 0:
                self.comm.send(msg, 1)
            else:
                self.comm.recv(msg, 0)
            self.comm.broadcast(msg, 1)
        return (time.perf_counter() - start) / steps * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="MNIST folder")
    p.add_argument("--limit", type=int, default=10_000, help="training images (default 10000)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="core threads per worker (and plain)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    import ray
    train = pylenet.load_mnist("train", args.data, download=False, progress=False)
    train = (train[0][:args.limit], train[1][:args.limit])
    ray.init(num_cpus=max(args.workers) * args.threads, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    reference, plain = _plain(train, args)
    rows = [("plain", 0, plain.records[-1]["images_per_s"])]
    for w in args.workers:
        model = pylenet.LeNet5(seed=0)
        history = fit_distributed(model, train, epochs=args.epochs, workers=w,
                                  batch_size=args.batch_size, threads=args.threads, progress=False)
        same = all(np.array_equal(a.data, b.data) for a, b in zip(reference.parameters(), model.parameters()))
        if not same:
            raise SystemExit(f"{w} workers: the weights differ from plain training's")
        rows.append(("data-parallel", w, history.records[-1]["images_per_s"]))
    print(f"# {args.limit} images, batch {args.batch_size}, {args.threads} thread(s) per "
          f"process, epoch {args.epochs} timed; weights bit-identical to plain training: yes")
    print(f"{'variant':<14} {'workers':>7} {'images/s':>9} {'ms/step':>8}")
    for name, w, ips in rows:
        print(f"{name:<14} {w:>7} {ips:>9,.0f} {args.batch_size / ips * 1e3:>8.2f}")
    nb = _core.batch_blocks(args.batch_size)
    floats = 2 * nb + cpu_net_for(pylenet.LeNet5(), (1, 32, 32)).gradient_size + args.batch_size * 10
    pingers = [ray.remote(_Pinger).options(num_cpus=1).remote() for _ in range(2)]
    group = f"bench-{time.time_ns()}"
    ray.get([a.join.remote(r, group) for r, a in enumerate(pingers)])
    comm = max(ray.get([a.run.remote(floats, 200) for a in pingers]))
    print(f"parts of a step (batch {args.batch_size}, {nb} blocks): compute of all {nb} blocks "
          f"{_compute_ms(nb, args.batch_size):.2f} ms, of {nb // 2} blocks "
          f"{_compute_ms(nb // 2, args.batch_size):.2f} ms (1 thread); chain messages between 2 "
          f"workers (send + broadcast of {floats} floats, {floats * 4 / 1e3:.0f} kB) "
          f"{comm:.2f} ms")
    ray.shutdown()


if __name__ == "__main__":
    main()
