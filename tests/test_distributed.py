"""Data-parallel training's arithmetic without Ray: W ShardTrainers in threads of this process,
exchanging their messages through queues instead of gloo, end with plain training's weights bit
for bit (tests/test_ray.py runs the same on Ray workers over gloo)."""
import queue
import threading

import numpy as np
import pytest

import pylenet
from pylenet import _core
from pylenet.distributed import ShardTrainer, train_on_workers, worker_blocks
from pylenet.recipe import make_optimizer, make_scheduler


class QueueComm:
    """send/recv/broadcast between threads: one queue per (kind, source, destination)."""

    def __init__(self, queues: dict, rank: int, workers: int):
        self.q, self.rank, self.workers = queues, rank, workers

    def _queue(self, *key):
        return self.q.setdefault(key, queue.Queue())

    def send(self, buf, dst):
        self._queue("p2p", self.rank, dst).put(buf.copy())

    def recv(self, buf, src):
        buf[:] = self._queue("p2p", src, self.rank).get(timeout=60)

    def broadcast(self, buf, src):
        if self.rank == src:
            for r in range(self.workers):
                if r != src:
                    self._queue("bcast", src, r).put(buf.copy())
        else:
            buf[:] = self._queue("bcast", src, self.rank).get(timeout=60)


def _digits(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def _setup(epochs, schedule, optimizer="sgd"):
    model = pylenet.LeNet5(seed=2)
    opt = make_optimizer(model.parameters(), optimizer)
    return model, opt, make_scheduler(opt, epochs, schedule, warmup=0.5)


def _run_workers(workers, train, *, epochs, batch_size, augment, schedule, optimizer):
    """Every worker's final parameters, trained in threads that talk through QueueComm."""
    queues, results, errors = {}, [None] * workers, []  # dict.setdefault is atomic
    lock = threading.Lock()

    def work(rank):
        try:
            model, opt, sched = _setup(epochs, schedule, optimizer)
            t = ShardTrainer(model, opt, scheduler=sched, batch_size=batch_size, seed=4,
                             progress=False, augment=augment, device="cpu", rank=rank,
                             workers=workers, comm=QueueComm(queues, rank, workers))
            history = t.fit(train, epochs=epochs)
            results[rank] = ([p.data.copy() for p in model.parameters()], history.records)
        except BaseException as e:  # reported by the test thread
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(workers)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors
    return results


@pytest.mark.parametrize("workers,batch_size,augment,schedule,optimizer", [
    (1, 64, "none", "cosine", "sgd"),
    (2, 64, "affine", "warmup_cosine", "sgd"),
    (3, 64, "none", "step", "adam"),
    (8, 64, "elastic", "cosine", "sgd"),   # the last batch (52 images) has 6 blocks: 2 idle workers
    (2, 17, "none", "cosine", "sgd"),      # 2 blocks per batch, the last one (9 images) has 1
])
def test_workers_end_with_plain_trainings_weights(workers, batch_size, augment, schedule, optimizer,
                                                  restore_threads):
    _core.set_num_threads(1)
    train = _digits(500)
    epochs = 2
    model, opt, sched = _setup(epochs, schedule, optimizer)
    plain = pylenet.Trainer(model, opt, scheduler=sched, batch_size=batch_size, seed=4,
                            progress=False, augment=augment, device="cpu").fit(train, epochs=epochs)
    reference = [p.data for p in model.parameters()]
    for params, records in _run_workers(workers, train, epochs=epochs, batch_size=batch_size,
                                         augment=augment, schedule=schedule, optimizer=optimizer):
        assert all(np.array_equal(a, b) for a, b in zip(params, reference))
        for mine, theirs in zip(records, plain.records):  # the same losses and accuracies
            assert mine["loss"] == theirs["loss"] and mine["accuracy"] == theirs["accuracy"]


def test_worker_blocks_cover_the_batch_in_order():
    for nb in range(1, 9):
        for workers in range(1, 9):
            ranges = [worker_blocks(nb, workers, r) for r in range(workers)]
            assert ranges[0][0] == 0 and ranges[-1][1] == nb
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_sum_order_matters_so_the_chain_keeps_the_cores(restore_threads):
    """Mutation check of the premise: adding the same block rows in another order changes bits,
    so bit-equality above is evidence that the chain adds in the core's order."""
    from pylenet.engine import cpu_net_for
    fused = cpu_net_for(pylenet.LeNet5(seed=0), (1, 32, 32))
    x = np.random.default_rng(1).standard_normal((64, 1, 32, 32)).astype(np.float32)
    rows, _, _ = fused.block_gradients(x, np.arange(64) % 10, 64, 0, 8)
    assert not np.array_equal(_core.sum_blocks(rows), _core.sum_blocks(rows[::-1]))


def test_argument_errors_before_ray_starts():
    model = pylenet.LeNet5()
    trainer = pylenet.Trainer(model, batch_size=64, progress=False, device="cpu")
    train = _digits(100)
    with pytest.raises(ValueError, match="use at most 8 workers"):
        train_on_workers(trainer, train, epochs=1, workers=9)
    small = pylenet.Trainer(model, batch_size=10, progress=False, device="cpu")
    with pytest.raises(ValueError, match="a batch of 10 is split into 1 blocks"):
        train_on_workers(small, train, epochs=1, workers=2)
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        train_on_workers(trainer, train, epochs=1, workers=0)
    with pytest.raises(TypeError, match=r"\(images, labels\) tuple of uint8 digits"):
        train_on_workers(trainer, (train[0].astype(np.float32), train[1]), epochs=1, workers=1)
    custom = pylenet.Trainer(model, loss=lambda out, y: (0.0, out), batch_size=64, progress=False,
                             device="cpu")
    with pytest.raises(ValueError, match="one of the core's losses"):
        train_on_workers(custom, train, epochs=1, workers=1)
