"""What a command-line run does around training: data, device, and the run folder.

Shared by ``scripts/train.py``, ``scripts/sweep.py`` and ``scripts/search.py``:
turn flags into a dataset and a device, and write a run's results as files.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

from . import data, download, model, preprocess, sweep
from .files import atomic_write
from .lock import LOCK_NAME, FolderLock
from .saved_model import MARKER, PROGRESS_FOLDER, mark_complete, save_model
from .plots import plot_history, plot_weights
from .validate import count_classes, host_memory

# Every name the commands write into --out; --overwrite clears nothing else.
OUTPUT_NAMES = {MARKER, "config.json", "history.json", "metrics.json", "params.npz",
                "loss_acc.png", "weights.png", "results.csv", "results.json", "heatmap.png",
                "summary.json", "best", "coarse", "narrow", "final", PROGRESS_FOLDER}
# The notebook's test subset: test_acc is measured on this many test rows by default.
NOTEBOOK_TEST_ROWS = 1000


def select_device(name: str | None) -> jax.Device:
    """This process's first device of platform ``name`` ("cpu"/"gpu"), or of JAX's
    default platform (in a multi-process job, jax.devices()[0] is process 0's)."""
    if name is None:
        return jax.local_devices()[0]
    try:
        return jax.local_devices(backend=name)[0]
    except RuntimeError:
        available = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise ValueError(f"no {name} device is available to JAX here (available: {available}); "
                         f"for a GPU install jax with CUDA support, e.g. "
                         f"pip install -U 'jax[cuda12]'") from None


def load_dataset(args, say=lambda message: print(message, file=sys.stderr)) -> dict:
    """The dataset the flags name: ``--data`` (.npz) or CIFAR-10 from ``--data-dir``.

    A missing CIFAR-10 folder is downloaded first (``say`` tells the user), so
    the first run on a fresh machine works; offline, the download error says
    how to get the data. Returns X_train, y_train, X_val, y_val and, when
    present, X_test, y_test (rows of features).
    """
    if args.data:
        return data.load_npz(args.data)
    root = Path(args.data_dir) if args.data_dir else data.default_data_dir()
    if root.exists() and not root.is_dir():
        raise ValueError(f"--data-dir {root} is a file; it must be the folder that holds "
                         f"cifar-10-batches-py (or that folder itself)")
    if not download.cifar10_present(root) and not (root / "data_batch_1").exists():
        say(f"CIFAR-10 not found in {root}; downloading it (about 163 MB) ...")
        try:
            download.download_cifar10(root)
        except download.DownloadError as exc:
            raise ValueError(f"{exc}. Get CIFAR-10 with: {data.download_command(root)}, "
                             f"or point --data-dir at a folder holding cifar-10-batches-py") \
                from None
    # The whole test split is kept: --num-test images give the notebook's test_acc,
    # all of them test_acc_full.
    return data.get_CIFAR10_data(root, args.num_training, args.num_validation, num_test=None)


def claim_out(out: Path, overwrite: bool = False, resuming: bool = False) -> FolderLock:
    """Make the run folder ``out`` this process's to write, for the rest of its life.

    First the folder's lock (``jaxnet.lock``): a second writer, new, ``--overwrite``
    or ``--resume``, is refused in one line naming the holder's pid; the lock is
    released when this process ends (or by ``release()``). Then, before training:
    a file, an unwritable place (read-only file system, no permission) or, for a
    new run, a folder that already holds files is refused; with ``overwrite`` a
    folder that holds only what the commands write is emptied (anything else in
    it is refused, never deleted). A resumed run's folder is kept as it is, but
    it and its progress folder must be writable. A refused claim leaves no new
    folder behind.
    """
    out = Path(out)
    flag = "--resume" if resuming else "--out"
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file; give a folder")
    lock = FolderLock(out)
    try:
        lock.acquire()
    except OSError as exc:
        raise ValueError(f"{flag} {out} is not writable: {exc.strerror or exc}") from None
    try:
        if resuming:
            for folder in (out, out / PROGRESS_FOLDER):
                _check_writable(folder, f"--resume {out}: {folder}")
        else:
            _empty_out(out, overwrite)
            _check_writable(out, f"--out {out}")
    except BaseException:
        lock.release()
        raise
    atexit.register(lock.release)
    return lock


def _empty_out(out: Path, overwrite: bool) -> None:
    """Refuse a folder that holds files, or with ``overwrite`` empty one that holds only
    what the commands write."""
    entries = sorted(set(os.listdir(out)) - {LOCK_NAME})
    if entries and not overwrite:
        raise ValueError(f"--out {out} already holds {', '.join(entries[:4])}"
                         f"{', ...' if len(entries) > 4 else ''}; give a new folder, or "
                         f"--overwrite to replace its contents")
    foreign = [e for e in entries if e not in OUTPUT_NAMES and not e.endswith(".tmp")]
    if foreign:
        raise ValueError(f"--overwrite clears only what jaxnet writes, and --out {out} also "
                         f"holds {', '.join(foreign[:4])}; remove them or give another folder")
    for entry in entries:
        path = out / entry
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            raise ValueError(f"--out {out} is not writable: {exc.strerror or exc}") from None


def _check_writable(folder: Path, what: str) -> None:
    """Raise ValueError ``WHAT is not writable: reason`` unless a file can be made in
    ``folder`` (when it exists)."""
    try:
        if folder.is_dir():
            tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise ValueError(f"{what} is not writable: {exc.strerror or exc}") from None


def check_output_file(path: Path, flag: str) -> None:
    """Check, before the work, that the file ``path`` given by ``flag`` can be written."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    try:
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        raise ValueError(f"{flag} {path} cannot be written: {path.parent}: "
                         f"{exc.strerror or exc}") from None


def check_test_split(dataset: dict, eval_test: bool, num_test: int | None) -> int:
    """Before training: ``eval_test`` needs a test split, of at least ``num_test`` rows when
    that is given. Returns the rows of test_acc: ``num_test``, or by default the notebook's
    1000 (all rows of a smaller split)."""
    rows = len(dataset["X_test"]) if "X_test" in dataset else 0
    if eval_test and "X_test" not in dataset:
        raise ValueError("--eval-test needs a test split; the dataset has no X_test (add X_test "
                         "and y_test to the .npz, or leave out --eval-test)")
    if num_test is None:
        return min(NOTEBOOK_TEST_ROWS, rows) if eval_test else NOTEBOOK_TEST_ROWS
    if eval_test and num_test > rows:
        raise ValueError(f"--num-test {num_test} exceeds the {rows} rows of the test split; "
                         f"give --num-test {rows} or fewer")
    return num_test


def device_memory(device: jax.Device) -> int:
    """Bytes of memory of ``device``: the host's for a CPU; 0 where unknown."""
    if device.platform == "cpu":
        return host_memory()
    stats = device.memory_stats() or {}
    return int(stats.get("bytes_limit", 0))


def check_memory(config, num_configs: int, dataset: dict, device: jax.Device,
                 input_size: int | None = None, max_memory: float | None = None) -> None:
    """Refuse, before training, a group of ``num_configs`` runs like ``config`` (a TrainConfig)
    that cannot fit in ``device``'s memory, saying how much it needs.

    ``input_size``: W1's rows when a transform maps the data's D features to k.
    With ``max_memory`` (bytes) a group trains in chunks, so only one run must
    fit, within the smaller of the budget and the device.
    """
    available = device_memory(device)
    budget = min(b for b in (available, max_memory) if b) if (available or max_memory) else 0
    if not budget:
        return
    X, X_val = dataset["X_train"], dataset["X_val"]
    itemsize = np.dtype(config.dtype).itemsize
    num_classes = count_classes(dataset["y_train"], dataset["y_val"])
    data_bytes = (X.size + X_val.size) * itemsize
    # The host-made minibatch indices (int32) and per-step flags and counts.
    schedule = config.num_iters * (4 * config.batch_size + 16)

    def need(n):
        return schedule + sweep.estimate_memory(config, n, X.shape[1], num_classes, data_bytes,
                                                input_size)
    shape = (f"hidden size {config.hidden_size}, batch size {config.batch_size} and "
             f"{config.num_iters} iterations")
    where = "of --max-memory" if budget == max_memory else "this device has"
    if need(1) > budget:
        raise ValueError(f"a run of {shape} needs about {memory_size(need(1))} (data, "
                         f"weights, optimizer state, activations, minibatch schedule), more than "
                         f"the {memory_size(budget)} {where}; lower --hidden-size, "
                         f"--batch-size or --num-iters")
    if max_memory is None and num_configs > 1 and need(num_configs) > available:
        raise ValueError(f"the {num_configs} configs of {shape} train together and need about "
                         f"{memory_size(need(num_configs))}, more than the "
                         f"{memory_size(available)} this device has; give --max-memory MB "
                         f"to train them in chunks")


def memory_size(num_bytes: float) -> str:
    """``num_bytes`` in words a user can compare: GiB from 1 GiB up, MiB below, KiB below 1 MiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if num_bytes >= size:
            return f"{num_bytes / size:.1f} {unit}"
    return f"{num_bytes / 2**10:.1f} KiB"


def evaluate(params: dict, dataset: dict, eval_test: bool, num_test: int = 1000) -> dict:
    """Accuracies of ``params``: train_acc, val_acc and, with ``eval_test``,
    test_acc on the first ``num_test`` test images (the notebook's subset) and
    test_acc_full on the whole test split."""
    def accuracy(X, y):
        predictions = np.concatenate([np.asarray(model.predict(params, X[i:i + 10000]))
                                      for i in range(0, len(X), 10000)])
        return float(np.mean(predictions == y))

    metrics = {f"{split}_acc": accuracy(dataset[f"X_{split}"], dataset[f"y_{split}"])
               for split in ("train", "val")}
    if eval_test:
        if "X_test" not in dataset:
            raise ValueError("--eval-test needs a test split; the dataset has no X_test")
        X, y = dataset["X_test"], dataset["y_test"]
        metrics["test_acc"] = accuracy(X[:num_test], y[:num_test])
        metrics["test_acc_full"] = accuracy(X, y)
    return metrics


def json_ready(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON's null): NaN is not
    JSON, and a diverged run's losses must still give a file every reader accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: json_ready(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(value) for value in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically; non-finite floats become null."""
    text = json.dumps(json_ready(obj), indent=2, allow_nan=False)
    atomic_write(path, lambda f: f.write(text.encode() + b"\n"))


def write_run(out: Path, config: dict, params: dict, history: dict, metrics: dict,
              extra: dict | None = None, complete: bool = True) -> dict:
    """Write a run folder; returns the paths written, by name.

    config.json, history.json, metrics.json, params.npz (a checkpoint with
    config and history), loss_acc.png, and weights.png when the inputs are
    32x32x3 images; then, unless ``complete`` is False (a run whose params are
    not finite, kept as a record but never to be used), COMPLETE.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)   # a folder being written is not complete
    paths = {name: out / name for name in
             ("config.json", "history.json", "metrics.json", "params.npz", "loss_acc.png")}
    write_json(paths["config.json"], config)
    write_json(paths["history.json"], history)
    write_json(paths["metrics.json"], metrics)
    save_model(paths["params.npz"], params, config, history, extra)
    plot_history(history, paths["loss_acc.png"])
    if np.shape(params["W1"])[0] == 32 * 32 * 3:
        paths["weights.png"] = plot_weights(params["W1"], out / "weights.png")
    if complete:
        mark_complete(out)
    return paths


def save_run(out: Path, config, kind: str, transform, params: dict,
             history: dict, dataset: dict, eval_test: bool, num_test: int,
             complete: bool = True, **metrics) -> dict:
    """Evaluate ``params`` (W1 (k, H)) and write the run folder ``out`` for ``config``
    (a TrainConfig) trained on inputs preprocessed by ``kind``.

    The accuracies are measured on the splits preprocessed by ``transform``
    (None for "none"); params.npz holds the mean image and the transform, so
    ``preprocess.load_classifier`` and scripts/predict.py preprocess new images
    the same way. ``complete``: as in ``write_run``. Returns the metrics written:
    the accuracies, then ``metrics``.
    """
    extra = {"mean_image": dataset["mean_image"]} if "mean_image" in dataset else {}
    if transform is not None:
        dataset = preprocess.apply_to_splits(dataset, transform)
        extra.update(transform.to_arrays())
    found = {**evaluate(params, dataset, eval_test, num_test), **metrics}
    write_run(out, dict(dataclasses.asdict(config), preprocess=kind), params, history,
              found, extra or None, complete)
    return found
