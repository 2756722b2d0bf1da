"""One training step, one validation, and a chunk of steps as one compiled program.

``train_step`` is a gradient step of ``model.loss`` (penalty included) on one
minibatch in training mode: augmentation, mixup, the input transform and dropout
drawn from the run's seed and the step number, so any step can be replayed.
``eval_step`` counts correct predictions. ``make_chunk_fn`` scans both over a chunk
of steps; the host loop (``jaxnet.loop``) calls it chunk after chunk.

Inside a chunk W1 is stored transposed, (H, D) (``model.hidden``'s fast layout);
``State`` and everything outside the chunk hold it (D, H).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import model
from .augment import MIXUP_STREAM, apply_transform, augment_rows, mix_rows, mixup_partners
from .config import TrainConfig
from .kernels import gather_rows
from .optim import averaged_params, make_optimizer, update_average


class State(NamedTuple):
    """The carry of the training loop for one config."""

    params: dict
    opt_state: optax.OptState
    best_params: dict
    best_val_correct: jax.Array  # int: validation hits of best_params (-1 before any epoch)
    stale: jax.Array             # int: validations since the last new best
    stopped_at: jax.Array        # int: the step at which early stopping froze the params
    ema: dict | None = None      # with config.ema: the running average, before debiasing


def init_state(config: TrainConfig, hp: dict, params: dict, lrs: jax.Array) -> State:
    """The loop's starting state for ``params`` (the optimizer's state included)."""
    opt = make_optimizer(config, hp, lambda count: lrs[count])
    best = jax.tree.map(jnp.copy, params)  # a buffer of its own: the state is donated
    never = jnp.array(config.num_iters, jnp.int32)
    ema = jax.tree.map(jnp.zeros_like, params) if config.ema > 0 else None
    return State(params, opt.init(params), best, jnp.array(-1, jnp.int32),
                 jnp.array(0, jnp.int32), never, ema)


def step_key(config: TrainConfig, t) -> jax.Array:
    """The key of step ``t``'s random draws: a function of the seed and the step alone."""
    return jax.random.fold_in(jax.random.key(config.seed), t)


def training_inputs(config: TrainConfig, hp: dict, X: jax.Array, key: jax.Array,
                    transform=None) -> tuple:
    """A minibatch X (B, D) in training mode: ``(inputs (B, k), mix, dropout)``.

    The rows are augmented, blended by mixup (``mix = (lam, partners)`` or None) and
    transformed (``augment.apply_transform``); ``dropout`` is ``model.scores``'s
    (key, rate) or None.
    """
    augment_key, dropout_key = jax.random.split(key)
    X = augment_rows(augment_key, X, config.flip, config.translate)
    mix = None
    if config.mixup > 0:
        mix = mixup_partners(jax.random.fold_in(key, MIXUP_STREAM), hp["mixup"], X.shape[0])
        X = mix_rows(X, mix)
    dropout = (dropout_key, hp["dropout"]) if config.dropout > 0 else None
    return apply_transform(transform, X), mix, dropout


def training_scores(config: TrainConfig, hp: dict, params: dict, X: jax.Array, key: jax.Array,
                    transform=None, w1_transposed: bool = False) -> jax.Array:
    """Scores (B, C) of a minibatch X (B, D) in training mode. ``w1_transposed``: W1 is
    stored (H, D), as inside the loop (only then does ``config.compute_dtype`` apply)."""
    inputs, _, dropout = training_inputs(config, hp, X, key, transform)
    return model.scores(params, inputs, w1_transposed, config.compute_dtype, dropout)


def training_loss(params: dict, config: TrainConfig, hp: dict, X: jax.Array, y: jax.Array,
                  key: jax.Array, transform=None, w1_sumsq=None) -> jax.Array:
    """``model.loss`` of a minibatch X (B, D), y (B,) in training mode, W1 stored (H, D);
    ``w1_sumsq`` is sum(W1**2) carried from the previous step (``model.l2_penalty``)."""
    inputs, mix, dropout = training_inputs(config, hp, X, key, transform)
    smoothing = hp["label_smoothing"] if config.label_smoothing > 0 else None
    return model.loss(params, inputs, y, hp["reg"], w1_transposed=True,
                      compute_dtype=config.compute_dtype, dropout=dropout,
                      label_smoothing=smoothing, mix=mix, w1_sumsq=w1_sumsq)


def train_step(config: TrainConfig, opt: optax.GradientTransformation, hp: dict, state: State,
               X_batch: jax.Array, y_batch: jax.Array, t, transform=None,
               w1_sumsq=None) -> tuple[State, jax.Array]:
    """One optimizer step on the minibatch X_batch (B, D), y_batch (B,) at step ``t``.

    Returns the new state and the minibatch's loss (scalar). After an early stop
    (``config.patience``) the params, the optimizer's and the average's state stay
    frozen.
    """
    loss, grads = jax.value_and_grad(training_loss)(
        state.params, config, hp, X_batch, y_batch, step_key(config, t), transform, w1_sumsq)
    updates, opt_state = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = None if config.ema == 0 else update_average(state.ema, params, hp["ema"])
    if config.patience:
        running = t < state.stopped_at
        keep = lambda new, old: jnp.where(running, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        ema = jax.tree.map(keep, ema, state.ema)
    return state._replace(params=params, opt_state=opt_state, ema=ema), loss


def eval_step(params: dict, X: jax.Array, y: jax.Array, transform=None) -> jax.Array:
    """The number of correct predictions (int32 scalar) of params (W1 stored (H, D)) on
    rows X (N, D) (transformed here, and upcast from bfloat16) with labels y (N,).

    Counts, not fractions: the host divides, so float64 accuracies equal numpy's to
    the last bit.
    """
    X = apply_transform(transform, X).astype(params["W2"].dtype)
    hits = model.predict(params, X, w1_transposed=True) == y
    return jnp.sum(hits, dtype=jnp.int32)


def transpose_w1(tree):
    """Transpose W1 in every params-shaped dict in ``tree`` (params, best params,
    the optimizer's slots): (D, H) <-> (H, D)."""
    is_params = lambda x: isinstance(x, dict) and "W1" in x  # noqa: E731
    return jax.tree.map(lambda d: {**d, "W1": d["W1"].T} if is_params(d) else d, tree,
                        is_leaf=is_params)


def make_chunk_fn(config: TrainConfig) -> Callable:
    """The loop body over one chunk of steps, for one config (not yet jitted).

    ``chunk(state, hp, lrs, X, y, X_val, y_val, batches, steps, validate, transform)``
    with batches (S, B), steps (S,), validate (S,) returns the new state and
    per-step ``(loss, train_correct, val_correct)``, each (S,): the numbers of
    correct predictions on the minibatch and on the validation set, only
    meaningful where validate is true. ``transform`` (None or (mean (D,), matrix
    (D, k))) maps each augmented minibatch of X to the network's inputs; X_val
    must already be transformed.
    """
    def chunk(state, hp, lrs, X, y, X_val, y_val, batches, steps, validate, transform=None):
        opt = make_optimizer(config, hp, lambda count: lrs[count])

        def step(carry, inputs):
            state, w1_sumsq = carry
            idx, t, is_validated = inputs
            X_batch, y_batch = gather_rows(X, idx), y[idx]
            state, loss = train_step(config, opt, hp, state, X_batch, y_batch, t, transform,
                                     w1_sumsq)

            def record(tracking):
                best_params, best_val_correct, stale, stopped_at = tracking
                # The model validated and kept as best: the params, or their average.
                candidate = state.params if config.ema == 0 else averaged_params(
                    state.ema, hp["ema"], jnp.minimum(t, stopped_at - 1) + 1)
                train_correct = eval_step(candidate, X_batch, y_batch, transform)
                val_correct = eval_step(candidate, X_val, y_val)
                better = val_correct > best_val_correct
                best_params = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                                           candidate, best_params)
                stale = jnp.where(better, 0, stale + 1)
                if config.patience:
                    stopped_at = jnp.where((stale >= config.patience) & (t < stopped_at),
                                           t + 1, stopped_at)
                return ((best_params, jnp.maximum(val_correct, best_val_correct), stale,
                         stopped_at), (train_correct, val_correct))

            def skip(tracking):
                return tracking, (jnp.array(0, jnp.int32), jnp.array(0, jnp.int32))

            # The predicate is shared by every config of a sweep, so under vmap this
            # stays a real branch and validation runs once per epoch. Only the
            # tracking passes through it: the params are read, never copied.
            tracking, accs = jax.lax.cond(
                is_validated, record, skip,
                (state.best_params, state.best_val_correct, state.stale, state.stopped_at))
            state = State(state.params, state.opt_state, *tracking, state.ema)
            return (state, jnp.sum(state.params["W1"] ** 2)), (loss,) + accs

        state = transpose_w1(state)
        (state, _), outputs = jax.lax.scan(step, (state, jnp.sum(state.params["W1"] ** 2)),
                                           (batches, steps, validate))
        return transpose_w1(state), outputs

    return chunk
