"""Progress saved as training goes, and runs continued exactly after an interruption.

The compiled loop returns to the host between chunks of steps (``loop.run_chunks``);
that is where progress is saved: the step reached, the loop's carry (params, best
params, optimizer state, early-stopping counters) and the per-step outputs so far
(``LoopProgress``). Every random draw of a run is a function of its seed and the
global step, so a run continued from a checkpoint is bit-identical to one that was
never interrupted (on the CPU).

- ``Checkpoint`` is a folder of progress files, each a pair ``NAME.npz`` /
  ``NAME.previous.npz`` (no pickles): a new file is written under a temporary
  name, synced, and renamed into place only when complete, so the previous one is
  there until then and is used when the latest turns out unreadable.
- A checkpoint records what the run is (``identity``: config, a checksum of the
  data, the chunk size, jaxnet's version); resuming with anything different is
  refused with a message that names what differs.
- ``stop_on_signals`` turns SIGINT and SIGTERM into a request that the loop honours
  at its next chunk boundary: it saves, then raises ``Interrupted``. A second
  SIGINT ends the process at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import jax
import numpy as np

from . import distributed
from .files import atomic_write
from .loop import LoopProgress, Schedule
from .validate import read_npz

VERSION = "0.6.0"
OUTPUT_NAMES = ("loss", "train_correct", "val_correct")
_stop_signal: int | None = None


class Interrupted(Exception):
    """Training stopped on a signal; ``saved`` is the checkpoint folder it can resume from."""

    def __init__(self, signum: int, saved: Path | None):
        self.signum, self.saved = signum, saved
        where = f"progress saved in {saved}" if saved else "nothing was saved"
        super().__init__(f"stopped by {signal.Signals(signum).name}; {where}")


def stop_requested() -> int | None:
    """The signal that asked training to stop (SIGINT or SIGTERM), or None."""
    return _stop_signal


@contextlib.contextmanager
def stop_on_signals():
    """While inside, SIGINT and SIGTERM ask the training loop to save and stop at its next
    chunk boundary (``Checkpoint.after_chunk``) instead of raising inside compiled code.
    A second SIGINT exits at once (status 130) without saving. Main thread only."""
    global _stop_signal

    def request(signum, frame):
        global _stop_signal
        if _stop_signal is not None and signum == signal.SIGINT:
            os.write(2, b"\nerror: interrupted again; stopped at once, without saving\n")
            os._exit(130)
        _stop_signal = signum
        os.write(2, f"\n{signal.Signals(signum).name}: stopping at the end of the current "
                    f"chunk of steps (Ctrl-C again stops at once)\n".encode())

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop_signal = None


def _json(value):
    """``value`` as JSON would give it back (tuples become lists), for comparisons."""
    return json.loads(json.dumps(value))


def describe_difference(saved: dict, now: dict) -> str | None:
    """The first difference between two identities, in words, or None when they match."""
    for key in sorted(set(saved) | set(now)):
        old, new = saved.get(key), _json(now.get(key))
        if old == new:
            continue
        if key == "data":
            return ("the data differ (a checksum of the training and validation arrays, the "
                    "input transform and the minibatches)")
        if isinstance(old, dict) and isinstance(new, dict):
            field = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
            return f"{key} {field}: saved {old.get(field)!r}, now {new.get(field)!r}"
        return f"{key}: saved {old!r}, now {new!r}"
    return None


def picked_up(meta: dict) -> str:
    """Where a run continues, from a progress file's ``meta``: e.g. "2 config(s)
    finished, group 2 at step 1200" for a sweep, "step 1200" for a single run."""
    at = ([f"group {meta['position'][0] + 1}"] if meta.get("position") else []) + (
        [f"step {meta['step']}"] if meta.get("step") is not None else [])
    parts = [f"{len(meta['finished'])} config(s) finished"] if "finished" in meta else []
    parts += [" at ".join(at)] if at else []
    return ", ".join(parts) or "its start"


class CorruptCheckpoint(ValueError):
    """A progress file that cannot be used: truncated, corrupted or inconsistent."""


class Checkpoint:
    """A folder of progress files, how often to write them, and whether to resume from them.

    ``every`` (seconds; 0 = never) is shared by every ``child``, so a sweep of
    many parts still saves at most that often. ``say`` receives notes (e.g. that
    the latest file was unreadable and the previous one is used).
    """

    def __init__(self, folder: Path, every: float = 60.0, resume: bool = False,
                 name: str = "progress", say=lambda message: None, _timing: dict | None = None):
        self.folder, self.every, self.resume, self.name, self.say = (
            Path(folder), every, resume, name, say)
        # When the last save ended, and the seconds spent saving: shared with the children.
        self._timing = _timing if _timing is not None else {"last": time.monotonic(),
                                                            "spent": 0.0}
        self._signal: list = [None]  # the signal the job agreed on (multi-process)

    def child(self, name: str) -> "Checkpoint":
        """The checkpoint of one part of the run (a preprocessing kind, a search stage)."""
        child = Checkpoint(self.folder, self.every, self.resume, f"{self.name}-{name}",
                           self.say, self._timing)
        child._signal = self._signal
        return child

    @property
    def seconds_saving(self) -> float:
        """Wall time spent writing progress files so far (this one and its children)."""
        return self._timing["spent"]

    @property
    def path(self) -> Path:
        return self.folder / f"{self.name}.npz"

    @property
    def previous_path(self) -> Path:
        return self.folder / f"{self.name}.previous.npz"

    def due(self) -> bool:
        """Whether a save is due: the interval has passed, or a signal asked to stop.

        In a multi-process job the processes decide together (a save gathers state
        from all of them, and all stop at the same chunk): due when due for any.
        """
        signum = stop_requested()
        due = signum is not None or (
            self.every > 0 and time.monotonic() - self._timing["last"] >= self.every)
        if distributed.is_multiprocess():
            due, self._signal[0] = distributed.agree(due, signum)
        return due

    def stop_if_requested(self) -> None:
        """Raise ``Interrupted`` when a signal asked to stop (after the caller saved); in a
        multi-process job, when one asked any process at the last ``due``."""
        signum = self._signal[0] if distributed.is_multiprocess() else stop_requested()
        if signum is not None:
            saved = self.folder.is_dir() and any(self.folder.glob("*.npz"))
            raise Interrupted(signum, self.folder if saved else None)

    def remove(self) -> None:
        """Delete the folder, once the run it belongs to is complete (an OSError says
        where it could not be: a progress folder left beside a finished run would
        later be taken for something to resume)."""
        if distributed.is_writer():
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.folder)

    def save(self, identity: dict, arrays: dict, meta: dict) -> None:
        """Write one progress file: ``arrays`` and JSON ``meta`` with ``identity``.

        The file is complete and synced under a temporary name before the current
        one becomes ``NAME.previous.npz`` and the new one takes its place. In a
        multi-process job only process 0 writes (``arrays`` hold every process's
        state, gathered); every process reads the file back on resume.
        """
        if not distributed.is_writer():
            self._timing["last"] = time.monotonic()
            return
        start = time.monotonic()
        self.folder.mkdir(parents=True, exist_ok=True)
        document = json.dumps({"identity": identity, "version": VERSION, **meta})
        atomic_write(self.path, lambda f: np.savez(f, allow_pickle=False, meta=np.array(document),
                                                   **arrays),
                     durable=True, previous=self.previous_path)
        self._timing["last"] = time.monotonic()
        self._timing["spent"] += self._timing["last"] - start

    def load(self, identity: dict, check=lambda arrays, meta: None) -> tuple | None:
        """``(arrays, meta)`` of the newest usable progress file, or None when there is none
        (or when not resuming).

        A file whose identity differs from ``identity`` is refused (ValueError naming
        the difference); an unreadable one, or one that ``check(arrays, meta)``
        rejects with ``CorruptCheckpoint``, gives way to the previous file.
        """
        if not self.resume:
            return None
        problems = []
        for path in (self.path, self.previous_path):
            if not path.exists():
                continue
            try:
                arrays = read_npz(path)
                meta = json.loads(str(arrays.pop("meta")))
                if not isinstance(meta, dict) or "identity" not in meta:
                    raise CorruptCheckpoint("it has no run identity")
            except (ValueError, KeyError) as exc:
                problems.append(f"{path.name} is unreadable ({exc})")
                continue
            if meta.get("version") != VERSION:
                raise ValueError(f"cannot resume from {path}: it was written by jaxnet "
                                 f"{meta.get('version')}, this is {VERSION}")
            difference = describe_difference(meta["identity"], identity)
            if difference is not None:
                raise ValueError(f"cannot resume from {path}: {difference}")
            try:
                check(arrays, meta)
            except CorruptCheckpoint as exc:
                problems.append(f"{path.name} is inconsistent ({exc})")
                continue
            if problems:
                self.say(f"warning: {'; '.join(problems)}; resuming from {path.name}")
            self.say(f"resuming from {path}: {picked_up(meta)}")
            return arrays, meta
        if problems:
            raise ValueError(f"cannot resume from {self.folder}: {'; '.join(problems)}, and "
                             f"there is no earlier progress file")
        return None

    def loop_hook(self, identity: dict) -> "LoopHook":
        """The hook of a single training loop (``solver.train``) saving into this file."""
        return LoopHook(self, identity)


def loop_arrays(progress: LoopProgress) -> dict:
    """The arrays of a progress file for ``progress``: ``state/<i>`` leaves and outputs."""
    leaves = jax.tree.leaves(progress.state)
    arrays = {f"state/{i}": distributed.host(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"outputs/{name}": np.asarray(out)
                   for name, out in zip(OUTPUT_NAMES, progress.outputs)})
    return arrays


def read_loop(arrays: dict, step, template, schedule: Schedule, num_val: int) -> LoopProgress:
    """The ``LoopProgress`` stored in ``arrays`` at ``step``, shaped and placed like
    ``template`` (the loop's freshly initialised state); raises ``CorruptCheckpoint``
    when it does not fit the loop, or holds values that the run of ``schedule``
    with ``num_val`` validation rows cannot have reached."""
    total = len(schedule.batches)
    if not isinstance(step, int) or not 0 < step <= total:
        raise CorruptCheckpoint(f"its step {step!r} is not in [1, {total}]")
    leaves, treedef = jax.tree.flatten(template)
    saved = [arrays.get(f"state/{i}") for i in range(len(leaves))]
    for i, (leaf, value) in enumerate(zip(leaves, saved)):
        if value is None or value.shape != leaf.shape or value.dtype != leaf.dtype:
            found = None if value is None else (value.shape, str(value.dtype))
            raise CorruptCheckpoint(f"state leaf {i} is {found}, expected "
                                    f"{(leaf.shape, str(leaf.dtype))}")
    if f"state/{len(leaves)}" in arrays:
        raise CorruptCheckpoint("it holds more state than the loop has")
    outputs = tuple(arrays.get(f"outputs/{name}") for name in OUTPUT_NAMES)
    if any(o is None or o.ndim != 2 or o.shape[1] != step for o in outputs):
        raise CorruptCheckpoint(f"its outputs do not cover the {step} steps done")
    state = jax.tree.unflatten(treedef, saved)
    _check_counts(state, outputs, step, schedule, num_val)
    # Placed where the fresh state's leaves are (device, sharding over configs).
    state = jax.tree.map(lambda fresh, saved: distributed.put(saved, fresh.sharding),
                         template, state)
    return LoopProgress(step, state, outputs)


def _check_counts(state, outputs: tuple, step: int, schedule: Schedule, num_val: int) -> None:
    """Raise ``CorruptCheckpoint`` for counts and counters that ``step`` steps of
    ``schedule`` cannot give (a loss can be anything: a diverged run's is NaN)."""
    def within(values, low, high) -> bool:
        values = np.asarray(values)
        return bool(np.all((low <= values) & (values <= high)))
    _, train_correct, val_correct = outputs
    validated = np.flatnonzero(schedule.validate[:step])
    best = np.atleast_1d(np.asarray(state.best_val_correct))
    best_seen = val_correct[:, validated].max(axis=1)   # validate[0]: one at least
    stopped_at = np.asarray(state.stopped_at)
    # Early stopping freezes the params after a validation that is not the first one.
    stop_steps = validated[1:] + 1
    problems = [
        (within(train_correct, 0, schedule.batches.shape[1]), "training hits beyond the batch"),
        (within(val_correct, 0, num_val), f"validation hits beyond the {num_val} rows"),
        (within(best, 0, num_val) and np.all(best <= best_seen),
         "a best validation count that no validation gave"),
        (within(state.stale, 0, len(validated)), "more validations without progress than done"),
        (np.all((stopped_at == len(schedule.batches)) | np.isin(stopped_at, stop_steps)),
         "an early stop where no validation could stop the run"),
    ]
    wrong = [what for ok, what in problems if not ok]
    if wrong:
        raise CorruptCheckpoint(f"it holds values no run can reach: {'; '.join(wrong)}")


class LoopHook:
    """``loop.run_chunks``'s hook for one run: restores saved progress and saves new."""

    def __init__(self, checkpoint: Checkpoint, identity: dict):
        self.checkpoint, self.identity = checkpoint, identity

    def restore(self, template, schedule: Schedule, num_val: int) -> LoopProgress | None:
        restored = []
        found = self.checkpoint.load(self.identity, lambda arrays, meta: restored.append(
            read_loop(arrays, meta.get("step"), template, schedule, num_val)))
        return restored[-1] if found is not None else None

    def after_chunk(self, progress: LoopProgress) -> None:
        if self.checkpoint.due():
            self.checkpoint.save(self.identity, loop_arrays(progress), {"step": progress.step})
        self.checkpoint.stop_if_requested()
