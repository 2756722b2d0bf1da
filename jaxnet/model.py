"""The two-layer network as pure functions over a params pytree: the only place its
forward pass and loss are written.

params = {"W1": (D, H), "b1": (H,), "W2": (H, C), "b2": (C,)}   (``param_shapes``)

    scores = relu(X @ W1 + b1) @ W2 + b2
    loss   = mean softmax cross-entropy + reg * (sum(W1**2) + sum(W2**2))

Everything here is a pure function of arrays: jit, grad and vmap apply as-is,
and the dtype of ``params`` (float32, or float64 inside ``jax.enable_x64``)
carries through. The training loop uses the same functions with options:

- ``w1_transposed``: W1 is stored (H, D), the layout in which XLA's CPU matrix
  kernels run the first layer about twice as fast (see ``hidden``);
- ``compute_dtype="bfloat16"``: the first layer's products on bfloat16 operands
  with float32 accumulation (``kernels.bfloat16_product``);
- ``dropout``, ``label_smoothing`` and ``mix`` (mixup's labels);
- ``w1_sumsq``: sum(W1**2) carried from the previous step (see ``l2_penalty``).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .kernels import CONTRACT_D, bfloat16_product

Params = dict
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def param_shapes(input_size: int, hidden_size: int, num_classes: int) -> dict:
    """Each parameter's shape, by name: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,)."""
    return {"W1": (input_size, hidden_size), "b1": (hidden_size,),
            "W2": (hidden_size, num_classes), "b2": (num_classes,)}


def param_count(input_size: int, hidden_size: int, num_classes: int) -> int:
    """The number of scalars in the params."""
    return sum(math.prod(s) for s in param_shapes(input_size, hidden_size, num_classes).values())


def init_params(key: jax.Array, input_size: int, hidden_size: int, num_classes: int,
                std: float = 1e-4, dtype=jnp.float32) -> Params:
    """Weights ``std * N(0, 1)``, biases zero; shapes as ``param_shapes``."""
    shapes = param_shapes(input_size, hidden_size, num_classes)
    k1, k2 = jax.random.split(key)
    return {
        "W1": std * jax.random.normal(k1, shapes["W1"], dtype),
        "b1": jnp.zeros(shapes["b1"], dtype),
        "W2": std * jax.random.normal(k2, shapes["W2"], dtype),
        "b2": jnp.zeros(shapes["b2"], dtype),
    }


def hidden(params: Params, X: jax.Array, w1_transposed: bool = False,
           compute_dtype: str = "float32") -> jax.Array:
    """First layer and ReLU. X: (N, D) -> (N, H).

    With ``w1_transposed`` (W1 stored (H, D)) the product is computed as
    ``W1 . X^T`` (H, N), and its gradient as ``dH^T @ X``: XLA's CPU kernels run
    these about twice as fast per training step on 2 cores as ``X @ W1`` with
    ``X^T @ dH`` (scripts/bench.py). Only in that layout does
    ``compute_dtype="bfloat16"`` apply.
    """
    if not w1_transposed:
        return jax.nn.relu(X @ params["W1"] + params["b1"])
    if compute_dtype == "bfloat16":
        pre = bfloat16_product(params["W1"], X)
    else:
        pre = jax.lax.dot_general(params["W1"], X, CONTRACT_D)
    return jax.nn.relu(pre + params["b1"][:, None]).T


def scores(params: Params, X: jax.Array, w1_transposed: bool = False,
           compute_dtype: str = "float32", dropout: tuple | None = None) -> jax.Array:
    """Class scores. X: (N, D) -> (N, C).

    ``dropout``: None, or (key, rate) for inverted dropout on the hidden layer
    (each unit kept with probability 1 - rate and scaled by 1 / (1 - rate)).
    """
    h = hidden(params, X, w1_transposed, compute_dtype)
    if dropout is not None:
        key, rate = dropout
        keep = 1.0 - rate
        h = jnp.where(jax.random.bernoulli(key, keep, h.shape), h / keep, 0.0)
    return h @ params["W2"] + params["b2"]


def cross_entropy(logits: jax.Array, y: jax.Array, label_smoothing=None) -> jax.Array:
    """Mean softmax cross-entropy. logits: (N, C), y: (N,) ints -> scalar.

    log_softmax subtracts the row maximum, so large scores do not overflow.
    ``label_smoothing`` s moves s of each target's probability onto the uniform
    distribution: ``(1 - s) * CE - s * mean(log_softmax)``.
    """
    log_probs = jax.nn.log_softmax(logits, axis=1)
    ce = -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))
    if label_smoothing is None:
        return ce
    return (1 - label_smoothing) * ce - label_smoothing * jnp.mean(log_probs)


def data_loss(logits: jax.Array, y: jax.Array, label_smoothing=None,
              mix: tuple | None = None) -> jax.Array:
    """``cross_entropy``, or with mixup's ``mix = (lam, partners)`` (the rows were blended
    ``lam * X + (1 - lam) * X[partners]``) ``lam * CE(y) + (1 - lam) * CE(y[partners])``."""
    if mix is None:
        return cross_entropy(logits, y, label_smoothing)
    lam, partners = mix
    return (lam * cross_entropy(logits, y, label_smoothing)
            + (1 - lam) * cross_entropy(logits, y[partners], label_smoothing))


@jax.custom_vjp
def _carried_sumsq(W: jax.Array, sumsq: jax.Array) -> jax.Array:
    return sumsq


def _carried_sumsq_fwd(W, sumsq):
    return sumsq, W


def _carried_sumsq_bwd(W, g):
    return 2 * g * W, None


_carried_sumsq.defvjp(_carried_sumsq_fwd, _carried_sumsq_bwd)


def l2_penalty(params: Params, reg, w1_sumsq: jax.Array | None = None) -> jax.Array:
    """``reg * (sum(W1**2) + sum(W2**2))``: the notebook's convention (biases free).

    ``w1_sumsq``, sum(W1**2) already known (the training loop computes it right
    after each update), is used as the value of that sum, with its true gradient
    ``2 * W1``: reading W1 again in the step's forward pass would make XLA copy W1
    every step, since the in-place update could not be ordered after the read.
    """
    w1 = jnp.sum(params["W1"] ** 2) if w1_sumsq is None else _carried_sumsq(params["W1"],
                                                                               w1_sumsq)
    return reg * (w1 + jnp.sum(params["W2"] ** 2))


def loss(params: Params, X: jax.Array, y: jax.Array, reg=0.0, *, w1_transposed: bool = False,
         compute_dtype: str = "float32", dropout: tuple | None = None, label_smoothing=None,
         mix: tuple | None = None, w1_sumsq: jax.Array | None = None) -> jax.Array:
    """Data loss plus L2 penalty. X: (N, D), y: (N,) ints in [0, C) -> scalar.

    The keyword options are the training step's (see the module docstring); with
    none of them this is the notebook's loss.
    """
    logits = scores(params, X, w1_transposed, compute_dtype, dropout)
    return data_loss(logits, y, label_smoothing, mix) + l2_penalty(params, reg, w1_sumsq)


def predict(params: Params, X: jax.Array, w1_transposed: bool = False) -> jax.Array:
    """Predicted class indices. X: (N, D) -> (N,) ints."""
    return jnp.argmax(scores(params, X, w1_transposed), axis=1)


loss_and_grad = jax.jit(jax.value_and_grad(loss))
"""``(params, X, y, reg) -> (loss, grads)``, grads shaped like params; compiled."""
