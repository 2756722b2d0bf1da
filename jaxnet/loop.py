"""The host side of training: the minibatch schedule, and the driver that runs the
compiled chunk of steps (``step.make_chunk_fn``) chunk after chunk.

The host draws the minibatch indices (iterations x batch_size) from the seed and
computes the epoch boundaries (``Schedule``); the device runs ``lax.scan`` over a
chunk of iterations; between chunks the host collects the outputs and calls its
hooks: ``progress`` (printing), and a ``hook`` that may restore saved progress
and save new (``jaxnet.resume``) or stop. The driver knows nothing of files or
processes: whoever needs them passes them in.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import jax
import numpy as np

from .config import TrainConfig
from .step import make_chunk_fn


class Schedule(NamedTuple):
    """The host-made plan of a run, shared by every config of a sweep group.

    batches: (T, B) minibatch indices; epoch_end: (T,) bool, where the notebook
    records accuracies and decays the learning rate; decays_before: (T,) int,
    how many decays happened before step t; validate: (T,) bool, where the
    params are validated as candidates for the best: every epoch end and the
    last step (with a schedule that decays to the end, the final params are
    often the best, and the last step is rarely an epoch end).
    """

    batches: np.ndarray
    epoch_end: np.ndarray
    decays_before: np.ndarray
    validate: np.ndarray


def sample_batches(num_train: int, batch_size: int, num_iters: int, rng=np.random) -> np.ndarray:
    """Minibatch indices drawn with replacement from ``rng`` (``np.random`` or a RandomState).

    The draws are the notebook's (``np.random.choice(num_train, batch_size)``
    each iteration), so numpy's global RNG replays a notebook run exactly.
    Returns (num_iters, batch_size) int32.
    """
    # With replacement, choice(n, size) is randint(0, n, size), and consecutive calls
    # continue one stream: a single call draws the same numbers 100x faster.
    return rng.randint(0, num_train, size=(num_iters, batch_size)).astype(np.int32)


def make_schedule(num_train: int, batch_size: int, num_iters: int,
                  batches: np.ndarray | None = None, seed: int = 0) -> Schedule:
    """The notebook's epoch timing for ``num_iters`` steps: ``it % iterations_per_epoch == 0``.

    ``iterations_per_epoch = max(num_train / batch_size, 1)`` is a float, as in
    the notebook, so batch sizes that do not divide N keep its timing. Batches
    are drawn from ``np.random.RandomState(seed)`` unless given.
    """
    iterations_per_epoch = max(num_train / batch_size, 1)
    epoch_end = np.array([it % iterations_per_epoch == 0 for it in range(num_iters)])
    decays_before = np.concatenate([[0], np.cumsum(epoch_end)[:-1]]).astype(np.int32)
    if batches is None:
        batches = sample_batches(num_train, batch_size, num_iters, np.random.RandomState(seed))
    validate = epoch_end.copy()
    validate[-1] = True
    return Schedule(np.asarray(batches, np.int32), epoch_end, decays_before, validate)


class LoopProgress(NamedTuple):
    """A training loop stopped between chunks: ``step`` steps done, the carry ``state``
    (shaped as the loop's state) and the outputs, each (K, step)."""

    step: int
    state: object
    outputs: tuple


class LoopHook(Protocol):
    """What ``run_chunks`` asks of its ``hook`` (``jaxnet.resume`` implements it)."""

    def restore(self, template, schedule: Schedule, num_val: int) -> LoopProgress | None:
        """Progress saved earlier, its state placed like ``template`` (the fresh state),
        or None to start from the beginning; ``schedule`` and the validation set's size
        ``num_val`` bound what the saved values can be."""

    def after_chunk(self, progress: LoopProgress) -> None:
        """Called after every chunk but the last: the place to save progress or stop."""


# Compiled programs by structure (and shapes), shared by train, the sweeps and the
# benchmark, which clears it to time compilation.
COMPILED: dict = {}


def compiled(key: tuple, make: Callable[[], Callable]) -> Callable:
    """The compiled program cached under ``key``, made by ``make()`` the first time."""
    if key not in COMPILED:
        COMPILED[key] = make()
    return COMPILED[key]


def compiled_chunk_fn(config: TrainConfig, vmapped: bool = False) -> Callable:
    """``make_chunk_fn(config)`` jitted (and vmapped over state and hp), cached by structure.

    The loop body reads only the static fields and the switches of ``config``, so
    configs that share them share one compiled program.
    """
    def make():
        fn = make_chunk_fn(config)
        if vmapped:
            fn = jax.vmap(fn, in_axes=(0, 0, 0) + (None,) * 8)
        return jax.jit(fn, donate_argnums=0)
    return compiled((config.structure(), vmapped), make)


def run_chunks(chunk_fn: Callable, state, hp, lrs, data: tuple, schedule: Schedule,
               chunk_size: int, progress: Callable | None, transform=None,
               hook: LoopHook | None = None, read: Callable = np.asarray):
    """Drive ``chunk_fn`` over the schedule, until the end or until every config stopped early.

    Works for one config (``chunk_fn`` outputs (S,)) and for a vmapped group
    (outputs (K, S)). ``progress(done, total, losses)`` is called after each
    chunk with that chunk's losses; ``hook`` restores and saves (``LoopHook``).
    ``read(array)`` brings a device array to the host as numpy (a sweep over
    several processes passes one that gathers the other processes' shards).
    Returns the final state, one history dict per config (``loss_history`` per
    step up to its early stop, ``train_acc_history`` and ``val_acc_history`` per
    epoch) and the best validation accuracies (K,).
    """
    total = len(schedule.batches)
    done, outputs = 0, []
    restored = None if hook is None else hook.restore(state, schedule, len(data[3]))
    if restored is not None:
        state, done, outputs = restored.state, restored.step, [list(restored.outputs)]
    while done < total and not (done and np.all(read(state.stopped_at) <= done)):
        stop = min(done + chunk_size, total)
        state, out = chunk_fn(state, hp, lrs, *data, schedule.batches[done:stop],
                              np.arange(done, stop, dtype=np.int32),
                              schedule.validate[done:stop], transform)
        outputs.append([np.atleast_2d(read(o)) for o in out])
        done = stop
        if progress is not None:
            progress(done, total, outputs[-1][0][0])
        if hook is not None and done < total:
            outputs = [[np.concatenate(o, axis=-1) for o in zip(*outputs)]]
            hook.after_chunk(LoopProgress(done, state, tuple(outputs[0])))
    losses, train_correct, val_correct = (np.concatenate(o, axis=-1) for o in zip(*outputs))
    batch_size, num_val = schedule.batches.shape[1], len(data[3])
    histories = []
    stopped_at = np.atleast_1d(read(state.stopped_at))
    for k, end in enumerate(stopped_at):
        epochs = schedule.epoch_end[:end]
        histories.append({
            "loss_history": losses[k, :end].tolist(),
            "train_acc_history": (train_correct[k, :end][epochs] / batch_size).tolist(),
            "val_acc_history": (val_correct[k, :end][epochs] / num_val).tolist()})
    return state, histories, np.atleast_1d(read(state.best_val_correct)) / num_val
