"""The two-layer network in plain numpy, with the backward pass written by hand.

This is the independent check of autodiff: it shares no code with
``jaxnet.model`` and imports no JAX. It is also the notebook's training loop,
used to test that jaxnet replays it step for step and to benchmark against it.
"""
from __future__ import annotations

import numpy as np


def loss_and_grads(params: dict, X: np.ndarray, y: np.ndarray, reg: float = 0.0):
    """Loss and gradients of the two-layer net, computed in the dtype of params.

    params: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,); X: (N, D); y: (N,) ints.
    Returns ``(loss, grads)`` with grads shaped like params.
    """
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    N = X.shape[0]

    # Forward.
    h_pre = X @ W1 + b1                      # (N, H)
    h = np.maximum(h_pre, 0)                 # (N, H)
    s = h @ W2 + b2                          # (N, C)
    shifted = s - s.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(exp.sum(axis=1, keepdims=True))
    data_loss = -log_probs[np.arange(N), y].mean()
    loss = data_loss + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))

    # Backward: d(loss)/d(scores) for mean softmax cross-entropy is (probs - onehot) / N.
    ds = probs.copy()
    ds[np.arange(N), y] -= 1
    ds /= N
    dW2 = h.T @ ds + 2 * reg * W2
    db2 = ds.sum(axis=0)
    dh = ds @ W2.T
    dh[h_pre <= 0] = 0                       # ReLU passes gradient only where active
    dW1 = X.T @ dh + 2 * reg * W1
    db1 = dh.sum(axis=0)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def predict(params: dict, X: np.ndarray) -> np.ndarray:
    """Predicted class indices. X: (N, D) -> (N,)."""
    h = np.maximum(X @ params["W1"] + params["b1"], 0)
    return np.argmax(h @ params["W2"] + params["b2"], axis=1)


def train(params: dict, X, y, X_val, y_val, learning_rate=1e-3, learning_rate_decay=0.95,
          reg=5e-6, num_iters=100, batch_size=200, rng=np.random) -> dict:
    """The notebook's ``TwoLayerNet.train``: SGD on minibatches drawn with replacement.

    Updates ``params`` in place. ``rng`` supplies ``choice`` (numpy's global
    RNG by default, as in the notebook). Returns ``loss_history`` (per
    iteration), ``train_acc_history`` and ``val_acc_history`` (per epoch).
    """
    num_train = X.shape[0]
    iterations_per_epoch = max(num_train / batch_size, 1)
    loss_history, train_acc_history, val_acc_history = [], [], []
    for it in range(num_iters):
        idx = rng.choice(num_train, batch_size)
        X_batch, y_batch = X[idx], y[idx]
        loss, grads = loss_and_grads(params, X_batch, y_batch, reg)
        loss_history.append(loss)
        for name in params:
            params[name] -= learning_rate * grads[name]
        if it % iterations_per_epoch == 0:
            train_acc_history.append((predict(params, X_batch) == y_batch).mean())
            val_acc_history.append((predict(params, X_val) == y_val).mean())
            learning_rate *= learning_rate_decay
    return {"loss_history": loss_history, "train_acc_history": train_acc_history,
            "val_acc_history": val_acc_history}
