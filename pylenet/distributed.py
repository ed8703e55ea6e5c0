"""Data-parallel training on Ray workers, bit for bit equal to training in one process.

The core splits every batch of N into _core.batch_blocks(N) blocks (at most 8), computes each
block's gradient in a buffer of its own and adds the buffers in block order. Here each of W
workers computes whole blocks of every batch (worker k: blocks [nb k / W, nb (k+1) / W), in
order), and the block gradients are added in the core's order by an ordered chain reduce:
worker 0 sums its blocks and sends the partial sum to worker 1, which adds its blocks to it
(_core.sum_blocks: the same float additions, in the same order, as the core's own sum) and
passes it on; the last worker then broadcasts the finished sum, the outputs and the blocks'
loss sums. Every worker applies the same optimizer step to the same gradient, so all keep
identical weights, and those weights are plain training's for any W (up to the number of
blocks). The messages go over Ray's collective API (ray.util.collective) with its gloo
backend, i.e. torch.distributed's gloo send, recv and broadcast.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from pylenet import _core
from pylenet.cluster import ray_session, require_ray, require_torch
from pylenet.engine import cpu_net_for
from pylenet.batches import PAD, _LUT, _as_input, _batches
from pylenet.train import History, Trainer, _log_epoch
from pylenet.data import _prepare

# Seconds a worker waits in a collective for the others before it gives up (a dead peer).
COLLECTIVE_TIMEOUT_S = 120
# Seconds the workers may take to start and meet (Ray starts one process per worker).
START_TIMEOUT_S = 180


def worker_blocks(nblocks: int, workers: int, rank: int) -> tuple[int, int]:
    """The blocks [b0, b1) of a batch split into nblocks that worker `rank` of `workers` computes."""
    return nblocks * rank // workers, nblocks * (rank + 1) // workers


class _Shards:
    """One worker's share of an _ArrayBatches loader: per batch ((x of its blocks, N, b0, b1),
    labels of the whole batch), in the loader's shuffle order and with its distortions (each
    image is prepared as in the whole batch: the distortion is drawn from (seed, epoch, index))."""

    def __init__(self, loader, rank: int, workers: int):
        self.loader, self.rank, self.workers = loader, rank, workers

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        src = self.loader
        order = src.order(src.epoch)
        epoch, src.epoch = src.epoch, src.epoch + 1  # as iterating the loader would
        for start in range(0, len(src.images), src.batch_size):
            idx = order[start:start + src.batch_size]
            N = len(idx)
            nb = _core.batch_blocks(N)
            b0, b1 = worker_blocks(nb, self.workers, self.rank)
            mine = idx[N * b0 // nb:N * b1 // nb]
            if src.augment is not None:
                x = _prepare(src.images, mine, PAD, _LUT, src.augment, src.seed, epoch)
            else:
                x = _as_input(src.name, src.images[mine])
            yield (x, N, b0, b1), src.labels[idx]


class GlooComm:
    """Point-to-point and broadcast messages between the workers of a Ray collective group
    (ray.util.collective, gloo backend: torch.distributed's gloo), on numpy float32 buffers."""

    def __init__(self, group: str):
        self.group = group

    def send(self, buf: np.ndarray, dst: int) -> None:
        import ray.util.collective as col
        col.send(buf, dst, self.group)

    def recv(self, buf: np.ndarray, src: int) -> None:
        import ray.util.collective as col
        col.recv(buf, src, self.group)

    def broadcast(self, buf: np.ndarray, src: int) -> None:
        import ray.util.collective as col
        col.broadcast(buf, src, self.group)


class ShardTrainer(Trainer):
    """A Trainer that computes only its worker's blocks of each batch and gets the rest from
    the other workers through the ordered chain reduce (see the module docstring). comm: an
    object with send(buf, dst), recv(buf, src) and broadcast(buf, src) (GlooComm)."""

    def __init__(self, *args, rank: int, workers: int, comm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.rank, self.workers, self.comm = rank, workers, comm
        self.comm_time = 0.0  # seconds spent in send, recv and broadcast (for the benchmark)

    def train_epoch(self, loader) -> dict:
        self.model.train()
        return self._batches_epoch(_Shards(loader, self.rank, self.workers), self._shard_step)

    def _shard_step(self, shard, y, first):
        """(loss, outputs, update) of one batch, as Trainer._host_step returns them for the
        whole batch: this worker's blocks, then the chain reduce."""
        x, N, b0, b1 = shard
        fused = cpu_net_for(self.model, (1, 28 + 2 * PAD, 28 + 2 * PAD))
        G, C, nb = fused.gradient_size, fused.net.out_features, _core.batch_blocks(N)
        s0, s1 = N * b0 // nb, N * b1 // nb
        # One message: the blocks' loss sums (float64), the gradient sum so far, the outputs.
        msg = np.zeros(2 * nb + G + N * C, np.float32)
        losses, grads, outs = msg[:2 * nb].view(np.float64), msg[2 * nb:2 * nb + G], msg[2 * nb + G:]
        if b1 > b0:  # computed before waiting for the partial sum, so the workers overlap
            rows, sums, out = fused.block_gradients(x, y[s0:s1], N, b0, b1, self._loss_name,
                                                    (self.seed, self.epoch, first))
        start = time.perf_counter()
        if self.rank > 0:
            self.comm.recv(msg, self.rank - 1)
        if b1 > b0:
            # Block b0 continues the sum of blocks [0, b0) it received: the core's order.
            grads[:] = _core.sum_blocks(rows if b0 == 0 else np.concatenate([grads[None], rows]))
            losses[b0:b1] = sums
            outs[s0 * C:s1 * C] = out.ravel()
        if self.rank < self.workers - 1:
            self.comm.send(msg, self.rank + 1)
        if self.workers > 1:
            self.comm.broadcast(msg, self.workers - 1)
        self.comm_time += time.perf_counter() - start
        fused.set_gradients(grads)
        return fused.mean_loss(losses, N, self._loss_name), outs.reshape(N, C), self.optimizer.step


def _check_model(trainer) -> None:
    """ValueError unless the core can run the trainer's model and loss fused, on the CPU."""
    if trainer._loss_name is None or not trainer._use_fused:
        raise ValueError("data-parallel training needs one of the core's losses "
                         f"({', '.join(_core.loss_kinds())}) and fused=True")
    net = cpu_net_for(trainer.model, (1, 28 + 2 * PAD, 28 + 2 * PAD))
    if net is None:
        raise ValueError("data-parallel training needs a model the core runs fused (a Sequential "
                         "of pylenet's built-in layers taking (1, 32, 32) inputs)")
    if net.net.batch_coupled:
        raise ValueError("data-parallel training shares each batch between workers by blocks, but the "
                         "model's BatchNorm needs the whole batch's statistics; train it with plain fit")


def _check_data(name: str, data) -> None:
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray)
            and data[0].dtype == np.uint8):
        raise TypeError(f"data-parallel training takes {name} as an (images, labels) tuple of "
                        f"uint8 digits (N, 28, 28), as pylenet.load_mnist returns; got "
                        f"{type(data).__name__}")


def _payload(trainer) -> bytes:
    """What a worker rebuilds the trainer from: model, optimizer and schedule (one pickle, so
    the optimizer still holds the model's parameters), loss, batches, epoch and history."""
    from ray import cloudpickle
    # The model's core and GPU networks stay behind (Module.__getstate__): rebuilt where unpickled.
    return cloudpickle.dumps({
        "model": trainer.model, "optimizer": trainer.optimizer, "scheduler": trainer.scheduler,
        "loss": trainer.loss_fn, "augment": trainer.augment, "batch_size": trainer.batch_size,
        "seed": trainer.seed, "on_nonfinite": trainer.on_nonfinite, "epoch": trainer.epoch,
        "history": trainer.history.records})


class _Worker:
    """One data-parallel worker (a Ray actor): rebuilds the trainer and trains epoch by epoch."""

    def __init__(self, rank: int, workers: int, payload: bytes, threads: int, train, validation):
        import pickle
        state = pickle.loads(payload)
        self.rank, self.workers = rank, workers
        self.train, self.validation = train, validation  # Ray passes the arrays, not the refs
        self.trainer = ShardTrainer(
            state["model"], state["optimizer"], loss=state["loss"], scheduler=state["scheduler"],
            batch_size=state["batch_size"], seed=state["seed"], threads=threads, progress=False,
            on_nonfinite=state["on_nonfinite"], augment=state["augment"], device="cpu",
            rank=rank, workers=workers)
        self.trainer.epoch = state["epoch"]
        self.trainer.history = History(state["history"])

    def join(self, group: str) -> str:
        """Joins the gloo group `group`; returns this worker's node address."""
        import ray
        import ray.util.collective as col
        col.init_collective_group(self.workers, self.rank, backend="gloo", group_name=group,
                                  gloo_timeout=COLLECTIVE_TIMEOUT_S * 1000)
        self.trainer.comm = GlooComm(group)
        return ray.util.get_node_ip_address()

    def fit(self, epochs: int):
        """Trains to `epochs` epochs in total; worker 0 returns (record, checkpoint bytes, comm
        seconds), the others (None, None, comm seconds)."""
        t = self.trainer
        t.fit(self.train, epochs=epochs, validation=self.validation if self.rank == 0 else None)
        if self.rank != 0:
            return None, None, t.comm_time
        with tempfile.TemporaryDirectory() as tmp:
            path = t.save(Path(tmp) / "model.ckpt")
            return t.history.records[-1], path.read_bytes(), t.comm_time


def train_on_workers(trainer, train, *, epochs: int, workers: int, validation=None,
                     address: str | None = None, threads: int | None = None,
                     progress: bool | None = None) -> History:
    """Runs trainer.fit(train, epochs=..., validation=...) on `workers` Ray workers and leaves
    the result in `trainer` (weights, optimizer, schedule, epoch, history), bit for bit what
    trainer.fit would have left. Its checkpoint, if set, is written here after every epoch.

    train and validation: (images, labels) tuples of uint8 digits, put once in Ray's object
    store. address: None (an embedded local Ray), "auto" or HOST:PORT. threads: core threads
    per worker (each worker reserves that many CPUs; default 1). progress (None: the
    trainer's) prints one line per epoch. The workers may number at most the blocks of a
    batch (_core.batch_blocks(batch_size), 8 for batches of 64 and more).
    """
    _check_data("train", train)
    if validation is not None:
        _check_data("validation", validation)
    _batches("train", train, trainer.batch_size)  # its shape and label checks
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    nb = _core.batch_blocks(trainer.batch_size)
    if workers > nb:
        raise ValueError(f"{workers} workers, but a batch of {trainer.batch_size} is split into "
                         f"{nb} blocks (pylenet._core.batch_blocks), and each worker computes whole "
                         f"blocks: use at most {nb} workers, or a larger batch size")
    threads = 1 if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if trainer.device != "cpu":
        raise ValueError("data-parallel training runs on the workers' CPUs; build the trainer "
                         "with device='cpu'")
    _check_model(trainer)
    require_ray()
    require_torch()
    progress = trainer.progress if progress is None else progress
    payload = _payload(trainer)
    with ray_session(address) as ray:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if workers * threads > cpus:
            raise ValueError(f"{workers} workers x {threads} threads need {workers * threads} CPUs, "
                             f"and the Ray cluster has {cpus}; use fewer workers or threads, or "
                             f"add machines to the cluster")
        refs = (ray.put(train), ray.put(validation) if validation is not None else None)
        cls = ray.remote(_Worker)
        actors = [cls.options(num_cpus=threads).remote(r, workers, payload, threads, *refs)
                  for r in range(workers)]
        try:
            group = f"pylenet-{os.getpid()}-{time.time_ns()}"
            _gather(ray, [a.join.remote(group) for a in actors], timeout=START_TIMEOUT_S,
                    what="start and join the gloo group")
            while trainer.epoch < epochs:
                results = _gather(ray, [a.fit.remote(trainer.epoch + 1) for a in actors])
                record, ckpt_bytes, _ = results[0]
                _adopt(trainer, ckpt_bytes)
                if progress:
                    _log_epoch(record, epochs)
        finally:
            for a in actors:
                ray.kill(a)
    return trainer.history


def _gather(ray, futures: list, timeout: float | None = None, what: str = "") -> list:
    """ray.get of every future, failing at the first error (a dead worker) instead of waiting
    for the others, which would sit in a collective until its timeout; TimeoutError when they
    are not all done within `timeout` seconds."""
    pending, deadline = list(futures), None if timeout is None else time.monotonic() + timeout
    while pending:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        done, pending = ray.wait(pending, num_returns=1, timeout=left)
        if not done:
            raise TimeoutError(f"{len(pending)} of {len(futures)} workers did not {what} within "
                               f"{timeout:.0f} s (is the cluster short of CPUs?)")
        ray.get(done[0])  # raises the worker's error
    return ray.get(futures)


def _adopt(trainer, ckpt_bytes: bytes) -> None:
    """Loads worker 0's checkpoint into the local trainer (and writes it as its checkpoint)."""
    from pylenet.checkpoint import load_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.ckpt"
        path.write_bytes(ckpt_bytes)
        trainer.restore(load_checkpoint(path), path)
    if trainer.checkpoint is not None:
        trainer.save()


def fit_distributed(model, train, *, epochs: int, workers: int, address: str | None = None,
                    threads: int | None = None, batch_size: int | None = None, optimizer=None,
                    validation=None, loss=None, scheduler=None, seed: int = 0,
                    progress: bool = True, checkpoint=None, on_nonfinite: str = "raise",
                    augment=None, recipe="default") -> History:
    """pylenet.fit on `workers` Ray workers (data-parallel): the same arguments and defaults,
    and the same weights bit for bit. train and validation are (images, labels) tuples of uint8
    digits; address None starts a local Ray with this machine's CPUs, "auto" or HOST:PORT joins
    a running cluster; threads: core threads per worker (default 1). The model is updated in
    place, as fit does. See train_on_workers."""
    from pylenet.recipe import get_recipe, make_optimizer, make_scheduler
    recipe = get_recipe(recipe)
    batch_size = recipe["batch_size"] if batch_size is None else batch_size
    augment = recipe["augment"] if augment is None else augment
    if optimizer is None:
        optimizer = make_optimizer(model.parameters(), recipe=recipe)
        if scheduler is None and isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool):
            scheduler = make_scheduler(optimizer, epochs, recipe=recipe)
    trainer = Trainer(model, optimizer, loss=loss, scheduler=scheduler, batch_size=batch_size,
                      seed=seed, progress=progress, checkpoint=checkpoint,
                      on_nonfinite=on_nonfinite, augment=augment, device="cpu")
    return train_on_workers(trainer, train, epochs=epochs, workers=workers, validation=validation,
                            address=address, threads=threads)
