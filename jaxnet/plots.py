"""The notebook's figures, written as PNG files with matplotlib's Agg renderer.

Figures are made with ``matplotlib.figure.Figure`` rather than pyplot, so no
display is needed and the caller's pyplot state and backend are left alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .checkpoint import atomic_write


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
    N, H, W, C = Xs.shape
    grid_size = int(np.ceil(np.sqrt(N)))
    grid = np.zeros((grid_size * (H + padding) - padding,
                     grid_size * (W + padding) - padding, C))
    for i in range(N):
        r, c = divmod(i, grid_size)
        img = Xs[i]
        low, high = np.min(img), np.max(img)
        y0, x0 = r * (H + padding), c * (W + padding)
        grid[y0:y0 + H, x0:x0 + W] = ubound * (img - low) / max(high - low, 1e-12)
    return grid


def plot_weights(W1: np.ndarray, path, image_shape=(32, 32, 3)) -> Path:
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
