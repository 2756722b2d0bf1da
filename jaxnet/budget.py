"""A time budget for a whole training command: the number of steps that fit, measured.

The train command (``--time-budget MINUTES``) calls ``fit_config`` before
training: a short trial of the run's own compiled loop (``time_steps``) gives
the seconds per step on this machine, and ``fit_steps`` turns what is left of
the budget into ``num_iters``. The schedule (e.g. a cosine decay to zero) then
spans exactly those steps, and the run's config holds them: the run repeats
from its config.json without the budget, on any machine.

What the budget covers, from the start of the process: what was spent before
the trial (imports, loading and preprocessing the data, choosing the precision),
the trial itself, the real run's setup (placing the data, compiling: measured
in the trial), the steps, and what follows them (the final evaluation,
plots and files: ``after_seconds``). ``SAFETY`` of the steps' share is kept
back for what varies (checkpoints, validations, a machine shared with others).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, NamedTuple

from .config import TrainConfig
from .solver import train

# Share of the time left for the steps that they may use.
SAFETY = 0.95
# Seconds for writing the run folder after training (plots of 2,000 weight tiles,
# params.npz, the JSON files); the evaluation is estimated from the step time.
WRITE_SECONDS = 15.0
# Chunks timed by the trial after the first (which compiles).
TRIAL_CHUNKS = 2
_IMPORTED = time.monotonic()


def process_seconds() -> float:
    """Seconds since this process started (Linux's /proc), else since jaxnet was imported."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (after the parenthesised name, which may hold spaces): start time in
            # clock ticks since boot.
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


class StepTiming(NamedTuple):
    """A trial's measurements: seconds per training step, and the seconds from calling
    ``train`` to the first step (data placement and compilation)."""

    step_s: float
    setup_s: float


def time_steps(X, y, X_val, y_val, config: TrainConfig, chunk_size: int = 100,
               input_transform: tuple | None = None) -> StepTiming:
    """Time ``config``'s training loop on this data: 1 + ``TRIAL_CHUNKS`` chunks of
    ``chunk_size`` steps through ``solver.train``; the first compiles, the others give
    the seconds per step. Arguments as ``solver.train``'s."""
    ends = []
    steps = (1 + TRIAL_CHUNKS) * chunk_size
    trial = dataclasses.replace(config, num_iters=steps,
                                warmup_iters=min(config.warmup_iters, steps - 1))
    start = time.perf_counter()
    train(X, y, X_val, y_val, trial, chunk_size=chunk_size, input_transform=input_transform,
          progress=lambda done, total, losses: ends.append(time.perf_counter()))
    step_s = (ends[-1] - ends[0]) / (TRIAL_CHUNKS * chunk_size)
    return StepTiming(step_s, max(ends[0] - start - chunk_size * step_s, 0.0))


def after_seconds(step_s: float, batch_size: int, eval_rows: int) -> float:
    """Seconds the command needs after its last step: a forward pass over ``eval_rows``
    rows (the accuracies), costed generously as training steps of ``batch_size`` rows,
    plus ``WRITE_SECONDS``."""
    return eval_rows / batch_size * step_s + WRITE_SECONDS


def fit_steps(budget_s: float, spent_s: float, timing: StepTiming, after_s: float) -> int:
    """The steps that fit in ``budget_s`` seconds of which ``spent_s`` are spent: the real
    run's setup, its steps and ``after_s`` seconds after them, within ``SAFETY``.

    Raises ValueError when not even one step fits.
    """
    left = budget_s - spent_s - timing.setup_s - after_s
    steps = int(SAFETY * left / timing.step_s) if left > 0 else 0
    if steps < 1:
        raise ValueError(f"the time budget of {budget_s / 60:g} minutes leaves no time to train: "
                         f"{spent_s:.0f} s are spent, {timing.setup_s:.0f} s go to setting up "
                         f"the run and {after_s:.0f} s to evaluating and saving it; give a "
                         f"larger --time-budget, or --num-iters without one")
    return steps


def fit_config(config: TrainConfig, budget_minutes: float, data: tuple, eval_rows: int,
               chunk_size: int = 100, input_transform: tuple | None = None,
               say: Callable[[str], None] = lambda message: None) -> TrainConfig:
    """``config`` with ``num_iters`` set to the steps that fit in ``budget_minutes`` for the
    whole process (see the module docstring). data: (X, y, X_val, y_val) as
    ``solver.train`` takes them; ``eval_rows``: the rows evaluated after training. ``say``
    gets one line with the numbers."""
    timing = time_steps(*data, config, chunk_size, input_transform)
    after_s = after_seconds(timing.step_s, config.batch_size, eval_rows)
    budget_s = 60 * budget_minutes
    spent_s = process_seconds()
    steps = fit_steps(budget_s, spent_s, timing, after_s)
    steps_per_epoch = max(len(data[0]) / config.batch_size, 1)
    say(f"time budget {budget_minutes:g} min: {timing.step_s * 1e3:.1f} ms per step measured, "
        f"{spent_s:.0f} s spent, {timing.setup_s:.0f} s of setup and {after_s:.0f} s after "
        f"training to come: num_iters {steps} ({steps / steps_per_epoch:.1f} epochs)")
    return dataclasses.replace(config, num_iters=steps,
                               warmup_iters=min(config.warmup_iters, steps - 1))
