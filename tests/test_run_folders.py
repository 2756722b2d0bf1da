"""Run folders: one writer at a time, file-system failures in one line with nothing
lost, and progress files readable like every other output.

The concurrent writers are real processes; the full disk and the read-only folder
are a real tmpfs mounted by the test (tests run as root).
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from jaxnet import resume, runs
from jaxnet.lock import LOCK_NAME, FolderBusy, FolderLock
from jaxnet.saved_model import MARKER


def train(*args, wait=True):
    """scripts/train.py with ``args``; the finished process, or the running one."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def one_error_line(proc, message):
    """Exit status 2 and exactly one stderr line holding ``message``, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.fixture
def npz(tmp_path):
    """A small dataset of 12-feature rows in 3 classes: path of the .npz."""
    rng = np.random.RandomState(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"y_{split}"] = rng.randint(0, 3, n)
        arrays[f"X_{split}"] = rng.randn(n, 12).astype(np.float32) + arrays[f"y_{split}"][:, None]
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A tmpfs of ``size`` mounted on ``folder`` while inside."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                   check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def remount(folder: Path, options: str):
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)


# ----------------------------------------------------------------------------- one writer

def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(npz, tmp_path):
    out = tmp_path / "run"
    first = train("--data", npz, "--out", out, "--num-iters", 10**6, "--batch-size", 10,
                  "--hidden-size", 4, "--checkpoint-every", 0.2, wait=False)
    try:
        lock = out / LOCK_NAME
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr
            time.sleep(0.1)
        # A new run, an --overwrite and a --resume of the folder, all while it trains.
        others = [train("--data", npz, "--out", out, "--hidden-size", 4, wait=False),
                  train("--data", npz, "--out", out, "--hidden-size", 4, "--overwrite",
                        wait=False),
                  train("--resume", out, wait=False)]
        for other in others:
            other.wait(timeout=120)
            other.stderr = other.stderr.read()
            one_error_line(other, f"{out} is being written by process {first.pid} (it holds "
                                  f"{lock}); wait for it to end, or give another folder")
        assert first.poll() is None          # the writer goes on, its folder untouched
        assert (out / "checkpoint" / "args.json").exists()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdout.close()
        first.stderr.close()
    # The kernel released the killed writer's lock: the folder can be claimed at once.
    with FolderLock(out) as claimed:
        assert claimed.path.read_text() == f"{os.getpid()}\n"
    assert not (out / LOCK_NAME).exists()


def test_lock_refuses_a_second_holder_in_one_process_and_names_it(tmp_path):
    with FolderLock(tmp_path / "a" / "b"):
        with pytest.raises(FolderBusy, match=rf"is being written by process {os.getpid()}"):
            FolderLock(tmp_path / "a" / "b").acquire()
    assert not (tmp_path / "a").exists()   # made for the lock, empty, removed again


# ----------------------------------------------------------------------------- file systems

def test_full_disk_is_one_line_and_the_run_resumes_identically(npz, tmp_path):
    flags = ["--data", npz, "--num-iters", 300, "--batch-size", 10, "--hidden-size", 4000,
             "--checkpoint-every", 1e-9]
    whole = train(*flags, "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    with tmpfs(tmp_path / "disk", "768k") as disk:
        # Progress holds params and best params (~512 KiB); the second save needs room for
        # a new file beside the first, which a 768 KiB disk has not.
        out = disk / "run"
        full = train(*flags, "--out", out)
        one_error_line(full, f"{out}/checkpoint/progress.npz: No space left on device; free "
                             f"space there, then run the command again")
        assert not list((out / "checkpoint").glob("*.tmp"))
        saved = json.loads(str(np.load(out / "checkpoint" / "progress.npz")["meta"]))
        assert saved["step"] == 100 and not (out / MARKER).exists()
        # Read-only, the progress folder or the whole run folder: refused before training.
        progress = out / "checkpoint"
        subprocess.run(["mount", "--bind", str(progress), str(progress)], check=True)
        try:
            remount(progress, "ro,bind")
            one_error_line(train("--resume", out),
                           f"--resume {out}: {progress} is not writable: Read-only file system")
        finally:
            subprocess.run(["umount", str(progress)], check=True)
        remount(disk, "ro")
        readonly = train("--resume", out)
        one_error_line(readonly, f"--resume {out} is not writable: Read-only file system")
        # Space again: the resumed run completes, equal to the run never interrupted.
        remount(disk, "rw,size=16m")
        resumed = train("--resume", out)
        assert resumed.returncode == 0, resumed.stderr
        a, b = np.load(tmp_path / "whole" / "params.npz"), np.load(out / "params.npz")
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert (out / MARKER).exists() and not (out / "checkpoint").exists()
        assert not (out / LOCK_NAME).exists()


def test_progress_files_get_the_mode_of_other_outputs(tmp_path):
    previous = os.umask(0o022)
    try:
        checkpoint = resume.Checkpoint(tmp_path / "checkpoint")
        checkpoint.save({"run": 1}, {"x": np.zeros(3)}, {"step": 1})
        checkpoint.save({"run": 1}, {"x": np.ones(3)}, {"step": 2})
        runs.write_json(tmp_path / "metrics.json", {"a": 1})
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in
             [checkpoint.path, checkpoint.previous_path, tmp_path / "metrics.json"]}
    assert modes == {"progress.npz": 0o644, "progress.previous.npz": 0o644,
                     "metrics.json": 0o644}


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("flags, message", [
    (["--ema", "0.99999999"], "ema must be in [0, 1); got 0.99999999, which is 1.0 in float32"),
    (["--ema", "0.99999999", "--compute-dtype", "bfloat16"],
     "ema must be in [0, 1); got 0.99999999, which is 1.0 in float32"),
    (["--mixup", "1e39"], "mixup must be finite and >= 0; got 1e+39, which is inf in float32"),
    (["--dropout", "0.999999999"], "dropout must be in [0, 1); got 0.999999999, which is 1.0"),
])
def test_values_that_round_out_of_range_are_refused_before_training(npz, tmp_path, flags,
                                                                    message):
    proc = train("--data", npz, "--out", tmp_path / "run", "--num-iters", 300, *flags)
    one_error_line(proc, message)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- messages

def test_messages_name_the_right_argument(tmp_path):
    from jaxnet import preprocess
    from jaxnet.commands import cli
    from jaxnet.compat import TwoLayerNet
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 4).astype(np.float32), np.arange(20) % 3
    net = TwoLayerNet(4, 10, 3)
    with pytest.raises(ValueError, match="^X_train has 3 features per row but the model "
                                         "expects 4$"):
        net.train(X[:, :3], y, X, y)
    with pytest.raises(ValueError, match="^X_val has 3 features per row but X_train has 4$"):
        net.train(X, y, X[:, :3], y)
    (tmp_path / "file").write_text("x")
    parser = cli.Parser()
    with pytest.raises(ValueError, match="is a file; give the run's folder"):
        cli.resolve_resume(parser, argparse.Namespace(resume=str(tmp_path / "file")), [])
    with pytest.raises(ValueError, match="no such folder"):
        cli.resolve_resume(parser, argparse.Namespace(resume=str(tmp_path / "none")), [])
    with pytest.raises(ValueError, match="is a folder; give an image file"):
        preprocess.read_image(tmp_path)
    with pytest.raises(ValueError, match="no such file"):
        preprocess.read_image(tmp_path / "none.png")


def test_a_sweep_never_chooses_a_config_whose_params_are_not_finite(monkeypatch):
    """A config whose loss stayed finite but whose best params are NaN is "diverged"."""
    from jaxnet import sweep
    from jaxnet.config import TrainConfig
    rng = np.random.RandomState(0)
    y, y_val = rng.randint(0, 3, 60), rng.randint(0, 3, 20)
    X = (rng.randn(60, 12) + y[:, None]).astype(np.float32)
    X_val = (rng.randn(20, 12) + y_val[:, None]).astype(np.float32)
    configs = sweep.grid(TrainConfig(hidden_size=8, num_iters=30, batch_size=10, std=0.1),
                         learning_rate=[1e-1, 1e-6])
    honest = sweep.run_sweep(configs, X, y, X_val, y_val)
    assert honest.best_index == 0 and honest.results[0].status == "ok"
    original = sweep._train_chunk

    def nan_for_the_first(*args, **kwargs):
        params, best_params, histories, best_val = original(*args, **kwargs)
        best_params = {k: v.copy() for k, v in best_params.items()}
        best_params["W1"][0, 0, 0] = np.nan
        return params, best_params, histories, best_val
    monkeypatch.setattr(sweep, "_train_chunk", nan_for_the_first)
    result = sweep.run_sweep(configs, X, y, X_val, y_val)
    assert [r.status for r in result.results] == ["diverged", "ok"]
    assert result.best_index == 1


# The forked child runs only Python's file calls (no JAX), so JAX's threads cannot deadlock it.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
def test_permission_denied_is_one_line_with_what_to_do(tmp_path):
    """As an unprivileged user (root writes anywhere): a folder it may not write."""
    from jaxnet.commands import cli
    from jaxnet.files import atomic_write
    # Outside pytest's private (0700) folder, so that the user can reach the folder.
    top = Path(tempfile.mkdtemp(prefix="jaxnet-permissions-"))
    top.chmod(0o755)
    locked = top / "locked"
    locked.mkdir(mode=0o755)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: drop to nobody, try, report through the pipe
        messages = []
        try:
            os.setgid(65534)
            os.setuid(65534)
            for attempt in (lambda: runs.claim_out(locked / "run"),
                            lambda: atomic_write(locked / "metrics.json", lambda f: f.write(b"{}"))):
                try:
                    attempt()
                    messages.append("no error")
                except (ValueError, OSError) as exc:
                    messages.append(cli.describe_error(exc))
        finally:
            os.write(write, json.dumps(messages).encode())
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        messages = json.loads(pipe.read())
    os.waitpid(pid, 0)
    shutil.rmtree(top)
    assert messages == [
        f"--out {locked}/run is not writable: Permission denied",
        f"{locked}/metrics.json: Permission denied; this user may not write there; give another "
        f"folder or change its permissions"]
