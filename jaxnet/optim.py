"""The optimizer: learning-rate schedules, the optax update of each kind, and the
moving average of the weights. Hyperparameters (``hp``) may be traced arrays, so a
sweep of many learning rates shares one compiled program.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from .config import TrainConfig


def learning_rate_at(config: TrainConfig, hp: dict, step, decays_before):
    """Learning rate of step ``step`` (traced); ``hp`` holds the traced hyperparameters.

    ``"step"``: ``learning_rate * learning_rate_decay ** decays_before`` (the
    notebook's per-epoch decay); ``"cosine"``: linear warmup over
    ``warmup_iters``, then cosine decay to 0 at ``num_iters``.
    """
    if config.schedule == "step":
        return hp["learning_rate"] * hp["learning_rate_decay"] ** decays_before
    warmup = config.warmup_iters
    progress = jnp.clip((step - warmup) / max(config.num_iters - warmup, 1), 0.0, 1.0)
    cosine = hp["learning_rate"] * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    if warmup == 0:
        return cosine
    return jnp.where(step < warmup, hp["learning_rate"] * (step + 1) / warmup, cosine)


def learning_rates(config: TrainConfig, hp: dict, decays_before) -> jax.Array:
    """Per-step learning rates (T,) for ``decays_before`` (T,), the number of decays
    before each step (``loop.Schedule``)."""
    steps = jnp.arange(len(decays_before))
    return learning_rate_at(config, hp, steps, jnp.asarray(decays_before))


def make_optimizer(config: TrainConfig, hp: dict, lr_fn: Callable) -> optax.GradientTransformation:
    """The optax update for ``config.optimizer``; ``lr_fn(count)`` gives step count's rate."""
    if config.optimizer == "sgd":
        return optax.sgd(lr_fn)
    if config.optimizer in ("momentum", "nesterov"):
        return optax.sgd(lr_fn, momentum=hp["momentum"], nesterov=config.optimizer == "nesterov")
    if config.optimizer == "adam":
        return optax.adam(lr_fn, b1=hp["momentum"])
    return optax.adamw(lr_fn, b1=hp["momentum"], weight_decay=hp["weight_decay"])


def update_average(ema: dict, params: dict, decay) -> dict:
    """One step of the exponential moving average: ``ema + (1 - decay) * (params - ema)``."""
    return jax.tree.map(lambda e, p: e + (1 - decay) * (p - e), ema, params)


def averaged_params(ema: dict, decay, steps) -> dict:
    """The average of the params over ``steps`` steps, from ``ema`` started at zeros:
    divided by ``1 - decay**steps``, the weight it has gathered (as Adam debiases its
    moments), so every step's params count and the zeros do not."""
    weight = 1 - decay ** steps
    return jax.tree.map(lambda e: e / weight, ema)
