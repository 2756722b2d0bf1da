"""The compiled training loop: optax updates over a minibatch schedule made on the host.

A run is a ``TrainConfig`` plus data. The host draws the minibatch indices
(iterations x batch_size) from the seed and computes the epoch boundaries
(``schedule``); the device runs ``lax.scan`` over chunks of iterations, and
between chunks the host collects the loss history and reports progress.

The per-config part of the loop (``make_chunk_fn``) is written for one
network; ``train`` compiles it as is, ``jaxnet.sweep`` compiles it under
``vmap`` so that many configs share one compiled program.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import distributed, model, resume
from .arrays import aligned_array
from .augment import IMAGE_SHAPE, augment_rows
from .validate import check_features, check_labels, check_params, count_classes

AUGMENTABLE_FEATURES = int(np.prod(IMAGE_SHAPE))
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("step", "cosine")
# "float32": every product in the params' dtype (float64 too, with dtype float64).
COMPUTE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; defaults are the notebook's CIFAR-10 run.

    ``schedule="step"`` is the notebook's: the learning rate is multiplied by
    ``learning_rate_decay`` at iteration 0 and at every multiple of
    ``iterations_per_epoch = max(N / batch_size, 1)``. ``"cosine"`` decays
    from ``learning_rate`` to 0 over the run after ``warmup_iters`` of linear
    warmup. ``momentum`` is the momentum of momentum/nesterov and Adam's b1.
    ``patience`` > 0 stops training (freezes the params) once that many
    validations in a row bring no new best validation accuracy.
    ``mixup`` > 0 blends each training row with another of its minibatch,
    weight ``lam ~ Beta(mixup, mixup)`` per step, and the loss with the same
    weight; ``label_smoothing`` moves that much of each target's probability
    onto the uniform distribution; ``ema`` > 0 keeps an exponential moving
    average of the params with that decay per step, and that average (not the
    last step's params) is validated, chosen as best and saved (see
    ``averaged_params``).
    ``compute_dtype="bfloat16"`` (with ``dtype="float32"``) stores the
    training rows in bfloat16 and runs the first layer's products, forward and
    backward, on bfloat16 operands with float32 accumulation (see
    ``hidden_t``); the params, the optimizer's state, the loss, the softmax and
    the validation pass stay float32.
    """

    hidden_size: int = 50
    num_iters: int = 1000
    batch_size: int = 200
    learning_rate: float = 1e-4
    learning_rate_decay: float = 0.95
    reg: float = 0.25
    std: float = 1e-4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"
    warmup_iters: int = 0
    dropout: float = 0.0
    patience: int = 0
    flip: bool = False
    translate: int = 0
    mixup: float = 0.0
    label_smoothing: float = 0.0
    ema: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    compute_dtype: str = "float32"

    # Fields that change array shapes or the program's structure: configs that
    # differ in these cannot share one compiled vmap program.
    STRUCTURE = ("hidden_size", "num_iters", "batch_size", "optimizer", "schedule",
                 "warmup_iters", "patience", "flip", "translate", "seed", "dtype",
                 "compute_dtype")
    # Continuous hyperparameters: traced values, so changing them never recompiles.
    CONTINUOUS = ("learning_rate", "learning_rate_decay", "reg", "std", "momentum",
                  "weight_decay", "dropout", "mixup", "label_smoothing", "ema")
    # Continuous fields whose 0 switches their part of the loop off, a structural choice.
    SWITCHES = ("dropout", "mixup", "label_smoothing", "ema")

    def structure(self) -> tuple:
        """The values of the structural fields plus which of the SWITCHES are on."""
        return (tuple(getattr(self, f) for f in self.STRUCTURE)
                + tuple(getattr(self, f) > 0 for f in self.SWITCHES))

    def hyperparams(self) -> dict:
        """The continuous hyperparameters as floats."""
        return {f: float(getattr(self, f)) for f in self.CONTINUOUS}

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first setting that makes no sense."""
        def need(ok, message):
            if not ok:
                raise ValueError(message)
        need(isinstance(self.patience, (int, np.integer)) and self.patience >= 0,
             f"patience must be an integer >= 0; got {self.patience!r}")
        for name in ("warmup_iters", "translate"):
            value = getattr(self, name)
            need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                 f"{name} must be an integer; got {value!r}")
        for name in ("hidden_size", "num_iters", "batch_size"):
            value = getattr(self, name)
            # Steps and row indices are int32 in compiled code.
            need(isinstance(value, (int, np.integer)) and 1 <= value < 2**31,
                 f"{name} must be an integer in [1, 2**31); got {value!r}")
        for name in self.CONTINUOUS:
            value = getattr(self, name)
            need(isinstance(value, (int, float, np.integer, np.floating))
                 and not isinstance(value, bool), f"{name} must be a number; got {value!r}")
        for name in ("learning_rate", "reg", "std", "weight_decay"):
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0; got {value}")
        need(isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**32,
             f"seed must be an integer in [0, 2**32); got {self.seed!r}")
        need(0 < self.learning_rate_decay <= 1,
             f"learning_rate_decay must be in (0, 1]; got {self.learning_rate_decay}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        for name in ("dropout", "label_smoothing", "ema"):
            value = getattr(self, name)
            need(0 <= value < 1, f"{name} must be in [0, 1); got {value}")
        need(math.isfinite(self.mixup) and self.mixup >= 0,
             f"mixup must be finite and >= 0; got {self.mixup}")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        need(self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        need(0 <= self.warmup_iters < self.num_iters,
             f"warmup_iters must be in [0, num_iters); got {self.warmup_iters}")
        need(0 <= self.translate < 32, f"translate must be in [0, 31] pixels; got {self.translate}")
        need(self.dtype in ("float32", "float64"),
             f"dtype must be float32 or float64; got {self.dtype!r}")
        need(self.compute_dtype in COMPUTE_DTYPES,
             f"compute_dtype must be {' or '.join(COMPUTE_DTYPES)}; got {self.compute_dtype!r}")
        need(self.compute_dtype == "float32" or self.dtype == "float32",
             f"compute_dtype {self.compute_dtype} needs dtype float32 (float64 runs are for "
             f"exact checks); got dtype {self.dtype}")
        return self


PRESETS = {
    # The notebook's CIFAR-10 experiment (validation accuracy about 0.29).
    "notebook": TrainConfig(),
    # The answer of scripts/search.py (seed 0: Adam with cosine decay, dropout, flips on
    # standardized inputs, PRESET_PREPROCESS) with what scripts/ablation.py found to gain
    # within 15 minutes on 2 CPU cores: 150 epochs instead of 50, bfloat16 products,
    # shifts of up to 2 pixels (docs/best_network.md).
    "best": TrainConfig(hidden_size=2000, num_iters=36751, batch_size=200,
                        learning_rate=8.021969575436478e-4, reg=0.0, optimizer="adam",
                        schedule="cosine", dropout=0.22492512060101696, flip=True, translate=2,
                        compute_dtype="bfloat16"),
}
# The preprocessing (a jaxnet.preprocess kind, or "none") each preset was found with.
PRESET_PREPROCESS = {"notebook": "none", "best": "standardize"}


class Schedule(NamedTuple):
    """The host-made plan of a run, shared by every config of a sweep group.

    batches: (T, B) minibatch indices; epoch_end: (T,) bool, where the notebook
    records accuracies and decays the learning rate; decays_before: (T,) int,
    how many decays happened before step t; validate: (T,) bool, where the
    params are validated as candidates for the best: every epoch end and the
    last step (with a schedule that decays to the end, the final params are
    often the best, and the last step is rarely an epoch end).
    """

    batches: np.ndarray
    epoch_end: np.ndarray
    decays_before: np.ndarray
    validate: np.ndarray


def sample_batches(num_train: int, batch_size: int, num_iters: int, rng=np.random) -> np.ndarray:
    """Minibatch indices drawn with replacement from ``rng`` (``np.random`` or a RandomState).

    The draws are the notebook's (``np.random.choice(num_train, batch_size)``
    each iteration), so numpy's global RNG replays a notebook run exactly.
    Returns (num_iters, batch_size) int32.
    """
    # With replacement, choice(n, size) is randint(0, n, size), and consecutive calls
    # continue one stream: a single call draws the same numbers 100x faster.
    return rng.randint(0, num_train, size=(num_iters, batch_size)).astype(np.int32)


def make_schedule(num_train: int, batch_size: int, num_iters: int,
                  batches: np.ndarray | None = None, seed: int = 0) -> Schedule:
    """The notebook's epoch timing for ``num_iters`` steps: ``it % iterations_per_epoch == 0``.

    ``iterations_per_epoch = max(num_train / batch_size, 1)`` is a float, as in
    the notebook, so batch sizes that do not divide N keep its timing. Batches
    are drawn from ``np.random.RandomState(seed)`` unless given.
    """
    iterations_per_epoch = max(num_train / batch_size, 1)
    epoch_end = np.array([it % iterations_per_epoch == 0 for it in range(num_iters)])
    decays_before = np.concatenate([[0], np.cumsum(epoch_end)[:-1]]).astype(np.int32)
    if batches is None:
        batches = sample_batches(num_train, batch_size, num_iters, np.random.RandomState(seed))
    validate = epoch_end.copy()
    validate[-1] = True
    return Schedule(np.asarray(batches, np.int32), epoch_end, decays_before, validate)


def learning_rate_at(config: TrainConfig, hp: dict, step, decays_before):
    """Learning rate of step ``step`` (traced); ``hp`` holds the continuous hyperparameters."""
    if config.schedule == "step":
        return hp["learning_rate"] * hp["learning_rate_decay"] ** decays_before
    warmup = config.warmup_iters
    progress = jnp.clip((step - warmup) / max(config.num_iters - warmup, 1), 0.0, 1.0)
    cosine = hp["learning_rate"] * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    if warmup == 0:
        return cosine
    return jnp.where(step < warmup, hp["learning_rate"] * (step + 1) / warmup, cosine)


def make_optimizer(config: TrainConfig, hp: dict, lr_fn: Callable) -> optax.GradientTransformation:
    """The optax update for ``config.optimizer``; ``hp`` values may be traced arrays."""
    if config.optimizer == "sgd":
        return optax.sgd(lr_fn)
    if config.optimizer in ("momentum", "nesterov"):
        return optax.sgd(lr_fn, momentum=hp["momentum"], nesterov=config.optimizer == "nesterov")
    if config.optimizer == "adam":
        return optax.adam(lr_fn, b1=hp["momentum"])
    return optax.adamw(lr_fn, b1=hp["momentum"], weight_decay=hp["weight_decay"])


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


def update_average(ema: dict, params: dict, decay) -> dict:
    """One step of the exponential moving average: ``ema + (1 - decay) * (params - ema)``."""
    return jax.tree.map(lambda e, p: e + (1 - decay) * (p - e), ema, params)


def averaged_params(ema: dict, decay, steps) -> dict:
    """The average of the params over ``steps`` steps, from ``ema`` started at zeros:
    divided by ``1 - decay**steps``, the weight it has gathered (as Adam debiases its
    moments), so every step's params count and the zeros do not."""
    weight = 1 - decay ** steps
    return jax.tree.map(lambda e: e / weight, ema)


def apply_transform(transform, X: jax.Array) -> jax.Array:
    """``(X - mean) @ matrix`` (``* matrix`` for a (D,) scale); X itself if transform is None.

    transform: None or (mean (D,), matrix (D, k) or (D,)); X: (N, D) -> (N, k).
    """
    if transform is None:
        return X
    mean, matrix = transform
    return (X - mean) * matrix if matrix.ndim == 1 else (X - mean) @ matrix


# W1 (H, D) . X (N, D) -> (H, N): both contract their last axis, D.
CONTRACT_D = (((1,), (1,)), ((), ()))


@jax.custom_vjp
def bfloat16_product(W: jax.Array, X: jax.Array) -> jax.Array:
    """``W . X^T`` on bfloat16 operands, accumulated in float32.

    W: (H, D) float32, X: (N, D) (bfloat16, or cast here) -> (H, N) float32.
    The gradient with respect to W, ``g @ X`` (H, D), is float32 too, from the
    cotangent g rounded to bfloat16: JAX's own rule for this product would
    multiply a float32 g by the bfloat16 X at float32 speed and round the
    gradient to bfloat16. X, the data, gets no gradient.
    """
    return jax.lax.dot_general(W.astype(jnp.bfloat16), X.astype(jnp.bfloat16), CONTRACT_D,
                               preferred_element_type=jnp.float32)


def _bfloat16_product_fwd(W, X):
    X = X.astype(jnp.bfloat16)
    return bfloat16_product(W, X), X


def _bfloat16_product_bwd(X, g):
    dW = jax.lax.dot_general(g.astype(jnp.bfloat16), X, (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)
    return dW, None


bfloat16_product.defvjp(_bfloat16_product_fwd, _bfloat16_product_bwd)


def hidden_t(params: dict, X: jax.Array, compute_dtype: str = "float32") -> jax.Array:
    """The hidden layer transposed, relu(X @ W1 + b1).T: (H, N), for params whose W1
    is stored transposed, (H, D), as inside the training loop.

    In this layout XLA's CPU matrix kernels run the forward product as
    ``W1 . X^T`` and the backward one as ``dH^T @ X``, about twice as fast per
    step on 2 cores as ``X @ W1`` with ``X^T @ dH`` (scripts/bench.py).
    ``compute_dtype="bfloat16"`` runs both as ``bfloat16_product``.
    """
    if compute_dtype == "bfloat16":
        pre = bfloat16_product(params["W1"], X)
    else:
        pre = jax.lax.dot_general(params["W1"], X, CONTRACT_D)
    return jax.nn.relu(pre + params["b1"][:, None])


def transpose_w1(tree):
    """Transpose W1 in every params-shaped dict in ``tree`` (params, best params,
    the optimizer's slots): (D, H) <-> (H, D)."""
    is_params = lambda x: isinstance(x, dict) and "W1" in x  # noqa: E731
    return jax.tree.map(lambda d: {**d, "W1": d["W1"].T} if is_params(d) else d, tree,
                        is_leaf=is_params)


def training_scores(config: TrainConfig, hp: dict, params: dict, X: jax.Array, key: jax.Array,
                    transform=None, w1_transposed: bool = False, mix=None):
    """Scores (N, C) in training mode: augmentation of X (N, D), then mixup (``mix``, from
    ``mixup_partners``), the input transform (if any, see ``apply_transform``; W1 is then
    (k, H)), inverted dropout on the hidden layer.

    ``w1_transposed``: ``params["W1"]`` is stored (H, D), as inside the training loop
    (only then does ``config.compute_dtype`` apply).
    """
    augment_key, dropout_key = jax.random.split(key)
    X = augment_rows(augment_key, X, config.flip, config.translate)
    if mix is not None:
        lam, partners = mix
        X = X.astype(hp["mixup"].dtype)  # blended in float32 (or float64), not bfloat16
        X = lam * X + (1 - lam) * X[partners]
    X = apply_transform(transform, X)
    if w1_transposed:
        h = hidden_t(params, X, config.compute_dtype).T
    else:
        h = model.hidden(params, X)
    if config.dropout > 0:
        keep = 1.0 - hp["dropout"]
        mask = jax.random.bernoulli(dropout_key, keep, h.shape)
        h = jnp.where(mask, h / keep, 0.0)
    return h @ params["W2"] + params["b2"]


# Folded into a step's key for the mixup draws, so that turning mixup on leaves the
# step's augmentation and dropout draws as they were.
MIXUP_STREAM = 1


def mixup_partners(key: jax.Array, alpha: jax.Array, n: int) -> tuple:
    """A minibatch's mixup draw: the weight lam ~ Beta(alpha, alpha) (scalar) and each
    row's partner, a permutation of the n rows."""
    lam_key, partner_key = jax.random.split(key)
    return jax.random.beta(lam_key, alpha, alpha), jax.random.permutation(partner_key, n)


def training_loss(config: TrainConfig, hp: dict, params: dict, X: jax.Array, y: jax.Array,
                  key: jax.Array, transform=None, w1_transposed: bool = False) -> jax.Array:
    """The data loss of a training minibatch X (B, D), y (B,) ints (no L2 penalty): the
    cross-entropy of ``training_scores``, against targets smoothed by
    ``config.label_smoothing``; with ``config.mixup`` the rows are blended and the loss
    is ``lam * loss(y) + (1 - lam) * loss(y[partners])``."""
    mix = None
    if config.mixup > 0:
        mix = mixup_partners(jax.random.fold_in(key, MIXUP_STREAM), hp["mixup"], len(y))
    logits = training_scores(config, hp, params, X, key, transform, w1_transposed, mix)

    def loss(labels):
        cross_entropy = model.cross_entropy(logits, labels)
        if config.label_smoothing == 0:
            return cross_entropy
        # Against the uniform target, the cross-entropy is the mean of -log_softmax.
        smoothing = hp["label_smoothing"]
        return ((1 - smoothing) * cross_entropy
                - smoothing * jnp.mean(jax.nn.log_softmax(logits, axis=1)))
    if mix is None:
        return loss(y)
    lam, partners = mix
    return lam * loss(y) + (1 - lam) * loss(y[partners])


def make_chunk_fn(config: TrainConfig) -> Callable:
    """The loop body over one chunk of steps, for one config (not yet jitted).

    ``chunk(state, hp, lrs, X, y, X_val, y_val, batches, steps, validate, transform)``
    with batches (S, B), steps (S,), validate (S,) returns the new state and
    per-step ``(loss, train_correct, val_correct)``, each (S,): the numbers of
    correct predictions on the minibatch and on the validation set, only
    meaningful where validate is true. (Counts, not fractions: the host
    divides, so float64 accuracies equal numpy's to the last bit.) ``transform``
    (None or (mean (D,), matrix (D, k))) maps each augmented minibatch of X to
    the network's inputs; X_val must already be transformed.
    """
    base_key = jax.random.key(config.seed)

    def loss_fn(params, hp, X, y, key, transform, w1_sumsq):
        # The W1 part of the L2 penalty takes its value from the loop's carry:
        # sum(W1**2), computed right after W1 was. Reading W1 again here would
        # make XLA copy W1 every step (the in-place update could not be ordered
        # after the read). Its gradient, 2 * reg * W1, is added by hand.
        penalty = hp["reg"] * (w1_sumsq + jnp.sum(params["W2"] ** 2))
        return training_loss(config, hp, params, X, y, key, transform, True) + penalty

    def chunk(state, hp, lrs, X, y, X_val, y_val, batches, steps, validate, transform=None):
        opt = make_optimizer(config, hp, lambda count: lrs[count])

        def step(carry, inputs):
            state, w1_sumsq = carry
            idx, t, is_validated = inputs
            X_batch, y_batch = gather_rows(X, idx), y[idx]
            loss, grads = jax.value_and_grad(loss_fn)(
                state.params, hp, X_batch, y_batch, jax.random.fold_in(base_key, t), transform,
                w1_sumsq)
            grads = {**grads, "W1": grads["W1"] + 2 * hp["reg"] * state.params["W1"]}
            updates, opt_state = opt.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            ema = None if config.ema == 0 else update_average(state.ema, params, hp["ema"])
            if config.patience:  # after an early stop the params stay frozen
                running = t < state.stopped_at
                keep = lambda new, old: jnp.where(running, new, old)  # noqa: E731
                params = jax.tree.map(keep, params, state.params)
                opt_state = jax.tree.map(keep, opt_state, state.opt_state)
                ema = jax.tree.map(keep, ema, state.ema)

            def record(tracking):
                best_params, best_val_correct, stale, stopped_at = tracking
                # The model validated and kept as best: the params, or their average.
                candidate = params if ema is None else averaged_params(
                    ema, hp["ema"], jnp.minimum(t, stopped_at - 1) + 1)

                def hits(X, y):
                    scores = hidden_t(candidate, X).T @ candidate["W2"] + candidate["b2"]
                    return jnp.sum(jnp.argmax(scores, axis=1) == y, dtype=jnp.int32)

                # float32 hits even in mixed precision: the bfloat16 rows are upcast.
                train_correct = hits(apply_transform(transform, X_batch).astype(X_val.dtype),
                                     y_batch)
                val_correct = hits(X_val, y_val)
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

            # The predicate is shared by every config of a sweep, so under vmap
            # this stays a real branch and validation runs once per epoch.
            tracking, accs = jax.lax.cond(
                is_validated, record, skip,
                (state.best_params, state.best_val_correct, state.stale, state.stopped_at))
            return (State(params, opt_state, *tracking, ema), jnp.sum(params["W1"] ** 2)), \
                (loss,) + accs

        # W1 is stored (H, D) inside the loop (see hidden_t), (D, H) outside.
        state = transpose_w1(state)
        (state, _), outputs = jax.lax.scan(step, (state, jnp.sum(state.params["W1"] ** 2)),
                                           (batches, steps, validate))
        return transpose_w1(state), outputs

    return chunk


# Compiled programs by structure (and shapes), shared by train, the sweeps and the
# benchmark, which clears it to time compilation.
COMPILED: dict = {}


def compiled_chunk_fn(config: TrainConfig, vmapped: bool = False) -> Callable:
    """``make_chunk_fn(config)`` jitted (and vmapped over state and hp), cached by structure.

    The loop body reads only the structural fields of ``config``, so configs
    that share them share one compiled program.
    """
    key = (config.structure(), vmapped)
    if key not in COMPILED:
        fn = make_chunk_fn(config)
        if vmapped:
            fn = jax.vmap(fn, in_axes=(0, 0, 0) + (None,) * 8)
        COMPILED[key] = jax.jit(fn, donate_argnums=0)
    return COMPILED[key]


class TrainResult(NamedTuple):
    """What ``train`` returns: numpy params and the notebook's histories."""

    params: dict
    best_params: dict
    best_val_acc: float
    history: dict
    wall_s: float


def run_chunks(chunk_fn: Callable, state, hp, lrs, data: tuple, schedule: Schedule,
               chunk_size: int, progress: Callable | None, transform=None, hook=None):
    """Drive ``chunk_fn`` over the schedule, until the end or until every config stopped early.

    Works for one config (``chunk_fn`` outputs (S,)) and for a vmapped group
    (outputs (K, S)). ``progress(done, total, losses)`` is called after each
    chunk with that chunk's losses. ``hook`` (e.g. ``resume.LoopHook``) may
    ``restore(state, total)`` a ``resume.LoopProgress`` saved earlier, to start
    from, and gets ``after_chunk(progress)`` after every chunk but the last: the
    place to save progress or stop. Returns the final state, one history dict
    per config (``loss_history`` per step up to its early stop,
    ``train_acc_history`` and ``val_acc_history`` per epoch) and the best
    validation accuracies (K,).
    """
    total = len(schedule.batches)
    done, outputs = 0, []
    restored = None if hook is None else hook.restore(state, total)
    if restored is not None:
        # Placed where the fresh state's leaves are (device, sharding over configs).
        state = jax.tree.map(lambda fresh, saved: distributed.put(saved, fresh.sharding),
                             state, restored.state)
        done, outputs = restored.step, [list(restored.outputs)]
    # distributed.host reads arrays sharded over processes (a gather): in a
    # multi-process sweep every process reads every config's outputs.
    while done < total and not (done and np.all(distributed.host(state.stopped_at) <= done)):
        stop = min(done + chunk_size, total)
        state, out = chunk_fn(state, hp, lrs, *data, schedule.batches[done:stop],
                              np.arange(done, stop, dtype=np.int32),
                              schedule.validate[done:stop], transform)
        outputs.append([np.atleast_2d(distributed.host(o)) for o in out])
        done = stop
        if progress is not None:
            progress(done, total, outputs[-1][0][0])
        if hook is not None and done < total:
            outputs = [[np.concatenate(o, axis=-1) for o in zip(*outputs)]]
            hook.after_chunk(resume.LoopProgress(done, state, tuple(outputs[0])))
    losses, train_correct, val_correct = (np.concatenate(o, axis=-1) for o in zip(*outputs))
    batch_size, num_val = schedule.batches.shape[1], len(data[3])
    histories = []
    for k, end in enumerate(np.atleast_1d(distributed.host(state.stopped_at))):
        epochs = schedule.epoch_end[:end]
        histories.append({
            "loss_history": losses[k, :end].tolist(),
            "train_acc_history": (train_correct[k, :end][epochs] / batch_size).tolist(),
            "val_acc_history": (val_correct[k, :end][epochs] / num_val).tolist()})
    return state, histories, np.atleast_1d(distributed.host(state.best_val_correct)) / num_val


def device_array(a, dtype, device=None) -> jax.Array:
    """``a`` as a jax array of ``dtype`` on ``device`` (a device or sharding; default:
    JAX's default device).

    On CPU, JAX can use a 64-byte aligned numpy buffer in place, while its own
    host copy is slow (0.7-1.3 s for CIFAR-10's 600 MB training set, against
    0.16 s for numpy's copy). So ``a`` is aliased when it is aligned, and
    otherwise copied once by numpy. The caller must not write to ``a`` while
    the result is alive (JAX arrays are immutable).
    """
    target = device if device is not None else jax.config.jax_default_device
    if target is None:
        platform = jax.default_backend()
    elif isinstance(target, str):
        platform = target
    else:
        devices = target.device_set if hasattr(target, "device_set") else {target}
        platform = next(iter(devices)).platform
    if platform != "cpu":
        return jax.device_put(np.asarray(a, dtype), device)
    return jax.device_put(aligned_array(a, dtype), device, may_alias=True)


_to_bfloat16_bits = jax.jit(
    lambda X: jax.lax.bitcast_convert_type(X.astype(jnp.bfloat16), jnp.uint16))


def training_rows(X, config: TrainConfig, device=None) -> jax.Array:
    """The training rows X (N, D) on ``device`` (as ``device_array``) as the loop reads
    them: in ``config.dtype``, or for ``compute_dtype`` bfloat16 rounded to bfloat16
    and stored as their uint16 bit patterns (see ``gather_rows``).

    The bfloat16 copy is made once per run (per group in a sweep), by XLA on the
    device: it halves what every step's gather reads. (numpy's bfloat16 cast
    takes 2 s for CIFAR-10's 600 MB training set on one core; XLA's about 0.3 s.)
    Both round to nearest even.
    """
    rows = device_array(X, config.dtype, device)
    return _to_bfloat16_bits(rows) if config.compute_dtype == "bfloat16" else rows


def gather_rows(X: jax.Array, idx: jax.Array) -> jax.Array:
    """The minibatch X[idx]: (B, D) from X (N, D), as bfloat16 when X holds bfloat16 bit
    patterns (uint16, from ``training_rows``).

    XLA's CPU gather copies rows of 2-byte integers at memory speed but moves
    bfloat16 rows value by value: 12-15 ms for a batch of 200 CIFAR-10 rows
    against 0.3 ms as uint16 (on the shared 2-core machine), several times a
    whole float32 step.
    """
    if X.dtype == jnp.uint16:
        return jax.lax.bitcast_convert_type(X[idx], jnp.bfloat16)
    return X[idx]


def learning_rates(config: TrainConfig, hp: dict, schedule: Schedule) -> jax.Array:
    """Per-step learning rates (T,) from traced or concrete ``hp``."""
    steps = jnp.arange(len(schedule.epoch_end))
    return learning_rate_at(config, hp, steps, jnp.asarray(schedule.decays_before))


def check_data(X, y, X_val, y_val, num_classes: int | None = None,
               num_features: int | None = None) -> int:
    """Validate a training set and a validation set; return the number of classes."""
    X = check_features(X, "X_train", num_features)
    X_val = check_features(X_val, "X_val", X.shape[1])
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
          checkpoint: resume.Checkpoint | None = None) -> TrainResult:
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
    ``checkpoint`` saves progress between chunks, at most every
    ``checkpoint.every`` seconds, and stops with ``resume.Interrupted`` after a
    signal; with ``checkpoint.resume`` the run continues from the progress saved
    there (refused when the config, the data or ``chunk_size`` differ), with
    the same result as a run never interrupted.
    Returns the final and best-validation params (numpy), the best validation
    accuracy and the histories ``loss_history`` (per step), ``train_acc_history``
    and ``val_acc_history`` (per epoch), plus the wall time in seconds.
    """
    config.validate()
    num_classes = None if params is None else np.shape(params["W2"])[1]
    num_classes = check_data(X, y, X_val, y_val, num_classes)
    augments = bool(config.flip or config.translate)
    check_augmentable(augments, np.shape(X)[1])
    transform = check_transform(input_transform, np.shape(X)[1])
    X, X_val, transform = loop_inputs(transform, augments, X, X_val)
    input_size = np.shape(X)[1] if transform is None else np.shape(transform[1])[-1]
    if params is not None:
        check_params(params, input_size)
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
        data = (training_rows(X, config), jnp.asarray(y, jnp.int32),
                device_array(X_val, dtype), jnp.asarray(y_val, jnp.int32))
        lrs = learning_rates(config, hp, schedule)
        if transform is not None:
            transform = tuple(jnp.asarray(a, dtype) for a in transform)
        chunk_fn = compiled_chunk_fn(config)
        hook = None if checkpoint is None else checkpoint.loop_hook({
            "config": dataclasses.asdict(config), "chunk_size": chunk_size,
            "data": resume.fingerprint(X, y, X_val, y_val, *(transform or ()),
                                       schedule.batches, *params.values())})
        state, histories, best_val_acc = run_chunks(
            chunk_fn, init_state(config, hp, params, lrs), hp, lrs, data, schedule,
            chunk_size, progress, transform, hook)
        to_numpy = lambda tree: {k: np.asarray(v) for k, v in tree.items()}  # noqa: E731
        result = TrainResult(
            to_numpy(state.params), to_numpy(state.best_params), float(best_val_acc[0]),
            histories[0], time.perf_counter() - start_time)
    return result


def notebook_printer(print_fn: Callable = print, every: int = 100) -> Callable:
    """A ``progress`` hook that prints the notebook's ``iteration 100 / 1000: loss ...`` lines."""
    def progress(done, total, chunk_losses):
        first = done - len(chunk_losses)
        for it in range(first, done):
            if it % every == 0:
                print_fn("iteration %d / %d: loss %f" % (it, total, chunk_losses[it - first]))
    return progress
