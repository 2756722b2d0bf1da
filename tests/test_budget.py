"""--time-budget: the steps that fit, from injected timings; the train command fixes num_iters
and the precision once, saves them, keeps them on --resume, and repeats from config.json."""
import dataclasses
import json
import sys
import time

import numpy as np
import pytest

from cifar_format import clustered_rows
from jaxnet import budget, precision, resume, runs
from jaxnet.budget import StepTiming
from jaxnet.commands import train as train_command
from jaxnet.config import TrainConfig

PARAMS = ("W1", "b1", "W2", "b2")


def test_fit_steps_counts_what_is_left():
    # 900 s - 60 spent - 10 setup - 30 after = 800 s; 95% of it at 20 ms per step.
    assert budget.fit_steps(900, 60, StepTiming(0.02, 10), 30) == 38000
    assert budget.after_seconds(0.02, 200, 61000) == pytest.approx(305 * 0.02 + 15)


@pytest.mark.parametrize("spent", [880, 2000])
def test_a_budget_without_room_is_refused(spent):
    with pytest.raises(ValueError, match=r"the time budget of 15 minutes leaves no time to "
                                         rf"train: {spent} s are spent, 10 s go to setting up"):
        budget.fit_steps(900, spent, StepTiming(0.5, 10), 30)


def test_process_seconds_counts_from_the_start_of_the_process():
    # The process started before jaxnet was imported (/proc counts in 10 ms ticks).
    assert budget.process_seconds() >= time.monotonic() - budget._IMPORTED - 0.05


@pytest.fixture(scope="module")
def images():
    return clustered_rows([100, 20])


def test_time_steps_times_the_runs_own_loop(images):
    (X, y), (X_val, y_val) = images
    config = TrainConfig(hidden_size=6, batch_size=10, warmup_iters=50, num_iters=1000)
    timing = budget.time_steps(X, y, X_val, y_val, config, chunk_size=5)
    assert timing.step_s > 0 and timing.setup_s >= 0


def test_fit_config_sets_num_iters_and_says_so(images, monkeypatch):
    (X, y), (X_val, y_val) = images
    monkeypatch.setattr(budget, "time_steps", lambda *args, **kwargs: StepTiming(0.05, 3.0))
    monkeypatch.setattr(budget, "process_seconds", lambda: 12.0)
    lines = []
    config = TrainConfig(hidden_size=6, batch_size=10, warmup_iters=500, num_iters=1000)
    fitted = budget.fit_config(config, 1.0, (X, y, X_val, y_val), 120, say=lines.append)
    # 60 s - 12 - 3 - (120 / 10 * 0.05 + 15) = 29.4 s; 95% at 50 ms per step.
    assert fitted == dataclasses.replace(config, num_iters=558, warmup_iters=500)
    assert lines == ["time budget 1 min: 50.0 ms per step measured, 12 s spent, 3 s of setup "
                     "and 16 s after training to come: num_iters 558 (55.8 epochs)"]
    shorter = budget.fit_config(config, 0.6, (X, y, X_val, y_val), 120)
    assert (shorter.num_iters, shorter.warmup_iters) == (102, 101)


# ----------------------------------------------------------------------------- the command

class Killed(Exception):
    """Stands for a process killed right after a checkpoint was written."""


@pytest.fixture
def data_file(images, tmp_path):
    (X, y), (X_val, y_val) = images
    path = tmp_path / "images.npz"
    np.savez(path, X_train=X, y_train=y, X_val=X_val, y_val=y_val)
    return path


def run(monkeypatch, *flags):
    """The train command in this process; its run folder's lock is released when it ends,
    as a process's end would release it."""
    locks, claim = [], runs.claim_out
    monkeypatch.setattr(runs, "claim_out", lambda *args, **kwargs: locks.append(
        claim(*args, **kwargs)))
    monkeypatch.setattr(sys, "argv", ["train.py", *map(str, flags)])
    try:
        train_command.command()
    finally:
        monkeypatch.setattr(runs, "claim_out", claim)
        for lock in locks:
            lock.release()


def injected(monkeypatch, dtype: str, step_s: float) -> list:
    """Make the precision choice and the step timing ``dtype`` and ``step_s``; returns the
    list of what was asked of them."""
    asked = []

    def choose(shapes, device=None, **options):
        asked.append(("choose", shapes))
        return precision.Choice(dtype, "injected", {})

    def time_steps(*args, **kwargs):
        asked.append(("time_steps",))
        return StepTiming(step_s, 0.0)
    monkeypatch.setattr(precision, "choose", choose)
    monkeypatch.setattr(budget, "time_steps", time_steps)
    monkeypatch.setattr(budget, "process_seconds", lambda: 0.0)
    return asked


def test_budgeted_run_resumes_with_its_fixed_config_and_repeats_from_it(
        data_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    flags = ("--preset", "best", "--hidden-size", 8, "--batch-size", 20, "--data", data_file,
             "--time-budget", 0.5, "--checkpoint-every", 1e-9)
    asked = injected(monkeypatch, "bfloat16", 0.05)
    original, calls = resume.LoopHook.after_chunk, []

    def after_chunk(self, progress):
        original(self, progress)
        calls.append(progress.step)
        if len(calls) == 2:
            raise Killed
    monkeypatch.setattr(resume.LoopHook, "after_chunk", after_chunk)
    with pytest.raises(Killed):
        run(monkeypatch, *flags, "--out", out)
    # 30 s - (120 / 20 * 0.05 + 15) after training = 14.7 s; 95% at 50 ms per step.
    assert "compute dtype auto for hidden 8, batch 20: bfloat16 (injected)" in \
        capsys.readouterr().out
    assert asked == [("choose", (8, 3072, 20)), ("time_steps",)]
    saved = json.loads((out / train_command.FIXED_CONFIG).read_text())
    assert (saved["num_iters"], saved["compute_dtype"]) == (279, "bfloat16")

    # Resumed where timings and the precision would come out otherwise: nothing is decided
    # again, and the run ends as fixed.
    monkeypatch.setattr(resume.LoopHook, "after_chunk", original)
    asked = injected(monkeypatch, "float32", 0.01)
    run(monkeypatch, "--resume", out)
    assert asked == []
    config = json.loads((out / "config.json").read_text())
    assert (config["num_iters"], config["compute_dtype"]) == (279, "bfloat16")
    assert len(json.loads((out / "history.json").read_text())["loss_history"]) == 279

    # config.json alone repeats the run, without a budget.
    again = tmp_path / "again"
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    run(monkeypatch, "--data", data_file, "--out", again, "--preprocess", config["preprocess"],
        *[token for name, value in config.items() if name in fields
          for token in ("--" + name.replace("_", "-"), int(value) if isinstance(value, bool)
                        else value)])
    assert asked == []
    a, b = np.load(out / "params.npz"), np.load(again / "params.npz")
    for name in PARAMS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_num_iters_turns_the_presets_budget_off(data_file, tmp_path, monkeypatch):
    asked = injected(monkeypatch, "float32", 0.05)
    run(monkeypatch, "--preset", "best", "--hidden-size", 4, "--batch-size", 20,
        "--num-iters", 7, "--data", data_file, "--out", tmp_path / "run")
    assert asked == [("choose", (4, 3072, 20))]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["num_iters"], config["compute_dtype"]) == (7, "float32")
    with pytest.raises(ValueError, match=r"^give --num-iters or --time-budget, not both"):
        run(monkeypatch, "--preset", "best", "--num-iters", 7, "--time-budget", 3,
            "--data", data_file, "--out", tmp_path / "both")
