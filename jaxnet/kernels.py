"""The products and copies that set the training loop's speed: a bfloat16 matrix
product with float32 accumulation, the minibatch gather, and device arrays that
alias host memory.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .arrays import aligned_array

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


def training_rows(X, dtype: str, compute_dtype: str, device=None) -> jax.Array:
    """The training rows X (N, D) on ``device`` (as ``device_array``) as the loop reads
    them: in ``dtype``, or for ``compute_dtype`` bfloat16 rounded to bfloat16 and
    stored as their uint16 bit patterns (see ``gather_rows``).

    The bfloat16 copy is made once per run (per group in a sweep), by XLA on the
    device: it halves what every step's gather reads. (numpy's bfloat16 cast
    takes 2 s for CIFAR-10's 600 MB training set on one core; XLA's about 0.3 s.)
    Both round to nearest even.
    """
    rows = device_array(X, dtype, device)
    return _to_bfloat16_bits(rows) if compute_dtype == "bfloat16" else rows
