"""Input preprocessing fitted on the training split: standardization, PCA, ZCA whitening.

Every fitted transform is one affine map on image rows, stored as a small record:

    apply(X) = (X - mean) * matrix      matrix (D,):   per-feature scale (standardization)
    apply(X) = (X - mean) @ matrix      matrix (D, k): projection (PCA) or whitening (ZCA, k = D)

with X: (N, D) rows in the notebook's layout (``X.reshape(N, 32, 32, 3)`` gives
height, width, channel). A transform is fitted on the training rows only and
then applied unchanged to validation, test and new images, so nothing about
the held-out splits leaks into the model. ``to_arrays``/``from_arrays`` turn it
into plain arrays for a checkpoint's ``extra`` so that a loaded model
preprocesses its inputs itself (``load_classifier``).

Augmentation (flips, shifts) acts on image rows. Per-channel standardization
commutes with it, so it can be applied to the data once, before training;
PCA and ZCA do not, so a run that augments must apply them to each minibatch
after ``augment_rows`` (the solver's ``input_transform``).
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .data import IMAGE_SHAPE

KINDS = ("standardize", "pca", "zca")
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
# Keys of the transform in a checkpoint's ``extra`` arrays.
KIND_KEY, MEAN_KEY, MATRIX_KEY = "preprocess_kind", "preprocess_mean", "preprocess_matrix"


@dataclasses.dataclass(frozen=True, eq=False)
class Transform:
    """A fitted affine input transform: ``apply(X) = (X - mean) @ matrix`` (or ``* matrix``).

    kind: "standardize", "pca" or "zca"; mean: (D,); matrix: (D,) per-feature
    scale for "standardize", else (D, k) with k <= D.
    """

    kind: str
    mean: np.ndarray
    matrix: np.ndarray

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"transform kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        mean, matrix = np.asarray(self.mean), np.asarray(self.matrix)
        if mean.ndim != 1:
            raise ValueError(f"transform mean must be 1-D (D,); got shape {mean.shape}")
        D = mean.shape[0]
        expected = "(D,)" if self.kind == "standardize" else "(D, k)"
        if (matrix.ndim != (1 if self.kind == "standardize" else 2) or matrix.shape[0] != D
                or (matrix.ndim == 2 and not 1 <= matrix.shape[1] <= D)):
            raise ValueError(f"{self.kind} transform matrix must be {expected} with D = {D}; "
                             f"got shape {matrix.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(matrix))):
            raise ValueError("transform mean and matrix must be finite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "matrix", matrix)

    @property
    def input_size(self) -> int:
        """D, the features per input row."""
        return self.mean.shape[0]

    @property
    def output_size(self) -> int:
        """k, the features per output row (D for standardization and ZCA)."""
        return self.matrix.shape[-1] if self.matrix.ndim == 2 else self.input_size

    def apply(self, X: np.ndarray, batch_size: int = 10000) -> np.ndarray:
        """X: (N, D) -> (N, k), in X's floating dtype (float32 for integer input)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.input_size:
            raise ValueError(f"the transform expects rows (N, {self.input_size}); "
                             f"got shape {X.shape}")
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float32)
        mean, matrix = self.mean.astype(dtype), self.matrix.astype(dtype)
        if matrix.ndim == 1:
            return (X - mean) * matrix
        out = np.empty((len(X), self.output_size), dtype)
        for i in range(0, len(X), batch_size):   # bounds the centred copy's memory
            out[i:i + batch_size] = (X[i:i + batch_size] - mean) @ matrix
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The transform as plain arrays for ``save_model(..., extra=...)``."""
        return {KIND_KEY: np.array(self.kind), MEAN_KEY: self.mean, MATRIX_KEY: self.matrix}

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Transform | None":
        """The transform stored in ``arrays`` (a checkpoint's ``extra``), or None if absent."""
        present = [k for k in (KIND_KEY, MEAN_KEY, MATRIX_KEY) if k in arrays]
        if not present:
            return None
        if len(present) != 3:
            missing = sorted({KIND_KEY, MEAN_KEY, MATRIX_KEY} - set(present))
            raise ValueError(f"incomplete preprocessing arrays: missing {', '.join(missing)}")
        return cls(str(arrays[KIND_KEY]), np.asarray(arrays[MEAN_KEY]),
                   np.asarray(arrays[MATRIX_KEY]))


def _rows(X, name: str = "X_train") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or len(X) < 2 or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"{name} must be numeric rows (N, D) with N >= 2; got "
                         f"{X.dtype} {X.shape}")
    return X


def fit_standardize(X_train: np.ndarray, eps: float = 1e-8) -> Transform:
    """Per-channel standardization: each RGB channel to mean 0, std 1 over all its pixels.

    X_train: (N, 3072) rows of 32x32x3 images. Returns a "standardize" transform
    whose mean and scale (3072,) repeat the 3 channel values at every pixel.
    """
    X = _rows(X_train)
    if X.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise ValueError(f"per-channel standardization needs rows of 32x32x3 images (3072 "
                         f"features); got {X.shape[1]}")
    pixels = X.reshape(-1, IMAGE_SHAPE[-1])
    mean = pixels.mean(axis=0, dtype=np.float64)
    squares = np.zeros(IMAGE_SHAPE[-1])
    step = 1 << 20                      # chunks keep the float64 temporary near 25 MB
    for i in range(0, len(pixels), step):
        squares += ((pixels[i:i + step] - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / len(pixels))
    reps = X.shape[1] // IMAGE_SHAPE[-1]
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    return Transform("standardize", np.tile(mean, reps).astype(dtype),
                     np.tile(1.0 / (std + eps), reps).astype(dtype))


def covariance(X: np.ndarray, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the rows of X (N, D).

    The mean is taken in float64 and the sum is accumulated in float64; each
    batch's product runs in X's precision when X is float32 (twice as fast as
    float64, and no less precise than the data), else in float64.
    """
    X = _rows(X)
    mean = X.mean(axis=0, dtype=np.float64)
    product_dtype = np.float32 if X.dtype == np.float32 else np.float64
    cov = np.zeros((X.shape[1], X.shape[1]))
    for i in range(0, len(X), batch_size):
        Xc = (X[i:i + batch_size] - mean).astype(product_dtype)
        cov += Xc.T @ Xc
    return mean, cov / len(X)


def principal_components(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (D,), covariance eigenvalues (r,) in descending order and eigenvectors (D, r).

    X: (N, D). For N >= D, r = D (eigendecomposition of the covariance). For
    N < D the covariance has rank r < N; its nonzero eigenpairs come from the
    N x N Gram matrix of the centred rows, far faster, and every eigenvalue
    left out is zero.
    """
    X = _rows(X)
    if len(X) >= X.shape[1]:
        mean, cov = covariance(X)
        values, vectors = np.linalg.eigh(cov)
        return mean, np.maximum(values[::-1], 0.0), vectors[:, ::-1]
    mean = X.mean(axis=0, dtype=np.float64)
    Xc = X.astype(np.float64) - mean
    values, U = np.linalg.eigh(Xc @ Xc.T)
    values, U = values[::-1], U[:, ::-1]
    keep = values > 1e-10 * max(values[0], np.finfo(float).tiny)
    values, U = values[keep], U[:, keep]
    vectors = (Xc.T @ U) / np.sqrt(values)          # unit columns: the right singular vectors
    return mean, values / len(X), vectors


def fit_pca(X_train: np.ndarray, k: int, whiten: bool = False, eps: float = 0.0) -> Transform:
    """Project onto the k leading principal components of the training rows.

    X_train: (N, D), k <= min(N, D) and <= the rank. Returns a "pca" transform
    with matrix (D, k) whose columns are the unit components, scaled by
    ``1 / sqrt(eigenvalue + eps)`` when ``whiten`` (then the training rows'
    output covariance is about the identity).
    """
    X = _rows(X_train)
    if not 1 <= k <= min(X.shape):
        raise ValueError(f"k must be in [1, min(N, D)] = [1, {min(X.shape)}]; got {k}")
    if whiten and not (eps >= 0 and np.isfinite(eps)):
        raise ValueError(f"eps must be finite and >= 0; got {eps}")
    mean, values, vectors = principal_components(X)
    if k > len(values):
        raise ValueError(f"k must be at most the rank of the training rows, {len(values)}; "
                         f"got {k}")
    matrix = vectors[:, :k]
    if whiten:
        matrix = matrix / np.sqrt(values[:k] + eps)
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    return Transform("pca", mean.astype(dtype), matrix.astype(dtype))


def fit_zca(X_train: np.ndarray, eps: float = 1e-2, relative: bool = True) -> Transform:
    """ZCA whitening: ``U diag(1 / sqrt(eigenvalue + eps)) U^T``, matrix (D, D), symmetric.

    X_train: (N, D). With ``relative`` (the default), ``eps`` is a fraction of
    the mean eigenvalue (the average per-feature variance), so the same eps
    suits pixels 0..255 and standardized inputs; small eps whitens fully (and
    amplifies noise), large eps approaches a rescaled identity.
    """
    X = _rows(X_train)
    if not (eps > 0 and np.isfinite(eps)):   # an infinite eps whitens everything to 0
        raise ValueError(f"eps must be finite and > 0; got {eps}")
    mean, values, vectors = principal_components(X)
    D = X.shape[1]
    eps_abs = eps * values.sum() / D if relative else eps
    # U diag(s) U^T over all D directions; the eigenvalues that principal_components
    # leaves out (N < D) are zero, so those directions are scaled by 1 / sqrt(eps).
    floor = 1.0 / np.sqrt(eps_abs)
    matrix = (vectors * (1.0 / np.sqrt(values + eps_abs) - floor)) @ vectors.T
    matrix[np.diag_indices(D)] += floor
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    return Transform("zca", mean.astype(dtype), matrix.astype(dtype))


def fit(kind: str, X_train: np.ndarray, k: int | None = None,
        eps: float | None = None) -> Transform:
    """Fit a transform of ``kind`` on the training rows X_train (N, D) only.

    "standardize"; "pca" (k components; whitened when eps is given); "zca"
    (eps relative to the mean variance, default 1e-2).
    """
    if kind == "standardize":
        return fit_standardize(X_train)
    if kind == "pca":
        if k is None:
            raise ValueError("pca needs the number of components k")
        return fit_pca(X_train, k, whiten=eps is not None, eps=eps or 0.0)
    if kind == "zca":
        return fit_zca(X_train, 1e-2 if eps is None else eps)
    raise ValueError(f"preprocessing kind must be one of {', '.join(KINDS)}; got {kind!r}")


def apply_to_splits(dataset: dict, transform: Transform) -> dict:
    """A copy of ``dataset`` with every ``X_<split>`` (N, D) replaced by ``transform.apply``.

    Other entries (labels, ``mean_image``) are kept as they are.
    """
    return {name: transform.apply(value) if name.startswith("X_") else value
            for name, value in dataset.items()}


# ----------------------------------------------------------------------------- loaded models

class Classifier(NamedTuple):
    """A trained network with the preprocessing its inputs need.

    params: W1 (k, H), b1, W2 (H, C), b2; mean_image: (D,) subtracted from raw
    rows first (D = 3072 for CIFAR images); transform: applied after that, or None.
    """

    params: dict
    mean_image: np.ndarray
    transform: Transform | None
    class_names: tuple

    def rows(self, images: np.ndarray) -> np.ndarray:
        """Raw pixels 0..255, (N, 32, 32, 3) images or (N, D) rows -> model inputs (N, k)."""
        images = np.asarray(images)
        X = images.reshape(len(images), -1).astype(np.float32) - self.mean_image
        return self.transform.apply(X) if self.transform is not None else X

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax class probabilities (N, C) of raw images (see ``rows``)."""
        import jax  # the forward pass is the model's own (jaxnet.model.scores)

        from . import model
        scores = model.scores({k: np.asarray(v) for k, v in self.params.items()},
                              self.rows(images))
        return np.asarray(jax.nn.softmax(scores, axis=1))


def load_classifier(path, class_names: tuple = CLASS_NAMES) -> Classifier:
    """Load a checkpoint written by ``scripts/train.py`` as a ``Classifier``.

    The checkpoint's ``extra`` must hold ``mean_image`` (D,) and may hold the
    preprocessing arrays of ``Transform.to_arrays``. Raises ValueError saying
    what does not fit (missing mean, shapes that disagree with W1, a number of
    classes other than ``len(class_names)``).
    """
    from .saved_model import MARKER, check_complete, load_model

    folder = Path(path).parent
    if any((folder / name).exists() for name in (MARKER, "config.json", "metrics.json")):
        check_complete(folder)   # a params.npz of a run folder counts once the run is whole
    checkpoint = load_model(path)
    extra, params = checkpoint.extra, checkpoint.params
    if "mean_image" not in extra:
        D = params["W1"].shape[0]
        raise ValueError(f"{path} has no mean_image among its extra arrays: its network was "
                         f"trained on an .npz of {D}-feature rows (--data), whose preprocessing "
                         f"is unknown; image classification needs a model trained on CIFAR-10")
    mean_image = np.asarray(extra["mean_image"], np.float32)
    bad = [name for name, a in {**params, "mean_image": mean_image}.items()
           if not np.all(np.isfinite(a))]
    if bad:
        raise ValueError(f"{path}: {', '.join(bad)} hold NaN or infinite values (a diverged "
                         f"run?); its predictions would be meaningless")
    try:
        transform = Transform.from_arrays(extra)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    D = mean_image.shape[0] if mean_image.ndim == 1 else -1
    if D != int(np.prod(IMAGE_SHAPE)):
        raise ValueError(f"{path}: mean_image has shape {mean_image.shape}; a CIFAR-10 model "
                         f"needs (3072,) for 32x32x3 images")
    k = D if transform is None else transform.output_size
    if transform is not None and transform.input_size != D:
        raise ValueError(f"{path}: the preprocessing expects {transform.input_size} features "
                         f"but mean_image has {D}")
    if params["W1"].shape[0] != k:
        raise ValueError(f"{path}: W1 takes {params['W1'].shape[0]} inputs but the saved "
                         f"preprocessing produces {k}")
    if params["W2"].shape[1] != len(class_names):
        raise ValueError(f"{path}: the network has {params['W2'].shape[1]} classes; "
                         f"expected {len(class_names)}")
    return Classifier(params, mean_image, transform, tuple(class_names))


def read_image(path) -> np.ndarray:
    """An image file as RGB pixels (32, 32, 3) uint8, resized if needed (Pillow).

    Raises ValueError naming the file if it is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give an image file")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse those too.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.size != IMAGE_SHAPE[1::-1]:
                    image = image.resize(IMAGE_SHAPE[1::-1], Image.Resampling.BICUBIC)
                return np.asarray(image, np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"{path}: too large an image to decode safely (more than "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
