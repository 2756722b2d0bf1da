"""CIFAR-10 from disk: the format, safe loading, preprocessing; datasets in ``.npz``.

Files are untrusted (DESIGN.md, decision 5): the pickled batches are read with
an unpickler that builds numpy arrays and nothing else, and an ``.npz`` is
checked on its declared shapes before it is read. Every problem with a file
raises an error that names it and says what to do (decision 4). Getting the
archive onto disk (checksum, safe extraction) is ``jaxnet.download``'s job.
"""
from __future__ import annotations

import math
import operator
import os
import pickle
import shlex
import zipfile
from pathlib import Path

import numpy as np

from .arrays import aligned_empty
from .validate import check_features, check_labels, count_classes, declared, npz_headers, read_npz

try:                                    # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                     # numpy 1.x
    from numpy.core.multiarray import _reconstruct

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
REQUIRED_FILES = TRAIN_FILES + TEST_FILES + ("batches.meta",)
# The repository's data/ folder; JAXNET_DATA_DIR overrides it (read at call time).
DEFAULT_CIFAR10_DIR = Path(__file__).resolve().parents[1] / "data"
IMAGE_SHAPE = (32, 32, 3)
NUM_PIXELS = 32 * 32 * 3
NUM_CLASSES = 10


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global that the CIFAR-10 format does not contain."""


def default_data_dir() -> Path:
    """The folder that holds ``cifar-10-batches-py``: ``$JAXNET_DATA_DIR``, else ``data/``."""
    return Path(os.environ.get("JAXNET_DATA_DIR") or DEFAULT_CIFAR10_DIR).expanduser()


def download_command(root: str | os.PathLike) -> str:
    """The command line that downloads CIFAR-10 into ``root`` (the loaders' errors give it)."""
    return f"python scripts/get_cifar10.py --root {shlex.quote(str(root))}"


# ----------------------------------------------------------------------------- load

class _CheckedArray:
    """Built by the unpickler where a pickle reconstructs an ndarray (``.array`` once loaded).

    numpy's own ``__setstate__`` reserves the declared shape before it looks at
    the bytes, so a pickle of a few bytes claiming 2**40 entries would end in an
    out-of-memory error; here the shape and dtype are checked against the bytes
    the pickle carries first.
    """

    def __init__(self, subtype, shape, typecode):
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError("only plain numpy arrays may be reconstructed")
        self.array = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("an array's state is not numpy's (version, shape, "
                                         "dtype, fortran, data)")
        _, shape, dtype, _, raw = state
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)
                and isinstance(dtype, np.dtype) and not dtype.hasobject
                and isinstance(raw, (bytes, str))):
            raise pickle.UnpicklingError("an array is not a plain array of numbers")
        size = math.prod(shape) * dtype.itemsize
        if size != len(raw):
            raise pickle.UnpicklingError(f"an array declares shape {shape} of {dtype} "
                                         f"({size:,} bytes) but carries {len(raw):,} bytes")
        self.array = _reconstruct(np.ndarray, (0,), b"b")
        self.array.__setstate__(state)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch: numpy array reconstruction is the only code it may call."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _CheckedArray,   # as Python 2 wrote it
        ("numpy._core.multiarray", "_reconstruct"): _CheckedArray,  # as numpy 2 writes it
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")   # Python 2 str -> str; bytes stay bytes
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"{self.path} asks to load {module}.{name}, which a CIFAR-10 batch never "
                "contains; refusing to unpickle it (the file is corrupt or malicious)") from None


def find_cifar10_dir(root: str | os.PathLike) -> Path:
    """The ``cifar-10-batches-py`` folder in ``root``, or ``root`` itself if it is that folder."""
    root = Path(root).expanduser()
    nested = root / FOLDER_NAME
    if nested.is_dir():
        return nested
    if root.is_dir() and (root.name == FOLDER_NAME
                          or any((root / n).exists() for n in TRAIN_FILES + TEST_FILES)):
        return root
    raise FileNotFoundError(
        f"CIFAR-10 not found: looked for {nested} (and for the batch files in {root}). "
        f"Download it with: {download_command(root)}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: raw pixels uint8 (n, 3072) in CHW order, labels int64 (n,)."""
    hint = f"download it again with: {download_command(path.parent)}"
    if not path.is_file():
        raise ValueError(f"{path} is missing; the CIFAR-10 folder is incomplete, {hint}")
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch (truncated or corrupt: "
                         f"{type(exc).__name__}: {exc}); {hint}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    batch = {k: v.array if isinstance(v, _CheckedArray) else v for k, v in batch.items()}
    data = batch.get("data", batch.get(b"data"))
    labels = batch.get("labels", batch.get(b"labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"{path} lacks the 'data' array or the 'labels' list of a CIFAR-10 batch")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != NUM_PIXELS:
        raise ValueError(f"{path}: 'data' must be uint8 (n, {NUM_PIXELS}); "
                         f"got {data.dtype} {data.shape}")
    labels = check_labels(np.asarray(labels), len(data), NUM_CLASSES, name=f"{path}: labels")
    return data, labels.astype(np.int64, copy=False)


def _load_split(folder: Path, names: tuple[str, ...], dtype: np.dtype,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 32, 32, 3)`` of ``dtype`` and labels int64 ``(n,)`` from the named batches.

    Reads the batches in order and stops once ``limit`` rows are in (all rows
    without a limit). Each batch is copied straight into one preallocated array,
    so memory stays near one copy of the output plus one raw batch. A batch of n
    rows needs at least n * 3072 bytes of file, so the file sizes bound the rows;
    ``np.empty`` only reserves address space, and rows never filled cost nothing.
    The array is 64-byte aligned, so training uses it without a copy (``jaxnet.arrays``).
    """
    paths = [folder / name for name in names]
    capacity = sum(p.stat().st_size // NUM_PIXELS for p in paths if p.is_file())
    capacity = capacity if limit is None else min(capacity, limit)
    images = aligned_empty((capacity,) + IMAGE_SHAPE, dtype)
    labels, count = [], 0
    for path in paths:
        if limit is not None and count >= limit:
            break
        data, y = _read_batch(path)
        take = len(data) if limit is None else min(len(data), limit - count)
        images[count:count + take] = data[:take].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels.append(y[:take])
        count += take
    return images[:count], np.concatenate(labels) if labels else np.zeros(0, np.int64)


def _pixel_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if not np.can_cast(np.uint8, dtype) or dtype.kind not in "uif":
        raise ValueError(f"dtype must be a number type that holds pixel values 0..255; "
                         f"got {dtype}")
    return dtype


def load_CIFAR10(root: str | os.PathLike, dtype=np.float32
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 from ``root`` (the ``cifar-10-batches-py`` folder or its parent).

    Returns ``X_train (N, 32, 32, 3)``, ``y_train (N,)``, ``X_test (M, 32, 32, 3)``,
    ``y_test (M,)``: pixels 0..255 as ``dtype`` (float32 by default; the notebook
    used float64), labels int64 in 0..9. N = 50000 and M = 10000 for the full set.
    """
    dtype = _pixel_dtype(dtype)
    folder = find_cifar10_dir(root)
    X_train, y_train = _load_split(folder, TRAIN_FILES, dtype)
    X_test, y_test = _load_split(folder, TEST_FILES, dtype)
    return X_train, y_train, X_test, y_test


def get_CIFAR10_data(cifar10_dir: str | os.PathLike | None = None, num_training: int = 49000,
                     num_validation: int = 1000, num_test: int | None = 1000,
                     subtract_mean: bool = True, dtype=np.float32) -> dict[str, np.ndarray]:
    """Load CIFAR-10 and preprocess it as the notebook does; rows are flattened images.

    ``cifar10_dir`` defaults to ``default_data_dir()``. Training is the first
    ``num_training`` images, validation the ``num_validation`` after them, test the
    first ``num_test`` of the test split (all of it for None). With ``subtract_mean`` the mean training
    image is subtracted from all three. Returns a dict with ``X_train (num_training,
    3072)``, ``y_train (num_training,)``, ``X_val``, ``y_val``, ``X_test``, ``y_test``
    and ``mean_image (3072,)`` (zeros without ``subtract_mean``) to preprocess new
    images the same way: ``x.reshape(len(x), -1) - mean_image``.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type such as np.float32; got {dtype}")
    num_training, num_validation, num_test = (
        _count(num_training, "num_training", 1), _count(num_validation, "num_validation", 0),
        None if num_test is None else _count(num_test, "num_test", 0))
    folder = find_cifar10_dir(cifar10_dir if cifar10_dir is not None else default_data_dir())

    used = num_training + num_validation
    # Train and validation are views of one array, so no row is copied twice.
    X, y = _load_split(folder, TRAIN_FILES, dtype, limit=used)
    if len(X) < used:
        raise ValueError(f"num_training + num_validation = {num_training} + {num_validation} "
                         f"= {used} exceeds the {len(X)} training images in {folder}")
    X = X.reshape(used, NUM_PIXELS)
    X_test, y_test = _load_split(folder, TEST_FILES, dtype, limit=num_test)
    if num_test is not None and len(X_test) < num_test:
        raise ValueError(f"num_test = {num_test} exceeds the {len(X_test)} test images "
                         f"in {folder}")
    X_test = X_test.reshape(len(X_test), NUM_PIXELS)

    X_train = X[:num_training]
    if subtract_mean:
        # Sum in float64: float32 sums of 0..255 pixels stay exact only to ~65,000 rows.
        mean_image = X_train.mean(axis=0, dtype=np.float64).astype(dtype)
        X -= mean_image
        X_test -= mean_image
    else:
        mean_image = np.zeros(NUM_PIXELS, dtype)
    return {"X_train": X_train, "y_train": y[:num_training], "X_val": X[num_training:],
            "y_val": y[num_training:], "X_test": X_test, "y_test": y_test,
            "mean_image": mean_image}


def _count(value, name: str, minimum: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer; got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


# ----------------------------------------------------------------------------- .npz

def load_npz(path: str | os.PathLike, dtype=np.float32) -> dict[str, np.ndarray]:
    """Load a dataset of row vectors from an ``.npz`` (no pickles allowed).

    It must hold ``X_train (N, D)``, ``y_train (N,)``, ``X_val (V, D)``, ``y_val (V,)``
    and may hold ``X_test (M, D)``, ``y_test (M,)``. Features must be finite and
    share ``D``; labels are integers in ``[0, C)`` with ``C`` = the largest label + 1.
    Returns those arrays, features as ``dtype`` and labels as int64.
    """
    path = Path(path).expanduser()
    hint = "save the splits with np.savez(path, X_train=..., y_train=..., ...)"
    try:
        headers = npz_headers(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is not a readable .npz of plain arrays: {exc}; {hint}") \
            from None
    splits = ["train", "val"] + (["test"] if "X_test" in headers or "y_test" in headers else [])
    missing = [k for s in splits for k in (f"X_{s}", f"y_{s}") if k not in headers]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it needs X_train, y_train, "
                         "X_val, y_val (and optionally X_test, y_test)")
    # Shapes first, on the declared headers: a forged or zip-bombed split is refused unread.
    _check_split_shapes({k: v for k, v in declared(headers).items() if k[2:] in splits}, path)
    try:
        arrays = read_npz(path)
    except ValueError as exc:
        raise ValueError(f"{path} is not a readable .npz of plain arrays: {exc}; {hint}") \
            from None
    D = check_features(arrays["X_train"], f"{path}: X_train").shape[1]
    num_classes = count_classes(*(arrays[f"y_{s}"] for s in splits), name=f"{path}: labels")
    data = {}
    for s in splits:
        X = check_features(arrays[f"X_{s}"], f"{path}: X_{s}")
        if X.shape[1] != D:
            raise ValueError(f"{path}: X_{s} has {X.shape[1]} features per row but X_train "
                             f"has {D}")
        y = check_labels(arrays[f"y_{s}"], len(X), num_classes, f"{path}: y_{s}")
        data[f"X_{s}"], data[f"y_{s}"] = X.astype(dtype, copy=False), y.astype(np.int64)
    return data


def _check_split_shapes(arrays: dict, path: Path) -> None:
    """X_<split> (N, D) with one D, y_<split> (N,) with X's N: checked on declared shapes."""
    D = np.shape(arrays["X_train"])[-1]
    for name in sorted(arrays):
        shape = np.shape(arrays[name])
        if name.startswith("X_") and len(shape) != 2:
            raise ValueError(f"{path}: {name} must be 2-D (N, D), one example per row; "
                             f"got shape {shape}")
        if name.startswith("X_") and shape[1] != D:
            raise ValueError(f"{path}: {name} has {shape[1]} features per row but X_train "
                             f"has {D}")
        rows = np.shape(arrays["X" + name[1:]])[:1]
        if name.startswith("y_") and len(shape) == 1 and shape != rows:
            raise ValueError(f"{path}: {name} has {shape[0]} labels but there are {rows[0]} "
                             f"examples")
