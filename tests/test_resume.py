"""Checkpoints and resume: an interrupted run, continued, equals one never interrupted.

The library tests stop a loop after a chosen chunk by raising from the save hook (as a
kill would, after the save); the script tests kill real processes (SIGKILL, SIGTERM)
and resume them with --resume, then compare every array and history bit for bit.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from cifar_format import clustered_rows
from jaxnet import resume, search, solver, sweep
from jaxnet.commands import cli
from jaxnet.config import TrainConfig

PARAMS = ("W1", "b1", "W2", "b2")


class Killed(Exception):
    """Stands for a process killed right after a checkpoint was written."""


@pytest.fixture(scope="module")
def images():
    """Rows of 32x32x3 images (so flips and shifts apply) with labels that can be learned."""
    (X, y), (X_val, y_val), (X_test, y_test) = clustered_rows([400, 100, 100])
    return dict(X_train=X, y_train=y, X_val=X_val, y_val=y_val, X_test=X_test, y_test=y_test)


def kill_after(monkeypatch, hook_class, calls: int):
    """Make ``hook_class.after_chunk`` save as usual, then raise ``Killed`` on call ``calls``."""
    original, count = hook_class.after_chunk, [0]

    def after_chunk(self, progress):
        original(self, progress)
        count[0] += 1
        if count[0] == calls:
            raise Killed
    monkeypatch.setattr(hook_class, "after_chunk", after_chunk)
    return lambda: monkeypatch.setattr(hook_class, "after_chunk", original)


def assert_same_arrays(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


AUGMENTED = TrainConfig(num_iters=95, batch_size=20, optimizer="adam", learning_rate=1e-3,
                        reg=0.01, std=1e-2, dropout=0.3, flip=True, translate=2, seed=3,
                        mixup=0.4, label_smoothing=0.1, ema=0.9)


def train_killed_after(monkeypatch, data: list, folder: Path, chunks: int) -> None:
    """Train AUGMENTED in chunks of 10 steps, saving after each, until the kill after
    ``chunks`` chunks."""
    restore = kill_after(monkeypatch, resume.LoopHook, chunks)
    with pytest.raises(Killed):
        solver.train(*data, AUGMENTED, chunk_size=10,
                     checkpoint=resume.Checkpoint(folder, every=1e-9))
    restore()


def test_train_resumed_at_any_chunk_equals_uninterrupted(images, tmp_path, monkeypatch):
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    whole = solver.train(*data, AUGMENTED, chunk_size=10)
    for stop_after in (1, 4, 8):  # the first chunk, one in the middle, the one before last
        folder = tmp_path / str(stop_after)
        train_killed_after(monkeypatch, data, folder, stop_after)
        resumed = solver.train(*data, AUGMENTED, chunk_size=10,
                               checkpoint=resume.Checkpoint(folder, every=1e-9, resume=True))
        assert_same_arrays(whole.params, resumed.params)
        assert_same_arrays(whole.best_params, resumed.best_params)
        assert resumed.history == whole.history
        assert resumed.best_val_acc == whole.best_val_acc
    assert len(whole.history["loss_history"]) == 95
    assert whole.history["loss_history"][-1] < whole.history["loss_history"][0]


def test_train_resume_refuses_other_config_data_or_chunking(images, tmp_path, monkeypatch):
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    train_killed_after(monkeypatch, data, tmp_path, 2)
    again = resume.Checkpoint(tmp_path, every=0, resume=True)
    other = TrainConfig(**{**AUGMENTED.__dict__, "dropout": 0.4})
    with pytest.raises(ValueError, match="config dropout: saved 0.3, now 0.4"):
        solver.train(*data, other, chunk_size=10, checkpoint=again)
    with pytest.raises(ValueError, match="the data differ"):
        solver.train(data[0] + 1, *data[1:], AUGMENTED, chunk_size=10, checkpoint=again)
    with pytest.raises(ValueError, match="chunk_size: saved 10, now 20"):
        solver.train(*data, AUGMENTED, chunk_size=20, checkpoint=again)


def test_corrupt_latest_falls_back_to_previous_then_fails_clearly(images, tmp_path,
                                                                  monkeypatch):
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    whole = solver.train(*data, AUGMENTED, chunk_size=10)
    train_killed_after(monkeypatch, data, tmp_path, 5)
    latest, previous = tmp_path / "progress.npz", tmp_path / "progress.previous.npz"
    assert latest.exists() and previous.exists()
    latest.write_bytes(latest.read_bytes()[:5000])  # truncated, as by a crash mid-copy
    notes = []
    resumed = solver.train(*data, AUGMENTED, chunk_size=10, checkpoint=resume.Checkpoint(
        tmp_path, every=0, resume=True, say=notes.append))
    assert_same_arrays(whole.params, resumed.params)
    assert resumed.history == whole.history
    assert len(notes) == 2 and "progress.npz is unreadable" in notes[0] \
        and "resuming from progress.previous.npz" in notes[0]
    assert notes[1] == f"resuming from {previous}: step 40"  # killed after 5 chunks of 10

    # A bit flipped inside the previous file's arrays: the zip's CRC catches it.
    raw = bytearray(previous.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    previous.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="no earlier progress file"):
        solver.train(*data, AUGMENTED, chunk_size=10,
                     checkpoint=resume.Checkpoint(tmp_path, every=0, resume=True))


def test_inconsistent_progress_is_refused(images, tmp_path, monkeypatch):
    """Arrays of the wrong shape, or impossible counts, in a file that reads fine."""
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    train_killed_after(monkeypatch, data, tmp_path, 3)
    path = tmp_path / "progress.npz"
    (tmp_path / "progress.previous.npz").unlink()
    good = dict(np.load(path))
    # The loop's counters are its last int32 scalars: best_val_correct, stale, stopped_at.
    counters = [k for k in sorted((k for k in good if k.startswith("state/")),
                                  key=lambda k: int(k.split("/")[1]))
                if good[k].shape == () and good[k].dtype == np.int32][-3:]
    best, _, stopped_at = counters
    assert good[stopped_at] == AUGMENTED.num_iters and 0 <= good[best] <= len(data[3])
    for name, value, message in [
            ("state/0", np.zeros((3, 3), np.float32), "state leaf 0"),
            ("outputs/val_correct", -np.ones((1, 30), np.int32), "validation hits beyond"),
            ("outputs/val_correct", np.full((1, 30), 100000, np.int32), "validation hits beyond"),
            ("outputs/train_correct", np.full((1, 30), 21, np.int32), "training hits beyond"),
            (best, np.array(100000, np.int32), "a best validation count that no validation"),
            (best, good[best] + 1, "a best validation count that no validation"),
            # A stop after step 1: before any validation could have stopped the run.
            (stopped_at, np.array(1, np.int32), "an early stop where no validation")]:
        np.savez(path, **{**good, name: value})
        with pytest.raises(ValueError, match=message):
            solver.train(*data, AUGMENTED, chunk_size=10,
                         checkpoint=resume.Checkpoint(tmp_path, every=0, resume=True))
    meta = json.loads(str(good["meta"]))
    np.savez(path, **{**good, "meta": np.array(json.dumps({**meta, "version": "0.0.1"}))})
    with pytest.raises(ValueError, match="written by jaxnet 0.0.1, this is"):
        solver.train(*data, AUGMENTED, chunk_size=10,
                     checkpoint=resume.Checkpoint(tmp_path, every=0, resume=True))


def test_sweep_resumed_in_its_second_group_equals_uninterrupted(images, tmp_path, monkeypatch):
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    configs = sweep.grid(AUGMENTED, hidden_size=[20, 30], learning_rate=[1e-3, 3e-3])
    whole = sweep.run_sweep(configs, *data, chunk_size=10, keep_params=True)
    # 10 chunks per group, the last without a save: call 12 is in the second group.
    restore = kill_after(monkeypatch, sweep._ChunkHook, 12)
    with pytest.raises(Killed):
        sweep.run_sweep(configs, *data, chunk_size=10, keep_params=True,
                        checkpoint=resume.Checkpoint(tmp_path, every=1e-9))
    restore()
    saved = json.loads(str(np.load(tmp_path / "progress.npz")["meta"]))
    assert saved["position"] == [1, 0] and saved["step"] == 30
    assert sorted(saved["finished"]) == ["0", "1"]
    resumed = sweep.run_sweep(configs, *data, chunk_size=10, keep_params=True,
                              checkpoint=resume.Checkpoint(tmp_path, every=1e-9, resume=True))
    assert resumed.best_index == whole.best_index
    assert_same_arrays(whole.best_params, resumed.best_params)
    for a, b in zip(whole.results, resumed.results):
        assert (a.status, a.val_acc, a.history) == (b.status, b.val_acc, b.history)
        assert_same_arrays(a.params, b.params)
    # The finished sweep's progress holds every result: a resumed run trains nothing.
    monkeypatch.setattr(sweep, "_train_chunk", None)
    again = sweep.run_sweep(configs, *data, chunk_size=10, keep_params=True,
                            checkpoint=resume.Checkpoint(tmp_path, every=1e-9, resume=True))
    assert [r.val_acc for r in again.results] == [r.val_acc for r in whole.results]


def test_sweep_progress_with_impossible_values_is_not_trusted(images, tmp_path, monkeypatch):
    """Well-formed sweep progress with values no sweep writes: the previous file is used
    (finished records), or the resume is refused (the chunk in training)."""
    data = [images[k] for k in ("X_train", "y_train", "X_val", "y_val")]
    configs = sweep.grid(AUGMENTED, hidden_size=[20, 30], learning_rate=[1e-3, 3e-3])
    whole = sweep.run_sweep(configs, *data, chunk_size=10)
    restore = kill_after(monkeypatch, sweep._ChunkHook, 12)
    with pytest.raises(Killed):
        sweep.run_sweep(configs, *data, chunk_size=10,
                        checkpoint=resume.Checkpoint(tmp_path, every=1e-9))
    restore()
    path = tmp_path / "progress.npz"
    good = dict(np.load(path))
    meta = json.loads(str(good["meta"]))
    # A finished config's accuracy of 500: the previous file (one chunk earlier) is used.
    meta["finished"]["0"]["val_acc"] = 500.0
    np.savez(path, **{**good, "meta": np.array(json.dumps(meta))})
    notes = []
    resumed = sweep.run_sweep(configs, *data, chunk_size=10, checkpoint=resume.Checkpoint(
        tmp_path, every=0, resume=True, say=notes.append))
    assert len(notes) == 2 and "progress.npz is inconsistent" in notes[0] \
        and "hold values no sweep gives" in notes[0]
    assert notes[1].startswith(f"resuming from {tmp_path / 'progress.previous.npz'}: ")
    assert [r.val_acc for r in resumed.results] == [r.val_acc for r in whole.results]
    assert resumed.best_index == whole.best_index
    # The chunk in training with a best-validation count of 100000 (of 100 rows): refused.
    counts = [k for k in good if k.startswith("state/") and good[k].dtype == np.int32
              and good[k].shape == (2,)]
    best = sorted(counts, key=lambda k: int(k.split("/")[1]))[-3]
    np.savez(path, **{**good, best: np.full(2, 100000, np.int32)})
    (tmp_path / "progress.previous.npz").unlink()
    with pytest.raises(ValueError, match="a best validation count that no validation gave"):
        sweep.run_sweep(configs, *data, chunk_size=10,
                        checkpoint=resume.Checkpoint(tmp_path, every=0, resume=True))


def test_search_resumed_in_its_second_stage_equals_uninterrupted(images, tmp_path,
                                                                 monkeypatch):
    plan = search.SearchPlan(coarse=3, coarse_hidden=20, coarse_epochs=4, top=2, narrow=2,
                             narrow_hidden=30, narrow_epochs=4, final_hidden=30,
                             final_epochs=4, kinds=("none", "standardize"))
    dataset = {**images, "mean_image": np.zeros(3072, np.float32)}
    options = dict(chunk_size=3)
    whole = search.run_search(plan, dataset, tmp_path / "whole", **options)
    calls = {"stage": None}
    original = search.run_stage

    def run_stage(name, *args, **kwargs):
        calls["stage"] = name
        return original(name, *args, **kwargs)
    monkeypatch.setattr(search, "run_stage", run_stage)
    original_after = sweep._ChunkHook.after_chunk

    def after_chunk(self, progress):
        original_after(self, progress)
        if calls["stage"] == "narrow":
            raise Killed
    monkeypatch.setattr(sweep._ChunkHook, "after_chunk", after_chunk)
    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        search.run_search(plan, dataset, out, checkpoint=resume.Checkpoint(out / "checkpoint",
                                                                           every=1e-9), **options)
    monkeypatch.setattr(sweep._ChunkHook, "after_chunk", original_after)
    assert (out / "coarse" / "results.json").exists() and not (out / "narrow").exists()
    resumed = search.run_search(plan, dataset, out, checkpoint=resume.Checkpoint(
        out / "checkpoint", every=1e-9, resume=True), **options)
    def timeless(rows):
        return [{k: v for k, v in row.items() if "seconds" not in k and "wall" not in k}
                for row in rows]
    assert [timeless(stage["top"]) for stage in whole["stages"]] == \
        [timeless(stage["top"]) for stage in resumed["stages"]]
    assert resumed["best"]["config"] == whole["best"]["config"]
    assert timeless([resumed["best"]["metrics"]]) == timeless([whole["best"]["metrics"]])
    a, b = np.load(tmp_path / "whole" / "best" / "params.npz"), np.load(out / "best" /
                                                                        "params.npz")
    assert_same_arrays({k: a[k] for k in PARAMS}, {k: b[k] for k in PARAMS})


# ----------------------------------------------------------------------------- the commands

def script(name: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / name), *args]


@pytest.fixture(scope="module")
def npz_data(images, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "images.npz"
    np.savez(path, **images)
    return path


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``path`` exists while ``process`` still runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} was written"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def run_folder(folder: Path) -> tuple:
    """Everything of a finished run folder that must not depend on an interruption."""
    params = np.load(folder / "params.npz")
    metrics = {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items()
               if "wall" not in k}
    return ({k: params[k] for k in PARAMS}, json.loads((folder / "history.json").read_text()),
            metrics, json.loads((folder / "config.json").read_text()))


TRAIN_FLAGS = ("--num-iters", "1200", "--batch-size", "20", "--hidden-size", "30",
               "--optimizer", "adam", "--learning-rate", "1e-3", "--reg", "0.01", "--std", "1e-2",
               "--dropout", "0.3", "--flip", "1", "--translate", "1", "--preprocess",
               "standardize")


@pytest.fixture(scope="module")
def uninterrupted(npz_data, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(script("train.py", "--data", str(npz_data), *TRAIN_FLAGS, "--out", str(out),
                          "--checkpoint-every", "0"), check=True, capture_output=True)
    assert not (out / "checkpoint").exists()
    return run_folder(out)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_train_script_killed_then_resumed_equals_uninterrupted(signum, npz_data, uninterrupted,
                                                                tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(script("train.py", "--data", str(npz_data), *TRAIN_FLAGS,
                                       "--out", str(out), "--checkpoint-every", "1e-9"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The second save has replaced the first: the run is two chunks in, ten to go.
    wait_for(out / "checkpoint" / "progress.previous.npz", process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[
        signum]
    if signum != signal.SIGKILL:
        assert stderr.strip().splitlines()[-1] == (
            f"error: stopped by {signum.name}; progress saved in {out / 'checkpoint'}; "
            f"continue with: python {REPO / 'scripts' / 'train.py'} --resume {out}")
        assert "Traceback" not in stderr
    assert not (out / "params.npz").exists()
    step = json.loads(str(np.load(out / "checkpoint" / "progress.npz")["meta"]))["step"]
    assert 200 <= step < 1200
    done = subprocess.run(script("train.py", "--resume", str(out)), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert not (out / "checkpoint").exists()
    params, history, metrics, config = run_folder(out)
    whole_params, whole_history, whole_metrics, whole_config = uninterrupted
    assert_same_arrays(params, whole_params)
    assert (history, metrics, config) == (whole_history, whole_metrics, whole_config)


def test_second_ctrl_c_stops_at_once(npz_data, tmp_path):
    """Chunks of 100 steps of a 2000-unit net take seconds: the second SIGINT comes while
    the first waits for the chunk to end."""
    out = tmp_path / "run"
    process = subprocess.Popen(script("train.py", "--data", str(npz_data), "--hidden-size",
                                      "2000", "--out", str(out), "--checkpoint-every", "0"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoint" / "args.json", process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1] == ("error: interrupted again; stopped at once, "
                                               "without saving")
    assert not list((out / "checkpoint").glob("*.npz"))


def test_resume_refuses_changed_flags_and_missing_progress(npz_data, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(script("train.py", "--data", str(npz_data), *TRAIN_FLAGS,
                                      "--out", str(out), "--checkpoint-every", "1e-9"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(out / "checkpoint" / "progress.npz", process)
    process.kill()
    process.wait()
    changed = subprocess.run(script("train.py", "--resume", str(out), "--dropout", "0.5"),
                             capture_output=True, text=True)
    assert changed.returncode == 2
    assert changed.stderr == ("error: --dropout 0.5 differs from the run's 0.3: --resume "
                              "continues a run with its own settings (start a new run to "
                              "change them)\n")
    same = subprocess.run(script("train.py", "--resume", str(out), "--dropout", "0.3",
                                 "--data", str(npz_data) + ".missing"),
                          capture_output=True, text=True)
    assert same.returncode == 2 and "missing" in same.stderr and "Traceback" not in same.stderr
    nothing = subprocess.run(script("train.py", "--resume", str(tmp_path)), capture_output=True,
                             text=True)
    assert nothing.returncode == 2
    assert "nothing to resume (checkpoint/args.json is missing" in nothing.stderr


def run_whole_and_start_saving(name: str, flags: tuple, tmp_path: Path) -> tuple:
    """Run ``scripts/name`` to the end without saving (``tmp_path/whole``), then start the
    same command saving after every chunk into ``tmp_path/resumed``; return both folders
    and the running process."""
    whole, out = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run(script(name, *flags, "--out", str(whole), "--checkpoint-every", "0"),
                   check=True, capture_output=True)
    process = subprocess.Popen(script(name, *flags, "--out", str(out), "--checkpoint-every",
                                      "1e-9"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return whole, out, process


def test_sweep_script_terminated_in_second_group_then_resumed(npz_data, tmp_path):
    flags = ("--data", str(npz_data), "--num-iters", "300", "--batch-size", "20",
             "--hidden-size", "20,30", "--lr", "1e-3,3e-3", "--reg", "0.01", "--std", "1e-2",
             "--optimizer", "adam", "--dropout", "0.2", "--flip", "1")
    whole, out, process = run_whole_and_start_saving("sweep.py", flags, tmp_path)
    progress = out / "checkpoint" / "progress-none.npz"
    deadline = time.monotonic() + 120
    while True:  # until the second group (hidden 30) has saved a chunk of its own
        assert process.poll() is None and time.monotonic() < deadline
        try:
            meta = json.loads(str(np.load(progress)["meta"]))
        except (OSError, ValueError, KeyError):
            meta = {}
        if meta.get("position") == [1, 0]:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert not (out / "results.csv").exists()
    done = subprocess.run(script("sweep.py", "--resume", str(out)), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads((folder / "results.json").read_text())["results"]
            for folder in (whole, out)]
    for row in rows[0] + rows[1]:
        row.pop("seconds")
    assert rows[0] == rows[1]
    a, b = run_folder(whole / "best"), run_folder(out / "best")
    assert_same_arrays(a[0], b[0])
    assert a[1:] == b[1:]


def test_search_script_killed_in_narrow_stage_then_resumed(npz_data, tmp_path):
    flags = ("--data", str(npz_data), "--coarse", "2", "--coarse-hidden", "20",
             "--coarse-epochs", "5", "--top", "1", "--narrow", "2", "--narrow-hidden", "20",
             "--narrow-epochs", "20", "--final-hidden", "20", "--final-epochs", "5",
             "--final-lr-scales", "1", "--preprocess", "none", "--batch-size", "20")
    whole, out, process = run_whole_and_start_saving("search.py", flags, tmp_path)
    wait_for(out / "checkpoint" / "progress-narrow-none.npz", process)
    process.kill()
    process.wait()
    assert (out / "coarse" / "results.json").exists() and not (out / "best").exists()
    done = subprocess.run(script("search.py", "--resume", str(out)), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (whole, out)]
    assert summaries[0]["best"]["config"] == summaries[1]["best"]["config"]
    a, b = run_folder(whole / "best"), run_folder(out / "best")
    assert_same_arrays(a[0], b[0])
    assert a[1:] == b[1:]


def test_a_signal_as_the_run_ends_exits_with_its_status_after_the_results(capsys):
    """A Ctrl-C that arrives after the last chunk: the run completes, then exits 130."""
    def main():
        os.kill(os.getpid(), signal.SIGINT)
        return 0
    with pytest.raises(SystemExit) as end:
        cli.run(main)
    assert end.value.code == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: SIGINT arrived as the run ended; its results are complete")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
