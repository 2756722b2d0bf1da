"""CIFAR-10 on disk: download with a checksum, safe extraction, loading, preprocessing.

Files are untrusted (DESIGN.md, decision 5): the archive is checked against an
md5 before use, written under a temporary name and renamed; its members are
extracted only inside the target folder; the pickled batches are read with an
unpickler that builds numpy arrays and nothing else. Every problem with a file
raises an error that names it and says what to do (decision 4).

Nothing here prints: ``download_cifar10`` reports through a ``progress``
callback that the caller passes (``scripts/get_cifar10.py`` draws a bar).
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import operator
import os
import pickle
import re
import shlex
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from .arrays import aligned_empty
from .validate import check_features, check_labels, count_classes, declared, npz_headers, read_npz

try:                                    # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:                     # numpy 1.x
    from numpy.core.multiarray import _reconstruct

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER_NAME = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
REQUIRED_FILES = TRAIN_FILES + TEST_FILES + ("batches.meta",)
# The repository's data/ folder; JAXNET_DATA_DIR overrides it (read at call time).
DEFAULT_CIFAR10_DIR = Path(__file__).resolve().parents[1] / "data"
IMAGE_SHAPE = (32, 32, 3)
NUM_PIXELS = 32 * 32 * 3
NUM_CLASSES = 10
CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download, its checksum or its archive failed; the message names the URL."""


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for a global that the CIFAR-10 format does not contain."""


def default_data_dir() -> Path:
    """The folder that holds ``cifar-10-batches-py``: ``$JAXNET_DATA_DIR``, else ``data/``."""
    return Path(os.environ.get("JAXNET_DATA_DIR") or DEFAULT_CIFAR10_DIR).expanduser()


def download_command(root: str | os.PathLike) -> str:
    """The command line that downloads CIFAR-10 into ``root``."""
    return f"python scripts/get_cifar10.py --root {shlex.quote(str(root))}"


# ----------------------------------------------------------------------------- download

def cifar10_present(root: str | os.PathLike, thorough: bool = False) -> bool:
    """True when ``root/cifar-10-batches-py`` holds all seven files of the dataset;
    with ``thorough``, only when every batch is also readable (a second or so)."""
    return _complete(_download_root(root) / FOLDER_NAME, thorough)


def _download_root(root: str | os.PathLike) -> Path:
    """The folder to download into; given the batch folder itself, its parent (as the loader)."""
    root = Path(root).expanduser()
    return root.parent if root.name == FOLDER_NAME else root


def download_cifar10(root: str | os.PathLike | None = None, url: str | None = None,
                     md5: str | None = None,
                     progress: Callable[[int, int | None], object] | None = None,
                     timeout: float = 60.0) -> Path:
    """Download, verify and extract CIFAR-10 into ``root``; return ``root/cifar-10-batches-py``.

    ``root`` defaults to ``default_data_dir()``; naming the batch folder itself works too.
    ``url``/``md5`` default to ``$JAXNET_CIFAR10_URL``/``$JAXNET_CIFAR10_MD5`` when
    that URL is set, else to the official archive; a mirror needs its own md5.
    ``progress(bytes_done, bytes_total_or_None)`` is called after each chunk.
    A complete folder is left alone (an incomplete one is replaced); a verified
    ``cifar-10-python.tar.gz`` already in ``root`` is extracted without
    downloading. On any failure (network, truncated transfer, checksum, unsafe
    or incomplete archive) it raises ``DownloadError`` and leaves no partial
    archive or folder behind.
    """
    url, md5 = _resolve_source(url, md5)
    root = _download_root(root if root is not None else default_data_dir())
    folder = root / FOLDER_NAME
    for path in (root, folder):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a folder; give another folder for CIFAR-10")
    if _complete(folder, thorough=True):   # a truncated batch is replaced, not trusted
        return folder
    # The topmost folder this call creates, removed again if the download fails.
    created = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    # Everything partial lives in one temporary folder inside root (so that the
    # renames stay on one file system), and one rmtree removes it whatever happens.
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-10-download."))
    try:
        source = archive
        if not (archive.is_file() and _md5_of_file(archive) == md5):
            source = tmp / (ARCHIVE_NAME + ".part")
            _fetch(url, md5, source, progress, timeout)
        _extract(source, tmp / "extracted", url)
        if source != archive:
            os.replace(source, archive)
        _move_into_place(tmp / "extracted" / FOLDER_NAME, folder, trash=tmp / "replaced")
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _resolve_source(url: str | None, md5: str | None) -> tuple[str, str]:
    """Pick the URL and its md5: arguments, then the environment, then the official pair."""
    if url is None:
        url = os.environ.get("JAXNET_CIFAR10_URL") or OFFICIAL_URL
        if url != OFFICIAL_URL:
            md5 = md5 or os.environ.get("JAXNET_CIFAR10_MD5")
    if md5 is None and url == OFFICIAL_URL:
        md5 = OFFICIAL_MD5
    if md5 is None:
        raise ValueError(f"no md5 checksum given for {url}: a mirror needs its own "
                         "(md5= argument, --md5 flag or JAXNET_CIFAR10_MD5)")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise ValueError(f"md5 must be 32 hexadecimal digits; got {md5!r}")
    return url, md5.lower()


def _complete(folder: Path, thorough: bool = False) -> bool:
    """All files present; with ``thorough``, every batch readable too."""
    if not all((folder / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        for name in (TRAIN_FILES + TEST_FILES) if thorough else ():
            _read_batch(folder / name)
    except ValueError:
        return False
    return True


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, md5: str, dest: Path, progress, timeout: float) -> None:
    """Stream ``url`` into ``dest`` and check its length and md5; raise ``DownloadError``."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:   # URLError is an OSError
        raise DownloadError(f"could not download {url}: {getattr(exc, 'reason', exc)} (offline? "
                            "give a mirror or a file:// copy: --url/--md5 or "
                            "JAXNET_CIFAR10_URL/JAXNET_CIFAR10_MD5)") from None
    digest, done = hashlib.md5(), 0
    with response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"download of {url} was interrupted after {done} bytes: "
                                    f"{type(exc).__name__}: {exc}") from None
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    # http.client returns a short body without raising when the server closes early.
    if total is not None and done < total:
        raise DownloadError(f"download of {url} was cut short: got {done} of {total} bytes")
    if digest.hexdigest() != md5:
        raise DownloadError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {digest.hexdigest()} "
            f"({done} bytes); the file is corrupt or incomplete, or the md5 does not belong "
            "to this URL")


def _extract(archive: Path, dest: Path, url: str) -> None:
    """Extract ``archive`` into ``dest`` after checking every member; raise ``DownloadError``.

    Files are written by hand rather than with ``extractall`` so that nothing but
    plain files and folders, with default permissions, can appear, whatever the
    Python version's tarfile filters do.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            paths = [_member_path(member, url) for member in members]   # all, before writing
            for member, path in zip(members, paths):
                target = dest.joinpath(*path.parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        # tarfile lists every compression it tried, one per line: keep one line.
        raise DownloadError(f"{url} is not a readable .tar.gz archive: "
                            f"{' '.join(str(exc).split())}") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise DownloadError(f"refusing the archive from {url}: member {member.name!r} clashes "
                            f"with another member (one name used for a file and a folder)") \
            from None
    if not _complete(dest / FOLDER_NAME):
        missing = [n for n in REQUIRED_FILES if not (dest / FOLDER_NAME / n).is_file()]
        raise DownloadError(f"the archive from {url} is not CIFAR-10: {FOLDER_NAME}/ lacks "
                            f"{', '.join(missing)}")


def _member_path(member: tarfile.TarInfo, url: str) -> PurePosixPath:
    """The member's relative path; refuse anything that could write outside the folder."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        problem = "its path leads outside the target folder"
    elif member.issym() or member.islnk():
        problem = "links are not allowed"
    elif not (member.isfile() or member.isdir()):
        problem = "only plain files and folders are allowed (devices, FIFOs and others are not)"
    elif member.isfile() and not path.parts:
        problem = "a file member needs a name"
    else:
        return path
    raise DownloadError(f"refusing to extract the archive from {url}: member "
                        f"{member.name!r}: {problem}")


def _move_into_place(src: Path, dst: Path, trash: Path) -> None:
    """Rename the extracted folder to ``dst``; an incomplete ``dst`` is moved to ``trash``."""
    if dst.exists() or dst.is_symlink():
        if _complete(dst, thorough=True):   # another process finished first
            return
        dst.rename(trash)
    src.rename(dst)


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
