"""``train``: one network trained by the compiled loop, with its inputs checked first.

A run is a ``TrainConfig`` (``jaxnet.config``) plus data. ``train`` checks the
data, draws the minibatch schedule from the seed (``loop.make_schedule``), puts
the data on the device and runs ``loop.run_chunks`` over ``step.make_chunk_fn``.
Saving progress is a hook passed in (``checkpoint``); nothing here touches files,
signals or other processes.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import model, precision
from .arrays import aligned_array, fingerprint
from .augment import apply_transform
from .config import TrainConfig
from .data import IMAGE_SHAPE
from .kernels import device_array, training_rows
from .loop import compiled_chunk_fn, make_schedule, run_chunks
from .optim import learning_rates
from .step import init_state
from .validate import check_features, check_labels, check_params, count_classes

AUGMENTABLE_FEATURES = int(np.prod(IMAGE_SHAPE))


class TrainResult(NamedTuple):
    """What ``train`` returns: numpy params and the notebook's histories."""

    params: dict
    best_params: dict
    best_val_acc: float
    history: dict
    wall_s: float
    config: TrainConfig | None = None   # as trained: compute_dtype "auto" decided


def check_data(X, y, X_val, y_val, num_classes: int | None = None,
               num_features: int | None = None) -> int:
    """Validate a training set and a validation set; return the number of classes."""
    X = check_features(X, "X_train", num_features)
    X_val = check_features(X_val, "X_val", X.shape[1], expected_by="X_train has")
    if len(X) >= 2**31:
        raise ValueError(f"X_train has {len(X)} rows; minibatch indices are int32, so at most "
                         f"2**31 - 1")
    if num_classes is None:
        num_classes = count_classes(y, y_val, name="y_train and y_val")
    check_labels(y, len(X), num_classes, "y_train")
    check_labels(y_val, len(X_val), num_classes, "y_val")
    return num_classes


def check_batches(batches, config: TrainConfig, num_train: int) -> None:
    """Minibatch indices must be (num_iters, batch_size) integers in [0, num_train):
    compiled code would silently clamp an index past the data."""
    batches = np.asarray(batches)
    if batches.shape != (config.num_iters, config.batch_size):
        raise ValueError(f"batches must have shape (num_iters, batch_size) = "
                         f"{(config.num_iters, config.batch_size)}; got {batches.shape}")
    if not np.issubdtype(batches.dtype, np.integer):
        raise ValueError(f"batches must hold integer row indices; got dtype {batches.dtype}")
    if batches.min() < 0 or batches.max() >= num_train:
        raise ValueError(f"batches index rows [{batches.min()}, {batches.max()}] but X_train "
                         f"has rows [0, {num_train - 1}]")


def check_augmentable(augments: bool, num_features: int) -> None:
    """Flips and shifts act on 32x32x3 images: refuse them for rows of another size."""
    if augments and num_features != AUGMENTABLE_FEATURES:
        raise ValueError(f"flip and translate need rows of 32x32x3 images "
                         f"({AUGMENTABLE_FEATURES} features); X_train has {num_features}")


def check_transform(input_transform, num_features: int) -> tuple | None:
    """``input_transform`` as numpy (mean (D,), matrix (D, k) or (D,)), checked against D."""
    if input_transform is None:
        return None
    mean, matrix = (np.asarray(a) for a in input_transform)
    if (mean.shape != (num_features,) or matrix.ndim not in (1, 2)
            or matrix.shape[0] != num_features):
        raise ValueError(f"input_transform must be (mean (D,), matrix (D, k) or (D,)) with "
                         f"D = {num_features}; got shapes {mean.shape} and {matrix.shape}")
    return mean, matrix


def loop_inputs(transform: tuple | None, augments: bool, X, X_val) -> tuple:
    """(X, X_val, the transform the loop applies) for a run with input ``transform``.

    X_val is transformed once. Augmentation acts on image rows, so a run that
    flips or shifts transforms each minibatch after augmenting it; otherwise X
    is transformed once, up front, and the loop applies nothing.
    """
    if transform is None:
        return X, X_val, None
    dtype = transform[0].dtype
    X_val = apply_transform(transform, np.asarray(X_val, dtype))
    if augments:
        return X, X_val, transform
    # Aligned, so that every chunk of a sweep uses the transformed rows in place.
    return aligned_array(apply_transform(transform, np.asarray(X, dtype)), dtype), X_val, None


def train(X, y, X_val, y_val, config: TrainConfig = TrainConfig(), params: dict | None = None,
          batches: np.ndarray | None = None, progress: Callable | None = None,
          chunk_size: int = 100, input_transform: tuple | None = None,
          checkpoint=None) -> TrainResult:
    """Train one network; the loop runs compiled, ``chunk_size`` steps per device call.

    X: (N, D), y: (N,) ints; X_val: (M, D), y_val: (M,). ``params`` defaults to
    ``init_params(key(config.seed), D, hidden_size, C, std)``; ``batches``
    (num_iters, batch_size) replaces the minibatches drawn from the seed.
    ``progress(done, total, chunk_losses)`` is called between chunks.
    ``input_transform`` (mean (D,), matrix (D, k) or (D,)), e.g. the arrays of
    a ``jaxnet.preprocess.Transform``, maps rows to the network's inputs
    ``(X - mean) @ matrix``: X_val is transformed once, each training minibatch
    after its augmentation (without augmentation X is transformed once, up
    front), so W1 is (k, H) and the returned params expect transformed rows.
    ``checkpoint`` (a ``jaxnet.resume.Checkpoint``, or anything with its
    ``loop_hook(identity)``) saves progress between chunks, at most every
    ``checkpoint.every`` seconds, and stops with ``resume.Interrupted`` after a
    signal; with ``checkpoint.resume`` the run continues from the progress saved
    there (refused when the config, the data or ``chunk_size`` differ), with
    the same result as a run never interrupted.
    ``config.compute_dtype="auto"`` is decided here (``precision.resolve``);
    the result's ``config`` is the one trained.
    Returns the final and best-validation params (numpy), the best validation
    accuracy and the histories ``loss_history`` (per step), ``train_acc_history``
    and ``val_acc_history`` (per epoch), plus the wall time in seconds.
    """
    config.validate()
    num_classes = None if params is None else np.shape(params["W2"])[1]
    # Given params take rows of W1's height (after the transform, when there is one).
    num_features = None if params is None or input_transform is not None else \
        np.shape(params["W1"])[0]
    num_classes = check_data(X, y, X_val, y_val, num_classes, num_features)
    augments = bool(config.flip or config.translate)
    check_augmentable(augments, np.shape(X)[1])
    transform = check_transform(input_transform, np.shape(X)[1])
    X, X_val, transform = loop_inputs(transform, augments, X, X_val)
    input_size = np.shape(X)[1] if transform is None else np.shape(transform[1])[-1]
    if params is not None:
        check_params(params, input_size)
    config = precision.resolve(config, input_size)
    if batches is not None:
        check_batches(batches, config, len(X))
    schedule = make_schedule(len(X), config.batch_size, config.num_iters, batches, config.seed)
    dtype = np.dtype(config.dtype)
    start_time = time.perf_counter()
    with jax.enable_x64(dtype == np.float64):
        hp = {k: jnp.asarray(v, dtype) for k, v in config.hyperparams().items()}
        if params is None:
            params = model.init_params(jax.random.key(config.seed), input_size,
                                       config.hidden_size, num_classes, hp["std"], dtype)
        params = {k: jnp.asarray(v, dtype) for k, v in params.items()}
        data = (training_rows(X, config.dtype, config.compute_dtype), jnp.asarray(y, jnp.int32),
                device_array(X_val, dtype), jnp.asarray(y_val, jnp.int32))
        lrs = learning_rates(config, hp, schedule.decays_before)
        if transform is not None:
            transform = tuple(jnp.asarray(a, dtype) for a in transform)
        chunk_fn = compiled_chunk_fn(config)
        hook = None if checkpoint is None else checkpoint.loop_hook({
            "config": dataclasses.asdict(config), "chunk_size": chunk_size,
            "data": fingerprint(X, y, X_val, y_val, *(transform or ()),
                                       schedule.batches, *params.values())})
        state, histories, best_val_acc = run_chunks(
            chunk_fn, init_state(config, hp, params, lrs), hp, lrs, data, schedule,
            chunk_size, progress, transform, hook)
        to_numpy = lambda tree: {k: np.asarray(v) for k, v in tree.items()}  # noqa: E731
        result = TrainResult(
            to_numpy(state.params), to_numpy(state.best_params), float(best_val_acc[0]),
            histories[0], time.perf_counter() - start_time, config)
    return result


def notebook_printer(print_fn: Callable = print, every: int = 100) -> Callable:
    """A ``progress`` hook that prints the notebook's ``iteration 100 / 1000: loss ...`` lines."""
    def progress(done, total, chunk_losses):
        first = done - len(chunk_losses)
        for it in range(first, done):
            if it % every == 0:
                print_fn("iteration %d / %d: loss %f" % (it, total, chunk_losses[it - first]))
    return progress
