"""Saving and loading a trained network: params, config, history and extra arrays.

A checkpoint is one ``.npz`` file (no pickles): the params ``W1, b1, W2, b2``,
any extra arrays under ``extra/<name>`` (e.g. fitted preprocessing), and a
JSON document with the config, history and metadata. It is written to a
temporary file in the same folder and renamed, so a crash never leaves a
half-written checkpoint under the final name.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .validate import check_params

PARAM_NAMES = ("W1", "b1", "W2", "b2")
FORMAT = "jaxnet-checkpoint-1"


class Checkpoint(NamedTuple):
    """params (numpy, W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)), config, history, extra arrays."""

    params: dict
    config: dict
    history: dict
    extra: dict


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_checkpoint(path, params: dict, config: dict | None = None, history: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write params, config, history and ``extra`` arrays to ``path`` (.npz) atomically."""
    check_params(params)
    meta = {"format": FORMAT, "config": config or {}, "history": history or {}}
    arrays = {name: np.asarray(params[name]) for name in PARAM_NAMES}
    arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return Path(path)


def load_checkpoint(path, input_size: int | None = None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; raise ValueError saying what is wrong.

    ``input_size``, when given, is the number of features the caller will feed
    the network: a checkpoint for another input size is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable jaxnet checkpoint (.npz): {exc}") from None
    missing = [k for k in PARAM_NAMES + ("meta",) if k not in arrays]
    if missing:
        raise ValueError(f"{path} is not a jaxnet checkpoint: missing {', '.join(missing)}")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its metadata is corrupted ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {meta.get('format')!r}, "
                         f"expected {FORMAT!r}")
    params = {k: arrays[k] for k in PARAM_NAMES}
    try:
        check_params(params, input_size)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    extra = {k[len("extra/"):]: v for k, v in arrays.items() if k.startswith("extra/")}
    return Checkpoint(params, meta["config"], meta["history"], extra)
