"""Input checks for the public entry points.

Compiled JAX code cannot raise on values and clamps out-of-range indices
silently, so every public function checks its inputs here, on the host, before
any compiled code runs. Each check raises ``ValueError`` with a message that
names the argument and says what is expected.
"""
from __future__ import annotations

import math
import zipfile
import zlib

import numpy as np


def check_features(X, name: str = "X", num_features: int | None = None) -> np.ndarray:
    """Check that ``X`` is a finite 2-D float array ``(N, D)`` and return it as numpy.

    ``num_features``, when given, is the ``D`` the model expects.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), one example per row; got shape {X.shape}. "
            f"Reshape images with {name}.reshape(len({name}), -1).")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers; got dtype {X.dtype}")
    if num_features is not None and X.shape[1] != num_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features per row but the model expects {num_features}")
    # A sum is NaN or infinite whenever an entry is, in one pass and without the
    # (N, D) temporary of isfinite (0.1-0.4 s for CIFAR-10 with page faults); only
    # a non-finite sum (or an overflowing one) pays for the exact count.
    with np.errstate(over="ignore", invalid="ignore"):
        total = X.sum() if np.issubdtype(X.dtype, np.floating) and X.size else 0.0
    if not np.isfinite(total):
        bad = int(np.size(X) - np.count_nonzero(np.isfinite(X)))
        if bad:
            raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return X


def check_labels(y, num_examples: int, num_classes: int, name: str = "y") -> np.ndarray:
    """Check that ``y`` is a 1-D integer array ``(N,)`` with labels in ``[0, num_classes)``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,); got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if y.size and np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            raise ValueError(
                f"{name} must be an integer array of class indices; got dtype {y.dtype}. "
                f"Convert it with {name}.astype(int).")
        raise ValueError(f"{name} must be an integer array of class indices; got dtype {y.dtype}")
    if len(y) != num_examples:
        raise ValueError(f"{name} has {len(y)} labels but there are {num_examples} examples")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{name} has labels in [{y.min()}, {y.max()}] but they must lie in "
            f"[0, {num_classes - 1}] for {num_classes} classes")
    return y


def check_nonnegative(value, name: str) -> float:
    """Check that a hyperparameter is a finite number >= 0 and return it as float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0; got {value}")
    return value


def check_params(params, input_size: int | None = None) -> dict:
    """Check a params dict ``{"W1": (D, H), "b1": (H,), "W2": (H, C), "b2": (C,)}``."""
    missing = {"W1", "b1", "W2", "b2"} - set(params)
    if missing:
        raise ValueError(f"params is missing {sorted(missing)}; it needs W1, b1, W2, b2")
    for name in ("W1", "W2"):
        if np.ndim(params[name]) != 2:
            raise ValueError(f"params[{name!r}] must be 2-D; got shape {np.shape(params[name])}")
    D, H = np.shape(params["W1"])
    H2, C = np.shape(params["W2"])
    if H2 != H or np.shape(params["b1"]) != (H,) or np.shape(params["b2"]) != (C,):
        raise ValueError(
            "params shapes do not fit together: W1 %s, b1 %s, W2 %s, b2 %s; expected "
            "W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)" % tuple(
                np.shape(params[k]) for k in ("W1", "b1", "W2", "b2")))
    if input_size is not None and D != input_size:
        raise ValueError(f"params expect {D} input features, got {input_size}")
    return params


def check_batch(params, X, y=None, reg: float = 0.0):
    """Check one (X, y, reg) for ``params``: returns ``(X, y, reg)`` as numpy values.

    X: (N, D) finite; y: (N,) integers in [0, C) or None; reg >= 0.
    """
    check_params(params)
    D, C = np.shape(params["W1"])[0], np.shape(params["W2"])[1]
    X = check_features(X, "X", D)
    if y is not None:
        y = check_labels(y, X.shape[0], C, "y")
    return X, y, check_nonnegative(reg, "reg")


def read_npz(path) -> dict:
    """All arrays of an untrusted ``.npz`` file, pickles refused.

    Raises FileNotFoundError for a missing file and ValueError saying why any
    other file cannot be read (truncated, corrupted, a single .npy array, ...).
    """
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array (a .npy file), not an .npz archive of named "
                             "arrays")
        with data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as exc:
        raise ValueError(str(exc)) from None
