"""Input checks for the public entry points.

Compiled JAX code cannot raise on values and clamps out-of-range indices
silently, so every public function checks its inputs here, on the host, before
any compiled code runs. Each check raises ``ValueError`` with a message that
names the argument and says what is expected.
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib

import numpy as np

from .model import PARAM_NAMES, param_shapes

# A sane bound on the class count: a W2 of 2**16 columns is already far beyond CIFAR's 10.
MAX_CLASSES = 2**16


def check_features(X, name: str = "X", num_features: int | None = None,
                   expected_by: str = "the model expects") -> np.ndarray:
    """Check that ``X`` is a finite 2-D float array ``(N, D)`` and return it as numpy.

    ``num_features``, when given, is the ``D`` that ``expected_by`` (words that end
    the message, e.g. "X_train has") asks for.
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
            f"{name} has {X.shape[1]} features per row but {expected_by} {num_features}")
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
    """Check a params dict against ``model.param_shapes``: W1 (D, H), b1 (H,), W2 (H, C),
    b2 (C,), with D = ``input_size`` when given."""
    missing = set(PARAM_NAMES) - set(params)
    if missing:
        raise ValueError(f"params is missing {sorted(missing)}; it needs {', '.join(PARAM_NAMES)}")
    for name in ("W1", "W2"):
        if np.ndim(params[name]) != 2:
            raise ValueError(f"params[{name!r}] must be 2-D; got shape {np.shape(params[name])}")
    (D, H), C = np.shape(params["W1"]), np.shape(params["W2"])[1]
    if any(np.shape(params[k]) != shape for k, shape in param_shapes(D, H, C).items()):
        got = ", ".join(f"{k} {np.shape(params[k])}" for k in PARAM_NAMES)
        layout = ", ".join(f"{k} ({', '.join(s)}{',' * (len(s) == 1)})"
                           for k, s in param_shapes("D", "H", "C").items())
        raise ValueError(f"params shapes do not fit together: {got}; expected {layout}")
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


def host_memory() -> int:
    """Bytes of physical memory of this machine (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def count_classes(*labels, name: str = "labels") -> int:
    """The class count C = the largest label + 1 of integer label arrays, at most MAX_CLASSES.

    Checked on the labels' own integer type, before any cast (a uint64 label
    could wrap), so that one stray label never builds a model of 10**8 classes.
    Non-integer or empty labels count as 1 class (``check_labels`` says what is wrong).
    """
    top = max((int(np.max(y)) for y in map(np.asarray, labels)
               if y.size and np.issubdtype(y.dtype, np.integer)), default=0)
    if top >= MAX_CLASSES:
        raise ValueError(f"{name} go up to {top}, which would make a model of {top + 1} classes; "
                         f"labels are class indices 0..C-1 with C at most {MAX_CLASSES}")
    return top + 1


def _npy_header(member) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header bytes) of an open .npy stream, read without its data."""
    version = np.lib.format.read_magic(member)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read(member)
    return shape, dtype, member.tell()


def npz_headers(path) -> dict[str, tuple[tuple, np.dtype]]:
    """The shape and dtype each array of an untrusted ``.npz`` declares, read without its data.

    Raises ValueError when the file is not an .npz, an array holds pickled
    objects, an array declares more bytes than its member holds (truncated or
    forged), or the arrays together declare more than this machine's memory.
    """
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            is_npy = f.read(6) == b"\x93NUMPY"
        raise ValueError("it holds one array (a .npy file), not an .npz archive of named arrays"
                         if is_npy else "it is not an .npz (zip) archive; the file is truncated, "
                         "corrupted or of another format")
    headers, total = {}, 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-len(".npy")]
            with archive.open(info) as member:
                shape, dtype, offset = _npy_header(member)
            if dtype.hasobject:
                raise ValueError(f"array {name!r} holds Python objects, which are pickles; "
                                 "only plain arrays are read")
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size - offset:
                raise ValueError(f"array {name!r} declares shape {shape} of {dtype} "
                                 f"({declared:,} bytes) but its member holds "
                                 f"{info.file_size - offset:,}: truncated or forged")
            headers[name], total = (shape, dtype), total + declared
    limit = host_memory()
    if limit and total > limit:
        raise ValueError(f"its arrays declare {total / 2**30:.1f} GiB, more than this machine's "
                         f"{limit / 2**30:.1f} GiB of memory")
    return headers


def read_npz(path) -> dict:
    """All arrays of an untrusted ``.npz`` file, pickles refused.

    The declared shapes and sizes are checked first (``npz_headers``), so a
    forged header never makes numpy reserve more than the machine has. Callers
    that expect particular shapes check ``npz_headers`` themselves first, so
    that a zip bomb is refused before it is inflated.
    Raises FileNotFoundError for a missing file and ValueError saying why any
    other file cannot be read (truncated, corrupted, a single .npy array, ...).
    """
    try:
        headers = npz_headers(path)
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in headers}   # other members are not arrays
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as exc:
        raise ValueError(str(exc)) from None


def declared(headers: dict) -> dict[str, np.ndarray]:
    """Stand-ins for the arrays of ``npz_headers``: each a zero-stride view with the declared
    shape and dtype, which costs no memory, for checks written against arrays."""
    return {name: np.broadcast_to(np.zeros((), dtype), shape)
            for name, (shape, dtype) in headers.items()}


def params_finite(params: dict) -> bool:
    """Whether every entry of every array in ``params`` is finite (no NaN, no infinity)."""
    return all(bool(np.all(np.isfinite(np.asarray(v)))) for v in params.values())
