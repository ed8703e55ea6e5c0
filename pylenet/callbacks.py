"""Training callbacks: the hooks fit() and Trainer call around training, and the protocol.

A callback is any object with some of these methods (subclass Callback to get no-op defaults):

- on_train_begin(trainer): before the first epoch of a fit() call; `trainer.model`,
  `trainer.optimizer`, `trainer.epoch` (epochs already finished) and `trainer.history` are there.
- on_epoch_end(epoch, logs) -> bool | None: after every epoch, once its record is in the
  history (and the trainer's checkpoint, if any, is written). `epoch` is the 1-based epoch just
  finished and `logs` a copy of its record (loss, accuracy, lr, time, images_per_s, skipped and,
  with validation data, val_loss and val_accuracy). Returning True, or setting
  `trainer.stop_training = True`, stops training after this epoch; every callback still sees it.
- on_train_end(trainer): after the last epoch of a fit() call, also when a callback stopped it
  (not when an exception ends training).

Before on_train_begin, the trainer sets `callback.trainer` to itself.
"""
from __future__ import annotations


class Callback:
    """Base class of training callbacks: every hook does nothing; override the ones you need."""

    trainer = None  # set by the Trainer before on_train_begin

    def on_train_begin(self, trainer) -> None:
        """Called before the first epoch of a fit() call."""

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        """Called after each epoch with its 1-based number and record; True asks to stop."""
        return None

    def on_train_end(self, trainer) -> None:
        """Called after the last epoch of a fit() call (also after a requested stop)."""


_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


def check_callbacks(callbacks) -> list:
    """callbacks (None, one callback or an iterable of them) as a list; TypeError naming the
    first item that has none of the hooks."""
    if callbacks is None:
        return []
    if any(hasattr(callbacks, h) for h in _HOOKS):
        callbacks = [callbacks]
    if isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of callbacks (objects with on_epoch_end and/or "
                        f"the other hooks of pylenet.callbacks.Callback), got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, h, None)) for h in _HOOKS):
            raise TypeError(f"callbacks[{i}] ({type(cb).__name__}) has none of the hooks "
                            f"{', '.join(_HOOKS)}; subclass pylenet.callbacks.Callback")
    return callbacks


def call_hook(callbacks: list, hook: str, *args):
    """Calls `hook` on every callback that has it, in order; returns the list of their results."""
    results = []
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if callable(method):
            results.append(method(*args))
    return results
