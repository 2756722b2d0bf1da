"""Bad input and failures: one clear line on stderr and exit status 2, found before training,
and no lost, mixed or half-written output folders (issue 20).

Most cases are checked on the functions the commands call; the subprocess runs prove the
one-line contract of each command and fail before any training, so they stay fast.
"""
import argparse
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from cifar_format import write_cifar10
from conftest import REPO
from jaxnet import data, download, preprocess, runs, search, solver
from jaxnet.config import TrainConfig
from jaxnet.saved_model import MARKER, check_complete, load_model, save_model
from jaxnet.commands import cli
from jaxnet.commands import sweep as sweep_command
from jaxnet.validate import MAX_CLASSES, npz_headers

CPU = jax.devices("cpu")[0]
GIB = 2**30


def run_script(name, *args, timeout=120):
    """A command of scripts/, offline (an unreachable mirror), from the repository root."""
    env = {**os.environ, "JAXNET_CIFAR10_URL": "http://127.0.0.1:9/x.tar.gz",
           "JAXNET_CIFAR10_MD5": "0" * 32}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc, message):
    """Exit status 2 and exactly one stderr line holding ``message``, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr


def splits(rng, n, d=12, classes=3):
    y = rng.randint(0, classes, n)
    return (y[:, None] + rng.randn(n, d)).astype(np.float32), y


@pytest.fixture
def npz(tmp_path):
    """A tiny dataset of 12-feature rows with a test split: path of the .npz."""
    rng = np.random.RandomState(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        arrays[f"X_{split}"], arrays[f"y_{split}"] = splits(rng, n)
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_no_test(tmp_path):
    rng = np.random.RandomState(1)
    (X, y), (Xv, yv) = splits(rng, 60), splits(rng, 20)
    path = tmp_path / "no_test.npz"
    np.savez(path, X_train=X, y_train=y, X_val=Xv, y_val=yv)
    return path


def forge_npy_shape(path, member, shape):
    """Rewrite ``member``'s .npy header in the .npz ``path`` to declare ``shape``."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    raw = members[member]
    header_len = struct.unpack("<H", raw[8:10])[0]
    header = raw[10:10 + header_len].decode("latin1")
    start = header.index("'shape': (")
    end = header.index(")", start) + 1
    header = header[:start] + f"'shape': {shape!r}" + header[end:]
    header = header.rstrip().ljust(header_len - 1) + "\n"
    assert len(header) == header_len
    members[member] = raw[:10] + header.encode("latin1") + raw[10 + header_len:]
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


# ----------------------------------------------------------------------------- run folders

def small_run(features=12, classes=3):
    """Params of a 4-unit net and a history whose last loss is NaN."""
    rng = np.random.RandomState(0)
    params = {"W1": rng.randn(features, 4), "b1": np.zeros(4), "W2": rng.randn(4, classes),
              "b2": np.zeros(classes)}
    history = {"loss_history": [1.0, float("nan")], "train_acc_history": [0.5],
               "val_acc_history": [0.4]}
    return params, history


def test_run_folder_is_marked_complete_last_and_a_failed_write_is_never_complete(
        tmp_path, monkeypatch):
    params, history = small_run(features=3072, classes=10)
    out = tmp_path / "run"
    runs.write_run(out, {"a": 1}, params, history, {"val_acc": 0.4},
                   {"mean_image": np.zeros(3072, np.float32)})
    assert (out / MARKER).read_text().split() == sorted(
        ["config.json", "history.json", "loss_acc.png", "metrics.json", "params.npz",
         "weights.png"])
    assert preprocess.load_classifier(out / "params.npz").params["W1"].shape == (3072, 4)

    # A second write that fails half-way (here: the weights plot) leaves no marker behind,
    # and readers refuse the folder instead of taking its params for a finished run's.
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(runs, "plot_weights", disk_full)
    with pytest.raises(OSError, match="No space left"):
        runs.write_run(out, {"a": 2}, params, history, {"val_acc": 0.4},
                       {"mean_image": np.zeros(3072, np.float32)})
    assert not (out / MARKER).exists()
    with pytest.raises(ValueError, match=r"run is an incomplete run folder \(no COMPLETE"):
        preprocess.load_classifier(out / "params.npz")
    # A params.npz outside a run folder is not a run folder's: it loads as before.
    alone = tmp_path / "alone"
    alone.mkdir()
    os.replace(out / "params.npz", alone / "params.npz")
    assert preprocess.load_classifier(alone / "params.npz").class_names[0] == "airplane"


def test_history_with_nan_is_written_as_valid_json_with_null(tmp_path):
    params, history = small_run()
    runs.write_run(tmp_path / "run", {}, params, history, {"final_loss": float("inf")})
    text = (tmp_path / "run" / "history.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["loss_history"] == [1.0, None]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == {"final_loss": None}


def test_claim_out_refuses_files_reuse_and_unwritable_places(tmp_path):
    # A file; a reused folder without --overwrite (nothing touched).
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*file is a file; give a folder"):
        runs.claim_out(tmp_path / "file")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("weights.png", "params.npz", MARKER):
        (old / name).write_text("old")
    (old / "best").mkdir()
    with pytest.raises(ValueError, match=r"already holds COMPLETE, best, params.npz, "
                                         r"weights.png; give a new folder, or --overwrite"):
        runs.claim_out(old)
    assert sorted(os.listdir(old)) == ["COMPLETE", "best", "params.npz", "weights.png"]
    # --overwrite clears what the commands write, and refuses (never deletes) anything else.
    (old / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"--overwrite clears only what jaxnet writes.*notes.txt"):
        runs.claim_out(old, overwrite=True)
    assert len(os.listdir(old)) == 5
    (old / "notes.txt").unlink()
    runs.claim_out(old, overwrite=True).release()
    assert os.listdir(old) == []
    # A new folder is made for the lock, and removed again when nothing was written.
    lock = runs.claim_out(tmp_path / "new" / "deeper")
    assert os.listdir(tmp_path / "new" / "deeper") == [".lock"]
    lock.release()
    assert not (tmp_path / "new").exists()
    # Unwritable: below a file, and on a file system that refuses writes.
    with pytest.raises(ValueError, match=r"--out .*file/sub is not writable"):
        runs.claim_out(tmp_path / "file" / "sub")
    with pytest.raises(ValueError, match=r"--out /sys/jaxnet-run is not writable"):
        runs.claim_out("/sys/jaxnet-run")


@pytest.mark.parametrize("flags, message", [
    (["--out", "{tmp}/d.npz"], "is a file; give a folder"),
    (["--out", "{tmp}/d.npz/run"], "is not writable"),
    (["--out", "{tmp}/used"], "already holds old.txt; give a new folder, or --overwrite"),
    # --verbose would print "iteration 0 / 1000" had training started.
    (["--eval-test", "--verbose", "--data", "{tmp}/no_test.npz"], "--eval-test needs a test split"),
    # 10**8 hidden units: beyond any machine's memory even for rows of 12 features.
    (["--hidden-size", "100000000"], "GiB (data, weights, optimizer state"),
    (["--seed", "-1"], "argument --seed: must be an integer in [0, 2**32), got -1"),
    (["--data-dir", "{tmp}/d.npz", "--data", ""], "--data-dir {tmp}/d.npz is a file"),
])
def test_train_script_refuses_before_training(npz, npz_no_test, tmp_path, flags, message):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "old.txt").write_text("old")
    flags = [f.format(tmp=tmp_path) for f in flags]
    if "--out" not in flags:
        flags += ["--out", tmp_path / "run"]
    if "--data" not in flags:
        flags = ["--data", npz, *flags]
    proc = run_script("train.py", *flags)
    one_error_line(proc, message.format(tmp=tmp_path))
    assert proc.stdout == "" and not (tmp_path / "run").exists()


def test_train_script_overwrite_replaces_an_old_run(npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "weights.png").write_text("an image-trained run's plot")
    proc = run_script("train.py", "--data", npz, "--num-iters", 5, "--batch-size", 10,
                      "--hidden-size", 4, "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    # 12-feature rows get no weights.png: the old one is gone, not listed as this run's.
    assert sorted(os.listdir(out)) == ["COMPLETE", "config.json", "history.json",
                                       "loss_acc.png", "metrics.json", "params.npz"]


def test_diverged_train_run_is_saved_with_null_and_ends_with_an_error(npz, tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "--data", npz, "--num-iters", 20, "--batch-size", 10,
                      "--hidden-size", 4, "--learning-rate", "1e30", "--std", 1,
                      "--out", out)
    one_error_line(proc, "error: training diverged: the loss became")
    assert "lower --learning-rate" in proc.stderr
    history = json.loads((out / "history.json").read_text())   # valid JSON: null, not NaN
    assert None in history["loss_history"]
    assert json.loads((out / "metrics.json").read_text())["diverged"] is True
    # Its params are NaN: kept as a record, never marked complete, refused by predict.
    assert "its params are not finite" in proc.stderr
    assert not (out / MARKER).exists()
    with pytest.raises(ValueError, match="holds a run that diverged"):
        check_complete(out)


def test_num_test_and_eval_test_checks():
    dataset = {"X_test": np.zeros((20, 3))}
    assert runs.check_test_split(dataset, True, None) == 20      # default: all of a small split
    assert runs.check_test_split({"X_test": np.zeros((5000, 3))}, True, None) == 1000
    assert runs.check_test_split(dataset, True, 20) == 20
    with pytest.raises(ValueError, match="--num-test 21 exceeds the 20 rows"):
        runs.check_test_split(dataset, True, 21)
    with pytest.raises(ValueError, match="--eval-test needs a test split"):
        runs.check_test_split({}, True, None)
    assert runs.check_test_split({}, False, 30) == 30


# ----------------------------------------------------------------------------- memory

def test_memory_estimate_refuses_runs_beyond_the_device_and_the_budget():
    rng = np.random.RandomState(0)
    (X, y), (Xv, yv) = splits(rng, 50, d=3072, classes=10), splits(rng, 10, d=3072, classes=10)
    dataset = {"X_train": X, "y_train": y, "X_val": Xv, "y_val": yv}
    ok = TrainConfig(hidden_size=50, num_iters=100)
    runs.check_memory(ok, 1, dataset, CPU)
    # Steps and row indices are int32 in compiled code.
    with pytest.raises(ValueError, match=r"num_iters must be an integer in \[1, 2\*\*31\)"):
        TrainConfig(num_iters=2**31).validate()
    for config in (TrainConfig(hidden_size=10**7), TrainConfig(num_iters=10**9),
                   TrainConfig(batch_size=10**9)):
        with pytest.raises(ValueError, match=r"needs about [0-9.]+ GiB .* more than the "
                                             r"[0-9.]+ GiB this device has"):
            runs.check_memory(config, 1, dataset, CPU)
    # Sizes under 1 GiB are given in MiB or KiB, never as "0.0 GiB".
    with pytest.raises(ValueError, match=r"needs about [0-9.]+ MiB .* more than the 1.0 KiB "
                                         r"of --max-memory"):
        runs.check_memory(ok, 1, dataset, CPU, max_memory=1000)
    assert [runs.memory_size(n) for n in (3 * 2**30, 0.25 * 2**20, 1536)] == [
        "3.0 GiB", "256.0 KiB", "1.5 KiB"]
    # A group of runs that together exceed the device needs --max-memory (chunks).
    wide = TrainConfig(hidden_size=4000, num_iters=10)
    one_gib = 3072 * 4000 * 4 * 3 / GIB
    many = int(runs.device_memory(CPU) / GIB / one_gib) + 2
    with pytest.raises(ValueError, match=f"the {many} configs of .* give --max-memory MB"):
        runs.check_memory(wide, many, dataset, CPU)
    runs.check_memory(wide, many, dataset, CPU, max_memory=2 * GIB)


def test_sweep_and_search_refuse_sizes_beyond_memory(npz, tmp_path):
    proc = run_script("sweep.py", "--data", npz, "--hidden-size", "50,100000000",
                      "--out", tmp_path / "s")
    one_error_line(proc, "a run of hidden size 100000000, batch size 100")
    proc = run_script("search.py", "--data", npz, "--coarse-epochs", "1e30", "--out",
                      tmp_path / "s")
    one_error_line(proc, "the coarse stage (1e+30 epochs of 60 rows, hidden 1000): num_iters "
                         "must be an integer in [1, 2**31)")
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- labels, sizes

def test_class_count_is_bounded_and_checked_before_any_cast(tmp_path):
    rng = np.random.RandomState(0)
    (X, y), (Xv, yv) = splits(rng, 20), splits(rng, 10)
    for label, dtype in ((10**8, np.int64), (2**40, np.int64), (2**64 - 1, np.uint64)):
        bad = y.astype(dtype)
        bad[3] = label
        np.savez(tmp_path / "d.npz", X_train=X, y_train=bad, X_val=Xv, y_val=yv)
        with pytest.raises(ValueError, match=f"labels go up to {label}, which would make a "
                                             f"model of {label + 1} classes"):
            data.load_npz(tmp_path / "d.npz")
        with pytest.raises(ValueError, match=f"at most {MAX_CLASSES}"):
            solver.check_data(X, bad, Xv, yv)


def test_forged_npz_headers_are_refused_before_reading(tmp_path, npz, monkeypatch):
    params, _ = small_run()
    save_model(tmp_path / "p.npz", params)
    forge_npy_shape(tmp_path / "p.npz", "W1.npy", (3072, 10**9))
    forge_npy_shape(npz, "X_train.npy", (3072, 10**9))

    def no_reading(*args, **kwargs):
        raise AssertionError("np.load called on a forged file")
    monkeypatch.setattr(np, "load", no_reading)
    with pytest.raises(ValueError, match=r"array 'W1' declares shape \(3072, 1000000000\) of "
                                         r"float64 \(24,576,000,000,000 bytes\) but its member "
                                         r"holds 384: truncated or forged"):
        load_model(tmp_path / "p.npz")
    with pytest.raises(ValueError, match=r"d.npz is not a readable .npz.*declares shape"):
        data.load_npz(npz)


def test_zip_bomb_of_the_wrong_shape_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    # 48 MB of zeros compress to ~50 KB: shapes that do not fit are refused unread.
    params, _ = small_run()
    params["W2"] = np.zeros((4, 3 * 10**6 // 2), np.float64)
    np.savez_compressed(tmp_path / "bomb.npz", **params, meta=np.array("{}"))
    assert (tmp_path / "bomb.npz").stat().st_size < 200_000
    headers = npz_headers(tmp_path / "bomb.npz")
    assert headers["W2"][0] == (4, 1500000)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("inflated"))
    with pytest.raises(ValueError, match=r"bomb.npz: params shapes do not fit together"):
        load_model(tmp_path / "bomb.npz")
    rng = np.random.RandomState(0)
    (X, _), (Xv, yv) = splits(rng, 20), splits(rng, 10)
    np.savez_compressed(tmp_path / "data.npz", X_train=X, y_train=np.zeros(10**7, np.int64),
                        X_val=Xv, y_val=yv)
    with pytest.raises(ValueError, match="y_train has 10000000 labels but there are 20"):
        data.load_npz(tmp_path / "data.npz")


def test_cifar_pickle_claiming_more_entries_than_it_holds_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    # An object array of 2 entries whose shape claims 2**40 (numpy would reserve 8 TiB), and a
    # uint8 array of 2 rows claiming 2**40 rows: (2,) is BININT1 2, TUPLE1 and (2, 3072) is
    # BININT1 2, BININT2 3072, TUPLE2; the 2 becomes LONG1 2**40.
    huge = b"\x8a\x06" + (2**40).to_bytes(6, "little")
    for array, shape, message in (
            (np.array([1, 2], dtype=object), b"K\x02\x85", "not a plain array of numbers"),
            (np.zeros((2, 3072), np.uint8), b"K\x02M\x00\x0c\x86",
             r"declares shape \(1099511627776, 3072\) of uint8")):
        raw = pickle.dumps({b"data": array, b"labels": [0, 1]}, protocol=3)
        assert raw.count(shape) == 1
        path.write_bytes(raw.replace(shape, huge + shape[2:]))
        with pytest.raises(ValueError, match=r"data_batch_1 is not a readable CIFAR-10 batch .*"
                                             + message):
            data._read_batch(path)


# ----------------------------------------------------------------------------- files

def test_archive_errors_are_one_line(tmp_path):
    # A file that is no archive at all, with its own (matching) md5.
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive\n" * 100)
    md5 = download._md5_of_file(junk)
    with pytest.raises(download.DownloadError) as info:
        download.download_cifar10(tmp_path / "root", url=junk.as_uri(), md5=md5)
    assert "is not a readable .tar.gz archive" in str(info.value)
    assert "\n" not in str(info.value)
    # Members that clash: one name as a file, then as a folder.
    archive = tmp_path / "clash.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, is_dir in (("cifar-10-batches-py/x", False), ("cifar-10-batches-py/x", True)):
            member = tarfile.TarInfo(name)
            member.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
            tar.addfile(member, io.BytesIO(b""))
    with pytest.raises(download.DownloadError, match=r"member 'cifar-10-batches-py/x' clashes with "
                                                 r"another member"):
        download.download_cifar10(tmp_path / "root", url=archive.as_uri(),
                              md5=download._md5_of_file(archive))
    assert not (tmp_path / "root").exists()
    # A root that is a file.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match=r"afile is a file, not a folder"):
        download.download_cifar10(tmp_path / "afile", url=archive.as_uri(), md5="0" * 32)


def test_truncated_batch_is_found_and_replaced_by_get_cifar10(tmp_path):
    root = tmp_path / "root"
    write_cifar10(root, per_class=2, tar=root / "cifar-10-python.tar.gz")
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    intact = batch.read_bytes()
    batch.write_bytes(intact[:len(intact) // 2])
    assert download.cifar10_present(root) and not download.cifar10_present(root, thorough=True)
    with pytest.raises(ValueError, match=r"data_batch_1 is not a readable CIFAR-10 batch.*"
                                         r"get_cifar10.py"):
        data.load_CIFAR10(root)
    # The command the message names now repairs the folder from the verified archive.
    md5 = download._md5_of_file(root / "cifar-10-python.tar.gz")
    proc = run_script("get_cifar10.py", "--root", root, "--url",
                      (root / "cifar-10-python.tar.gz").as_uri(), "--md5", md5)
    assert proc.returncode == 0 and "already present" not in proc.stdout, proc.stdout
    assert batch.read_bytes() == intact


def test_bench_json_is_checked_before_the_benchmark(tmp_path):
    with pytest.raises(ValueError, match="--json .* is a folder"):
        runs.check_output_file(tmp_path, "--json")
    with pytest.raises(ValueError, match="cannot be written: .*missing: No such file"):
        runs.check_output_file(tmp_path / "missing" / "b.json", "--json")
    runs.check_output_file(tmp_path / "b.json", "--json")
    proc = run_script("bench.py", "--json", tmp_path, "--only", "peak")
    one_error_line(proc, f"--json {tmp_path} is a folder")


def test_non_npz_files_are_named_without_numpy_hints(tmp_path):
    (tmp_path / "notes.npz").write_text("just text\n")
    for load in (data.load_npz, load_model):
        with pytest.raises(ValueError) as info:
            load(tmp_path / "notes.npz")
        assert "allow_pickle" not in str(info.value)
        assert "not an .npz (zip) archive" in str(info.value)


# ----------------------------------------------------------------------------- flags

def test_sweep_and_search_flag_parsing():
    fields = {f.name: f for f in solver.dataclasses.fields(TrainConfig)}
    for text in (",", "", " , "):
        with pytest.raises(ValueError, match=r"--learning-rate: no values in"):
            sweep_command.parse_list(fields["learning_rate"], text)
    with pytest.raises(ValueError, match=r"--flip: cannot parse '0,2' \(expected 1/0"):
        sweep_command.parse_list(fields["flip"], "0,2")
    with pytest.raises(ValueError, match=r"--seed: cannot parse '-1' \(must be an integer in"):
        sweep_command.parse_list(fields["seed"], "-1")
    for name, text in (("reg", "1:inf"), ("learning_rate", "1e-3:inf"), ("translate", "0:inf"),
                       ("dropout", "nan:0.5")):
        with pytest.raises(ValueError, match="LOW and HIGH must be finite numbers"):
            cli.parse_range(name, text, "uniform")
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_float("inf")
    with pytest.raises(argparse.ArgumentTypeError):
        cli.memory_mb("nan")
    assert cli.memory_mb("inf") is None and cli.memory_mb("20") == 20.0
    with pytest.raises(ValueError, match="coarse_epochs must be a finite number > 0"):
        search.check_plan(search.SearchPlan(coarse_epochs=float("inf")),
                          {"X_train": np.zeros((10, 3))})


@pytest.mark.parametrize("script, flags, message", [
    ("sweep.py", ["--lr", ","], "--learning-rate: no values in ','"),
    ("sweep.py", ["--flip", "0,2"], "--flip: cannot parse '0,2'"),
    ("sweep.py", ["--random", "2", "--reg-range", "1:inf"], "must be finite numbers"),
    ("sweep.py", ["--max-memory", "nan"], "argument --max-memory: must be a number of MB > 0"),
    ("search.py", ["--final-lr-scales", "inf"],
     "argument --final-lr-scales: must be a finite number > 0, got inf"),
    ("search.py", ["--coarse-epochs", "inf"], "argument --coarse-epochs: must be a finite"),
    ("gradcheck.py", ["--tol", "nan"], "argument --tol: must be a finite number >= 0, got nan"),
    ("gradcheck.py", ["--num-checks", "1000000000"], "argument --num-checks: must be at most"),
])
def test_flag_errors_are_one_line(script, flags, message, tmp_path):
    proc = run_script(script, *flags, "--out", tmp_path / "o") if script != "gradcheck.py" \
        else run_script(script, *flags)
    one_error_line(proc, message)
    assert not (tmp_path / "o").exists()


def test_whiten_eps_must_be_finite():
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number >= 0"):
        cli.nonnegative_float("inf")
    X = np.random.RandomState(0).randn(30, 8)
    with pytest.raises(ValueError, match="eps must be finite and > 0; got inf"):
        preprocess.fit("zca", X, eps=float("inf"))
    with pytest.raises(ValueError, match="eps must be finite and >= 0; got inf"):
        preprocess.fit("pca", X, k=3, eps=float("inf"))


# ----------------------------------------------------------------------------- predict

def cifar_checkpoint(path, **change):
    params, _ = small_run(features=3072)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    params["W2"] = np.random.RandomState(0).randn(4, 10).astype(np.float32)
    params["b2"] = np.zeros(10, np.float32)
    params.update(change)
    save_model(path, params, extra={"mean_image": np.zeros(3072, np.float32)})
    return path


def forge_png_size(path, width, height):
    """Rewrite the IHDR chunk of a PNG to declare another size (with a valid CRC)."""
    raw = bytearray(path.read_bytes())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    raw[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr:ihdr + 17])))
    path.write_bytes(bytes(raw))


def test_predict_refuses_nan_complex_npz_models_and_decompression_bombs(tmp_path):
    nan = cifar_checkpoint(tmp_path / "nan.npz", b1=np.full(4, np.nan, np.float32))
    with pytest.raises(ValueError, match=r"nan.npz: b1 hold NaN or infinite values"):
        preprocess.load_classifier(nan)
    params, _ = small_run(features=3072)
    save_model(tmp_path / "complex.npz", {**params, "W1": params["W1"] + 0j},
                    extra={"mean_image": np.zeros(3072)})
    with pytest.raises(ValueError, match=r"params W1 must hold real numbers; got dtype complex"):
        preprocess.load_classifier(tmp_path / "complex.npz")
    npz_model, _ = small_run(features=12)
    save_model(tmp_path / "rows.npz", npz_model)
    with pytest.raises(ValueError, match=r"trained on an .npz of 12-feature rows \(--data\)"):
        preprocess.load_classifier(tmp_path / "rows.npz")

    image = tmp_path / "huge.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    forge_png_size(image, 20000, 20000)
    with pytest.raises(ValueError, match=r"huge.png: too large an image to decode safely"):
        preprocess.read_image(image)
    forge_png_size(image, 10000, 10000)   # between Pillow's warning and error limits
    with pytest.raises(ValueError, match=r"too large an image"):
        preprocess.read_image(image)

    good = cifar_checkpoint(tmp_path / "good.npz")
    proc = run_script("predict.py", good, image)
    one_error_line(proc, "huge.png: too large an image to decode safely")
    proc = run_script("predict.py", nan, image)
    one_error_line(proc, "NaN or infinite")
