"""``TwoLayerNet``: the notebook's stateful API as a thin wrapper over the pure functions.

    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1)        # the notebook's toy weights
    loss, grads = net.loss(X, y, reg=0.05)       # autodiff, float64 for float64 inputs
    stats = net.train(X, y, X_val, y_val, ...)   # the notebook's SGD loop, compiled

``params`` holds numpy arrays, as in the notebook; every call validates its
inputs and runs the compiled JAX code in the precision of the data passed in:
float64 data computes in float64 (inside ``jax.enable_x64``), any other data in
float32, whatever dtype ``params`` holds. The notebook draws float64 weights;
with float32 data (``get_CIFAR10_data``'s default) they train in float32, at the
speed of ``solver.train``, and are stored back as float64.
"""
from __future__ import annotations

import jax
import numpy as np

from . import model, solver
from .config import TrainConfig
from .loop import sample_batches
from .validate import check_batch

_scores = jax.jit(model.scores)
_predict = jax.jit(model.predict)


def _precision(*data) -> type:
    """The compute dtype for these data arrays: float64 when any is float64, else float32.

    Only the data decides: float64 params with float32 data would otherwise turn
    the whole loop into float64, 2-3x slower on a CPU, for no gain in a run whose
    inputs hold float32 values.
    """
    return np.float64 if any(np.asarray(a).dtype == np.float64 for a in data) else np.float32


class TwoLayerNet:
    """A two-layer fully connected net: affine - ReLU - affine - softmax.

    params: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,), numpy arrays (float64 as
    drawn here; any float dtype the user assigns is kept). ``loss``, ``train``
    and ``predict`` compute in the precision of their data, not of ``params``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, std: float = 1e-4):
        # Drawn from numpy's global RNG in the notebook's order (W1, then W2), so
        # np.random.seed(0) reproduces the notebook's weights exactly.
        self.params = {
            "W1": std * np.random.randn(input_size, hidden_size),
            "b1": np.zeros(hidden_size),
            "W2": std * np.random.randn(hidden_size, output_size),
            "b2": np.zeros(output_size),
        }

    def _run(self, fn, X, *args):
        """Call a compiled function on (params, X, *args) in X's precision."""
        dtype = _precision(X)
        params = {k: np.asarray(v, dtype) for k, v in self.params.items()}
        with jax.enable_x64(dtype == np.float64):
            return jax.tree.map(np.asarray, fn(params, np.asarray(X, dtype), *args))

    def loss(self, X, y=None, reg: float = 0.0):
        """Scores (N, C) when ``y`` is None, else ``(loss, grads)`` as numpy values.

        X: (N, D); y: (N,) ints in [0, C); grads shaped like ``params``. Scores
        and grads are float64 for float64 X and float32 otherwise, whatever
        dtype ``params`` holds.
        """
        X, y, reg = check_batch(self.params, X, y, reg)
        if y is None:
            return self._run(_scores, X)
        loss, grads = self._run(model.loss_and_grad, X, y, reg)
        return float(loss), grads

    def train(self, X, y, X_val, y_val, learning_rate: float = 1e-3,
              learning_rate_decay: float = 0.95, reg: float = 5e-6, num_iters: int = 100,
              batch_size: int = 200, verbose: bool = False) -> dict:
        """The notebook's SGD loop, compiled; updates ``params`` and returns its histories.

        X: (N, D), y: (N,); X_val: (M, D), y_val: (M,). The loop runs in float64
        when X or X_val is float64 and in float32 otherwise (the params are
        cast to that precision for the run and back to their own dtypes after
        it, so ``params`` keeps the dtype it had). Minibatches are drawn from
        numpy's global RNG in the notebook's order, so with float64 data a
        seeded run replays the numpy reference loop. Returns ``loss_history``
        (per iteration), ``train_acc_history`` and ``val_acc_history`` (per epoch).
        """
        dtype = _precision(X, X_val)
        config = TrainConfig(
            hidden_size=self.params["W1"].shape[1], num_iters=num_iters, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_decay=learning_rate_decay, reg=reg,
            dtype=np.dtype(dtype).name).validate()
        batches = sample_batches(len(X), batch_size, num_iters)
        result = solver.train(X, y, X_val, y_val, config, params=self.params, batches=batches,
                              progress=solver.notebook_printer() if verbose else None)
        self.params = {k: v.astype(np.asarray(self.params[k]).dtype, copy=False)
                       for k, v in result.params.items()}
        return result.history

    def predict(self, X) -> np.ndarray:
        """Predicted class indices, computed in X's precision. X: (N, D) -> (N,)."""
        X, _, _ = check_batch(self.params, X)
        return self._run(_predict, X)

