"""Small CIFAR-10 folders in the official "python version" layout, with synthetic images.

The tests of loading, extraction, sweeps and scripts need files in CIFAR-10's
exact format, not its pictures, so they build them here and never depend on
a dataset outside the repository. The files are written as the official
Python-2 pickles are: keys and strings are Python-2 ``str`` opcodes and the
image array is reduced through ``numpy.core.multiarray._reconstruct``, so
``pickle.load(f, encoding="bytes")`` gives bytes keys and ``encoding="latin1"``
str keys, as with the real files.

Each class has its own smooth colour pattern plus noise, so a small network
learns the synthetic images above chance.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Protocol 2, with str and bytes written as Python-2 ``str`` and numpy's globals
    under the module names Python 2's numpy used."""

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module, name = obj.__module__, name or obj.__qualname__
        module = module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def dump_py2(obj, path: Path) -> None:
    """Pickle ``obj`` into ``path`` as Python 2 wrote the CIFAR-10 batches."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def synthetic_images(labels: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """uint8 (n, 3072) rows in CIFAR's channel-major order: a per-class pattern plus noise."""
    pattern_rng = np.random.RandomState(1234)        # the same class patterns in every split
    coarse = pattern_rng.uniform(40, 215, (len(CLASSES), 3, 4, 4))
    patterns = coarse.repeat(8, axis=2).repeat(8, axis=3)          # (10, 3, 32, 32)
    images = patterns[labels] + rng.normal(0, 45, (len(labels), 3, 32, 32))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def clustered_rows(sizes: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits of flattened 32x32x3 images, noisy copies of one random image per class,
    which a small network learns fast: one ``(X (n, 3072) float32, y (n,))`` per size."""
    rng = np.random.RandomState(seed)
    centers = rng.randn(10, 3072).astype(np.float32)
    splits = []
    for n in sizes:
        y = rng.randint(0, 10, n)
        splits.append(((centers[y] + 2 * rng.randn(n, 3072)).astype(np.float32), y))
    return splits


def write_cifar10(out: Path, per_class: int, seed: int = 0, tar: Path | None = None) -> Path:
    """Write ``out/cifar-10-batches-py`` with ``per_class`` training and test images per class.

    Training images are spread over data_batch_1..5 (shuffled), the test
    images form test_batch; batches.meta and readme.html complete the folder.
    With ``tar``, also write the folder as a .tar.gz there. Returns the folder.
    """
    rng = np.random.RandomState(seed)
    root = Path(out) / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), per_class))
        data = synthetic_images(labels, rng)
        if split == "train":
            size = -(-len(labels) // 5)
            parts = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5",
                      slice(i * size, (i + 1) * size)) for i in range(5)]
        else:
            parts = [("test_batch", "testing batch 1 of 1", slice(None))]
        for name, label, rows in parts:
            names = [f"{CLASSES[c]}_s{seed}_{split}_{i}.png"
                     for i, c in enumerate(labels[rows])]
            dump_py2({"batch_label": label, "labels": [int(c) for c in labels[rows]],
                      "data": np.ascontiguousarray(data[rows]), "filenames": names},
                     root / name)
    dump_py2({"num_cases_per_batch": -(-per_class * len(CLASSES) // 5),
              "label_names": CLASSES, "num_vis": 3072}, root / "batches.meta")
    (root / "readme.html").write_text("synthetic CIFAR-10 layout for tests\n")
    if tar is not None:
        with tarfile.open(tar, "w:gz") as archive:
            archive.add(root, arcname=FOLDER)
    return root


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()
