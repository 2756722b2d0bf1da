"""Data augmentation for 32x32x3 images stored as rows, as pure JAX functions.

Rows are images in the notebook's layout: ``X.reshape(N, 32, 32, 3)`` gives
(N, height, width, channel). Every function takes a PRNG key, so the draws
come from the run's seed and a run is reproducible.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .data import IMAGE_SHAPE


def flip_horizontal(images: jax.Array) -> jax.Array:
    """Mirror images left-right. images: (N, H, W, C) -> (N, H, W, C)."""
    return images[:, :, ::-1, :]


def translate(images: jax.Array, shifts: jax.Array, max_shift: int | None = None) -> jax.Array:
    """Shift each image by whole pixels, filling the uncovered border with zeros.

    images: (N, H, W, C); shifts: (N, 2) ints (dy, dx) in [-max_shift,
    max_shift] (default bound: the image size): pixel (i, j) moves to (i + dy,
    j + dx). Equivalent to zero-padding by max_shift and cropping a window.
    """
    N, H, W, _ = images.shape
    pad = max(H, W) if max_shift is None else max_shift
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(image, shift):
        return jax.lax.dynamic_slice(image, (pad - shift[0], pad - shift[1], 0),
                                     image.shape[:0] + (H, W, image.shape[-1]))
    return jax.vmap(crop)(padded, shifts)


def augment_rows(key: jax.Array, X: jax.Array, flip: bool, max_shift: int) -> jax.Array:
    """Random flips (probability 1/2) and shifts in [-max_shift, max_shift], per row.

    X: (N, 3072) rows of 32x32x3 images -> (N, 3072).
    """
    if not flip and max_shift == 0:
        return X
    images = X.reshape((X.shape[0],) + IMAGE_SHAPE)
    flip_key, shift_key = jax.random.split(key)
    if flip:
        do_flip = jax.random.bernoulli(flip_key, 0.5, (X.shape[0],))
        images = jnp.where(do_flip[:, None, None, None], flip_horizontal(images), images)
    if max_shift:
        shifts = jax.random.randint(shift_key, (X.shape[0], 2), -max_shift, max_shift + 1)
        images = translate(images, shifts, max_shift)
    return images.reshape(X.shape)


# Folded into a step's key for the mixup draws, so that turning mixup on leaves the
# step's augmentation and dropout draws as they were.
MIXUP_STREAM = 1


def mixup_partners(key: jax.Array, alpha: jax.Array, n: int) -> tuple:
    """A minibatch's mixup draw: the weight lam ~ Beta(alpha, alpha) (scalar) and each
    row's partner, a permutation of the n rows."""
    lam_key, partner_key = jax.random.split(key)
    return jax.random.beta(lam_key, alpha, alpha), jax.random.permutation(partner_key, n)


def mix_rows(X: jax.Array, mix: tuple) -> jax.Array:
    """Mixup's inputs ``lam * X + (1 - lam) * X[partners]`` for ``mix = (lam, partners)``
    (from ``mixup_partners``); X: (N, D), blended in lam's dtype, not bfloat16."""
    lam, partners = mix
    X = X.astype(lam.dtype)
    return lam * X + (1 - lam) * X[partners]


def apply_transform(transform, X: jax.Array) -> jax.Array:
    """``(X - mean) @ matrix`` (``* matrix`` for a (D,) scale); X itself if transform is None.

    transform: None or (mean (D,), matrix (D, k) or (D,)); X: (N, D) -> (N, k).
    """
    if transform is None:
        return X
    mean, matrix = transform
    return (X - mean) * matrix if matrix.ndim == 1 else (X - mean) @ matrix
