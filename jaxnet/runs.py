"""What a command-line run does around training: data, device, and the run folder.

Shared by ``scripts/train.py``, ``scripts/sweep.py`` and ``scripts/search.py``:
turn flags into a dataset and a device, and write a run's results as files.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np

from . import data, model, preprocess
from .checkpoint import atomic_write, save_checkpoint
from .plots import plot_history, plot_weights


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
    if not data.cifar10_present(root) and not (root / "data_batch_1").exists():
        say(f"CIFAR-10 not found in {root}; downloading it (about 163 MB) ...")
        try:
            data.download_cifar10(root)
        except data.DownloadError as exc:
            raise ValueError(f"{exc}. Get CIFAR-10 with: {data.download_command(root)}, "
                             f"or point --data-dir at a folder holding cifar-10-batches-py") \
                from None
    # The whole test split is kept: --num-test images give the notebook's test_acc,
    # all of them test_acc_full.
    return data.get_CIFAR10_data(root, args.num_training, args.num_validation, num_test=None)


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


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode() + b"\n"))


def write_run(out: Path, config: dict, params: dict, history: dict, metrics: dict,
              extra: dict | None = None) -> dict:
    """Write a run folder; returns the paths written, by name.

    config.json, history.json, metrics.json, params.npz (a checkpoint with
    config and history), loss_acc.png, and weights.png when the inputs are
    32x32x3 images.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in
             ("config.json", "history.json", "metrics.json", "params.npz", "loss_acc.png")}
    write_json(paths["config.json"], config)
    write_json(paths["history.json"], history)
    write_json(paths["metrics.json"], metrics)
    save_checkpoint(paths["params.npz"], params, config, history, extra)
    plot_history(history, paths["loss_acc.png"])
    if np.shape(params["W1"])[0] == 32 * 32 * 3:
        paths["weights.png"] = plot_weights(params["W1"], out / "weights.png")
    return paths


def save_run(out: Path, config, kind: str, transform, params: dict,
             history: dict, dataset: dict, eval_test: bool, num_test: int,
             **metrics) -> dict:
    """Evaluate ``params`` (W1 (k, H)) and write the run folder ``out`` for ``config``
    (a TrainConfig) trained on inputs preprocessed by ``kind``.

    The accuracies are measured on the splits preprocessed by ``transform``
    (None for "none"); params.npz holds the mean image and the transform, so
    ``preprocess.load_classifier`` and scripts/predict.py preprocess new images
    the same way. Returns the metrics written: the accuracies, then ``metrics``.
    """
    extra = {"mean_image": dataset["mean_image"]} if "mean_image" in dataset else {}
    if transform is not None:
        dataset = preprocess.apply_to_splits(dataset, transform)
        extra.update(transform.to_arrays())
    found = {**evaluate(params, dataset, eval_test, num_test), **metrics}
    write_run(out, dict(dataclasses.asdict(config), preprocess=kind), params, history,
              found, extra or None)
    return found
