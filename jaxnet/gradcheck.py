"""Numeric gradients and the three-way gradient comparison.

Autodiff (``jaxnet.model``), the hand-written backward pass
(``jaxnet.reference``) and centered finite differences are computed
independently; agreement between all three is the evidence that each is right.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from . import reference
from .model import PARAM_NAMES
from .validate import check_batch

# Significant bits of the floating types too coarse for a gradient check.
HALF_PRECISION = {"bfloat16": 8, "float16": 11}


def check_precision(name: str, a, h: float) -> None:
    """Refuse a bfloat16 or float16 ``a``: its rounding (relative 2**-8 for bfloat16)
    dwarfs the centered differences of step ``h`` that the check compares against."""
    dtype = getattr(a, "dtype", None)
    bits = HALF_PRECISION.get(getattr(dtype, "name", None))
    if bits:
        raise ValueError(f"gradient checks run in float64, but {name} is {dtype.name} "
                         f"({bits} significant bits, too few for differences with h={h:g}); "
                         f"pass float32 or float64 values")


def rel_error(x, y) -> float:
    """The notebook's relative error: ``max |x - y| / max(1e-8, |x| + |y|)``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _numerical_gradient_at(f: Callable, x: np.ndarray, indices: Iterable, h: float) -> np.ndarray:
    """Centered differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` at each index i."""
    x = np.array(x, dtype=np.float64)  # a private copy: f sees a fresh array each call
    values = []
    for ix in indices:
        old = x[ix]
        x[ix] = old + h
        f_plus = float(f(x.copy()))
        x[ix] = old - h
        f_minus = float(f(x.copy()))
        x[ix] = old
        values.append((f_plus - f_minus) / (2 * h))
    return np.array(values)


def eval_numerical_gradient(f: Callable, x, h: float = 1e-5) -> np.ndarray:
    """Numeric gradient of scalar ``f`` at ``x`` by centered differences; shape of x.

    ``f`` takes the array (JAX arrays cannot be changed in place, so each
    evaluation gets its own perturbed float64 copy).
    """
    check_precision("x", x, h)
    x = np.asarray(x)
    grad = _numerical_gradient_at(f, x, np.ndindex(x.shape), h)
    return grad.reshape(x.shape)


def compare_gradients(params: dict, X, y, reg: float = 0.0, h: float = 1e-5,
                      num_checks: int | None = None, seed: int = 0) -> dict:
    """Max relative errors per parameter between autodiff, hand-written and numeric grads.

    Runs in float64. params: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,); X: (N, D);
    y: (N,). ``num_checks`` limits the numeric gradient to that many random
    entries per parameter (all entries when None), as the notebook's sparse
    check does for large layers.

    Returns ``{name: {"autodiff_vs_handwritten", "autodiff_vs_numeric",
    "handwritten_vs_numeric"}}``.
    """
    import jax

    from . import model

    for name in PARAM_NAMES:
        check_precision(f"params[{name!r}]", params.get(name), h)
    check_precision("X", X, h)
    X, y, reg = check_batch(params, X, y, reg)
    params64 = {k: np.asarray(params[k], np.float64) for k in PARAM_NAMES}
    X64 = np.asarray(X, np.float64)
    rng = np.random.RandomState(seed)
    loss_fn = jax.jit(model.loss)
    with jax.enable_x64(True):
        _, auto = model.loss_and_grad(params64, X64, y, reg)
        auto = {k: np.asarray(v) for k, v in auto.items()}
        _, hand = reference.loss_and_grads(params64, X64, y, reg)
        report = {}
        for name in PARAM_NAMES:
            def f(value, name=name):
                return loss_fn({**params64, name: value}, X64, y, reg)

            shape = params64[name].shape
            all_indices = list(np.ndindex(shape))
            if num_checks is not None and num_checks < len(all_indices):
                picks = rng.choice(len(all_indices), num_checks, replace=False)
                all_indices = [all_indices[i] for i in picks]
            numeric = _numerical_gradient_at(f, params64[name], all_indices, h)
            at = tuple(np.array(all_indices).T)
            report[name] = {
                "autodiff_vs_handwritten": rel_error(auto[name], hand[name]),
                "autodiff_vs_numeric": rel_error(auto[name][at], numeric),
                "handwritten_vs_numeric": rel_error(hand[name][at], numeric),
            }
    return report
