"""Training written out in numpy, rule by rule, for the tests to hold the compiled loop to.

Gradients come from ``jaxnet.reference`` (the hand-written backward pass);
the optimizers and learning-rate schedules are the textbook formulas, written
here without optax, so a wrong update in jaxnet cannot also be wrong here.
"""
from __future__ import annotations

import numpy as np

from jaxnet import reference

ADAM_B2, ADAM_EPS = 0.999, 1e-8   # optax's defaults, which jaxnet keeps


def step_schedule(num_train: int, batch_size: int, num_iters: int, lr: float,
                  decay: float) -> np.ndarray:
    """The notebook's per-epoch decay: the lr used at each step, decayed after every step
    ``it`` with ``it % max(num_train / batch_size, 1) == 0``."""
    iterations_per_epoch = max(num_train / batch_size, 1)
    used = []
    for it in range(num_iters):
        used.append(lr)
        if it % iterations_per_epoch == 0:
            lr *= decay
    return np.array(used)


def cosine_schedule(num_iters: int, lr: float, warmup: int = 0) -> np.ndarray:
    """Linear warmup to ``lr`` over ``warmup`` steps, then cosine decay to 0 at ``num_iters``."""
    used = []
    for t in range(num_iters):
        if t < warmup:
            used.append(lr * (t + 1) / warmup)
        else:
            progress = min(max((t - warmup) / max(num_iters - warmup, 1), 0.0), 1.0)
            used.append(lr * 0.5 * (1 + np.cos(np.pi * progress)))
    return np.array(used)


def train(params: dict, X, y, batches, lrs, reg: float, optimizer: str,
          momentum: float = 0.9, weight_decay: float = 0.0, trajectory: list | None = None):
    """Run ``len(batches)`` steps of ``optimizer`` from ``params`` (not modified).

    batches: (T, B) row indices; lrs: (T,) learning rates. Returns the final
    params and the loss at each step (computed before that step's update).
    ``trajectory``, a list, receives a copy of the params after every step.
    """
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    slots = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in p.items()}
    losses = []
    for t, (idx, lr) in enumerate(zip(batches, lrs)):
        loss, grads = reference.loss_and_grads(p, X[idx], y[idx], reg)
        losses.append(loss)
        for name, g in grads.items():
            m, v = slots[name]
            if optimizer == "sgd":
                update = g
            elif optimizer in ("momentum", "nesterov"):
                m = g + momentum * m                      # the velocity (optax's trace)
                update = g + momentum * m if optimizer == "nesterov" else m
            else:                                         # adam, adamw (b1 = momentum)
                m = momentum * m + (1 - momentum) * g
                v = ADAM_B2 * v + (1 - ADAM_B2) * g * g
                m_hat, v_hat = m / (1 - momentum ** (t + 1)), v / (1 - ADAM_B2 ** (t + 1))
                update = m_hat / (np.sqrt(v_hat) + ADAM_EPS)
                if optimizer == "adamw":                  # decoupled, on every entry
                    update = update + weight_decay * p[name]
            slots[name] = (m, v)
            p[name] = p[name] - lr * update
        if trajectory is not None:
            trajectory.append({k: v.copy() for k, v in p.items()})
    return p, np.array(losses)


def moving_averages(trajectory: list, decay: float) -> list:
    """The exponential moving average of the params after each step, started at zeros and
    divided by the weight it has gathered, ``1 - decay**(t + 1)``."""
    ema = {k: np.zeros_like(v) for k, v in trajectory[0].items()}
    averages = []
    for t, p in enumerate(trajectory):
        ema = {k: decay * ema[k] + (1 - decay) * p[k] for k in p}
        averages.append({k: v / (1 - decay ** (t + 1)) for k, v in ema.items()})
    return averages


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def smoothed_cross_entropy(scores: np.ndarray, y: np.ndarray, smoothing: float) -> float:
    """Mean cross-entropy against targets (1 - smoothing) * one_hot(y) + smoothing / C."""
    log_probs = log_softmax(scores)
    C = scores.shape[1]
    targets = np.full(scores.shape, smoothing / C)
    targets[np.arange(len(y)), y] += 1 - smoothing
    return float(-np.mean(np.sum(targets * log_probs, axis=1)))
