"""The two-layer network as pure functions over a params pytree.

params = {"W1": (D, H), "b1": (H,), "W2": (H, C), "b2": (C,)}

    scores = relu(X @ W1 + b1) @ W2 + b2
    loss   = mean softmax cross-entropy + reg * (sum(W1**2) + sum(W2**2))

Everything here is a pure function of arrays: jit, grad and vmap apply as-is,
and the dtype of ``params`` (float32, or float64 inside ``jax.enable_x64``)
carries through.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Params = dict


def init_params(key: jax.Array, input_size: int, hidden_size: int, num_classes: int,
                std: float = 1e-4, dtype=jnp.float32) -> Params:
    """Weights ``std * N(0, 1)``, biases zero.

    Returns W1: (input_size, hidden_size), b1: (hidden_size,),
    W2: (hidden_size, num_classes), b2: (num_classes,).
    """
    k1, k2 = jax.random.split(key)
    return {
        "W1": std * jax.random.normal(k1, (input_size, hidden_size), dtype),
        "b1": jnp.zeros((hidden_size,), dtype),
        "W2": std * jax.random.normal(k2, (hidden_size, num_classes), dtype),
        "b2": jnp.zeros((num_classes,), dtype),
    }


def hidden(params: Params, X: jax.Array) -> jax.Array:
    """First layer and ReLU. X: (N, D) -> (N, H)."""
    return jax.nn.relu(X @ params["W1"] + params["b1"])


def scores(params: Params, X: jax.Array) -> jax.Array:
    """Class scores. X: (N, D) -> (N, C)."""
    return hidden(params, X) @ params["W2"] + params["b2"]


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy. logits: (N, C), y: (N,) ints -> scalar.

    log_softmax subtracts the row maximum, so large scores do not overflow.
    """
    log_probs = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))


def l2_penalty(params: Params, reg) -> jax.Array:
    """``reg * (sum(W1**2) + sum(W2**2))``: the notebook's convention (biases free)."""
    return reg * (jnp.sum(params["W1"] ** 2) + jnp.sum(params["W2"] ** 2))


def loss(params: Params, X: jax.Array, y: jax.Array, reg=0.0) -> jax.Array:
    """Data loss plus L2 penalty. X: (N, D), y: (N,) ints in [0, C) -> scalar."""
    return cross_entropy(scores(params, X), y) + l2_penalty(params, reg)


def predict(params: Params, X: jax.Array) -> jax.Array:
    """Predicted class indices. X: (N, D) -> (N,) ints."""
    return jnp.argmax(scores(params, X), axis=1)


loss_and_grad = jax.jit(jax.value_and_grad(loss))
"""``(params, X, y, reg) -> (loss, grads)``, grads shaped like params; compiled."""
