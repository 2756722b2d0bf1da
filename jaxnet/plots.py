"""The notebook's figures, written as PNG files with matplotlib's Agg renderer.

Figures are made with ``matplotlib.figure.Figure`` rather than pyplot, so no
display is needed and the caller's pyplot state and backend are left alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .files import atomic_write
from .data import IMAGE_SHAPE


def _save(fig, path) -> Path:
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    return Path(path)


def plot_history(history: dict, path) -> Path:
    """The notebook's two panels: loss per iteration; train/val accuracy per epoch."""
    fig = Figure(figsize=(8, 7))
    ax1, ax2 = fig.subplots(2, 1)
    ax1.plot(history["loss_history"])
    ax1.set(title="Loss history", xlabel="Iteration", ylabel="Loss")
    ax2.plot(history["train_acc_history"], label="train")
    ax2.plot(history["val_acc_history"], label="val")
    ax2.set(title="Classification accuracy history", xlabel="Epoch",
            ylabel="Classification accuracy")
    ax2.legend()
    fig.tight_layout()
    return _save(fig, path)


def visualize_grid(Xs: np.ndarray, ubound: float = 255.0, padding: int = 1) -> np.ndarray:
    """Tile images into one grid, each rescaled to [0, ubound] (the notebook's function).

    Xs: (N, H, W, C) -> (G * (H + padding) - padding, G * (W + padding) - padding, C)
    with G = ceil(sqrt(N)).
    """
    Xs = np.asarray(Xs)
    if Xs.ndim != 4 or len(Xs) == 0:
        raise ValueError(f"Xs must be a non-empty stack of images (N, H, W, C); "
                         f"got shape {Xs.shape}")
    N, H, W, C = Xs.shape
    grid_size = int(np.ceil(np.sqrt(N)))
    grid = np.zeros((grid_size * (H + padding) - padding,
                     grid_size * (W + padding) - padding, C))
    for i in range(N):
        r, c = divmod(i, grid_size)
        img = Xs[i].astype(np.float64)  # integer pixels would wrap around in img - low
        low, high = np.min(img), np.max(img)
        y0, x0 = r * (H + padding), c * (W + padding)
        grid[y0:y0 + H, x0:x0 + W] = ubound * (img - low) / max(high - low, 1e-12)
    return grid


def plot_weights(W1: np.ndarray, path, image_shape=IMAGE_SHAPE) -> Path:
    """The first-layer weights as image tiles. W1: (D, H) with D = prod(image_shape)."""
    W1 = np.asarray(W1)
    if W1.shape[0] != int(np.prod(image_shape)):
        raise ValueError(f"W1 has {W1.shape[0]} rows; cannot show them as {image_shape} images")
    tiles = W1.T.reshape((W1.shape[1],) + tuple(image_shape))
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    ax.imshow(visualize_grid(tiles, padding=3).astype("uint8"))
    ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def most_varied(rows: list, candidates) -> list:
    """The (up to two) fields among ``candidates`` with the most distinct values in ``rows``."""
    counts = {name: len({row.get(name) for row in rows}) for name in candidates}
    return sorted((n for n in counts if counts[n] > 1), key=lambda n: -counts[n])[:2]


def plot_heatmap(rows: list, path, value: str = "val_acc",
                 candidates=("learning_rate", "reg", "hidden_size", "batch_size",
                             "learning_rate_decay", "std", "dropout", "weight_decay",
                             "momentum", "num_iters", "preprocess")) -> Path:
    """Heatmap of ``value`` over the two most varied hyperparameters of a sweep.

    rows: one dict per config (hyperparameters and outcomes). Each cell shows
    the best ``value`` among the configs with that pair of values (the other
    fields vary inside a cell); diverged configs are left out. Random searches
    rarely repeat values, so their values are binned into at most 8 quantile
    bins per axis.
    """
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    axes = most_varied(rows, candidates)
    fig = Figure(figsize=(7, 5.5))
    ax = fig.subplots()
    if len(axes) < 1:
        ax.text(0.5, 0.5, "fewer than one varied hyperparameter", ha="center")
        return _save(fig, path)
    if len(axes) == 1:
        axes = axes + [None]
    labels, index = [], []
    for name in axes:
        values = [r[name] if name else 0 for r in rows]
        distinct = sorted(set(values))
        if len(distinct) > 8:
            edges = np.quantile(values, np.linspace(0, 1, 9))
            bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 7)
            labels.append([f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(8)])
            index.append(bins)
        else:
            labels.append([f"{v:g}" if isinstance(v, float) else str(v) for v in distinct])
            index.append([distinct.index(v) for v in values])
    grid = np.full((len(labels[1]), len(labels[0])), np.nan)
    for row, i, j in zip(rows, index[0], index[1]):
        grid[j, i] = np.fmax(grid[j, i], row[value])
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    for (j, i), cell in np.ndenumerate(grid):
        if np.isfinite(cell):
            ax.text(i, j, f"{cell:.3f}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(labels[0])), labels[0], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels[1])), labels[1], fontsize=8)
    ax.set(xlabel=axes[0], ylabel=axes[1] or "", title=f"best {value} per cell")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, path)
