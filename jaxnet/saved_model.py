"""Saving and loading a trained network: params, config, history and extra arrays.

A saved model is one ``.npz`` file (no pickles): the params ``W1, b1, W2, b2``,
any extra arrays under ``extra/<name>`` (e.g. fitted preprocessing), and a
JSON document with the config, history and metadata. It is written to a
temporary file in the same folder and renamed, so a crash never leaves a
half-written file under the final name. A folder of several outputs (a
run folder) gets its ``COMPLETE`` marker last (``mark_complete``), and readers
check it (``check_complete``), so a half-written folder is never taken for a
finished one.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import atomic_write
from .lock import LOCK_NAME
from .model import PARAM_NAMES
from .validate import check_params, declared, npz_headers, read_npz

FORMAT = "jaxnet-checkpoint-1"
# Written last into every output folder of the commands, so a folder without it
# (interrupted or failed while writing) is never taken for a finished one.
MARKER = "COMPLETE"
# Where a run keeps its progress while it trains (jaxnet.resume.Checkpoint).
PROGRESS_FOLDER = "checkpoint"


class SavedModel(NamedTuple):
    """params (numpy, W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)), config, history, extra arrays."""

    params: dict
    config: dict
    history: dict
    extra: dict


def _json_default(value):
    """Let numpy scalars and arrays (e.g. float32 losses) into the JSON metadata."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def save_model(path, params: dict, config: dict | None = None, history: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write params, config, history and ``extra`` arrays to ``path`` (.npz) atomically."""
    check_params(params)
    meta = {"format": FORMAT, "config": config or {}, "history": history or {}}
    try:
        meta_json = json.dumps(meta, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config and history must be JSON-serializable: {exc}") from None
    arrays = {name: np.asarray(params[name]) for name in PARAM_NAMES}
    arrays.update({f"extra/{k}": np.asarray(v) for k, v in (extra or {}).items()})
    for name, array in arrays.items():
        # Object arrays would be pickled, and load_model refuses pickles.
        if array.dtype.hasobject:
            raise ValueError(f"{name} cannot be saved: it is not an array of numbers or "
                             f"strings (got {type(array.flat[0]).__name__} values)")
    arrays["meta"] = np.array(meta_json)
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays))
    return Path(path)


def load_model(path, input_size: int | None = None) -> SavedModel:
    """Read a checkpoint written by ``save_model``; raise ValueError saying what is wrong.

    ``input_size``, when given, is the number of features the caller will feed
    the network: a checkpoint for another input size is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a readable jaxnet checkpoint: it is not an .npz (zip) "
                         f"archive; the file is truncated, corrupted or of another format")
    try:
        headers = npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable jaxnet checkpoint (.npz): {exc}") from None
    missing = [k for k in PARAM_NAMES + ("meta",) if k not in headers]
    if missing:
        raise ValueError(f"{path} is not a jaxnet checkpoint: missing {', '.join(missing)}")
    # The params are checked on their declared shapes, before a byte of them is read.
    _check_loaded_params({k: v for k, v in declared(headers).items() if k in PARAM_NAMES},
                         path, input_size)
    try:
        arrays = read_npz(path)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable jaxnet checkpoint (.npz): {exc}") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its metadata is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{path}: unknown checkpoint format {found!r}, expected {FORMAT!r}")
    params = {k: arrays[k] for k in PARAM_NAMES}
    extra = {k[len("extra/"):]: v for k, v in arrays.items() if k.startswith("extra/")}
    return SavedModel(params, meta.get("config", {}), meta.get("history", {}), extra)


def _check_loaded_params(params: dict, path: Path, input_size: int | None) -> None:
    """Real numbers (integer or float; complex is refused), shapes that fit together."""
    try:
        for name, array in params.items():
            if not (np.issubdtype(array.dtype, np.floating)
                    or np.issubdtype(array.dtype, np.integer)):
                raise ValueError(f"params {name} must hold real numbers; got dtype {array.dtype}")
        if np.ndim(params["W1"]) != 2 or np.ndim(params["W2"]) != 2:
            raise ValueError(f"params W1 and W2 must be 2-D; got shapes "
                             f"{np.shape(params['W1'])} and {np.shape(params['W2'])}")
        check_params(params, input_size)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def mark_complete(folder: Path) -> None:
    """Write the folder's completion marker, listing what it holds; call it last.

    The progress of an unfinished run (``PROGRESS_FOLDER``, removed once the run
    completes) and the writer's lock are not part of the finished folder.
    """
    names = sorted(name for name in os.listdir(folder)
                   if name not in (MARKER, PROGRESS_FOLDER, LOCK_NAME))
    atomic_write(Path(folder) / MARKER, lambda f: f.write("\n".join(names).encode() + b"\n"))


def check_complete(folder: Path) -> None:
    """Raise ValueError unless ``folder`` holds the completion marker of ``mark_complete``."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return
    if _recorded_diverged(folder):
        raise ValueError(f"{folder} holds a run that diverged (its params are NaN or infinite: "
                         f"see its metrics.json); train it again with a lower learning rate")
    raise ValueError(f"{folder} is an incomplete run folder (no {MARKER} file: writing it "
                     f"was interrupted or failed); train the model again")


def _recorded_diverged(folder: Path) -> bool:
    """Whether ``folder``'s metrics.json records a diverged run."""
    try:
        return json.loads((folder / "metrics.json").read_text()).get("diverged") is True
    except (OSError, ValueError, AttributeError):
        return False
