"""TwoLayerNet computes in the precision of the data it is given and keeps the params' dtype."""
import numpy as np
import pytest

from jaxnet import TwoLayerNet

CORRECT_LOSS = 1.30378789133  # the notebook's toy loss (reg 0.05), as in test_model.py


def problem(seed=3, N=90, D=12, H=8, C=4):
    """A float64 net and float64 data with learnable labels; tests cast them as they need."""
    rng = np.random.RandomState(seed)
    np.random.seed(seed)
    net = TwoLayerNet(D, H, C, std=1e-1)
    W = rng.randn(D, C)
    X, X_val = rng.randn(N, D), rng.randn(30, D)
    return net, X, (X @ W).argmax(axis=1), X_val, (X_val @ W).argmax(axis=1)


def with_params(net, dtype):
    other = TwoLayerNet(*net.params["W1"].shape, net.params["W2"].shape[1])
    other.params = {k: v.astype(dtype) for k, v in net.params.items()}
    return other


def train_kwargs():
    return dict(learning_rate=0.5, learning_rate_decay=0.95, reg=1e-3, num_iters=60,
                batch_size=20)


def test_float32_data_trains_float64_params_in_float32_and_keeps_their_dtype():
    net64, X, y, X_val, y_val = problem()
    net32 = with_params(net64, np.float32)
    X, X_val = X.astype(np.float32), X_val.astype(np.float32)
    np.random.seed(11)
    ours = net64.train(X, y, X_val, y_val, **train_kwargs())
    np.random.seed(11)
    theirs = net32.train(X, y, X_val, y_val, **train_kwargs())
    # Same minibatches, the same float32 computation: the very same numbers.
    assert ours["loss_history"] == theirs["loss_history"]
    assert ours["val_acc_history"] == theirs["val_acc_history"]
    for name in net64.params:
        assert type(net64.params[name]) is np.ndarray
        assert net64.params[name].dtype == np.float64, name
        assert net32.params[name].dtype == np.float32, name
        np.testing.assert_array_equal(net64.params[name], net32.params[name].astype(np.float64))
    assert np.mean(ours["loss_history"][-10:]) < 0.5 * ours["loss_history"][0]  # it learned


def test_float64_data_trains_float32_params_in_float64_and_keeps_float32():
    net64, X, y, X_val, y_val = problem()
    net32 = with_params(net64, np.float32)
    rounded = with_params(net32, np.float64)  # the float32 values, held as float64
    np.random.seed(5)
    ours = net32.train(X, y, X_val, y_val, **train_kwargs())
    np.random.seed(5)
    theirs = rounded.train(X, y, X_val, y_val, **train_kwargs())
    np.testing.assert_allclose(ours["loss_history"], theirs["loss_history"], rtol=0, atol=1e-12)
    for name in net32.params:
        assert net32.params[name].dtype == np.float32, name
        np.testing.assert_array_equal(net32.params[name], rounded.params[name].astype(np.float32))


def test_mixed_data_precision_follows_the_float64_array():
    """float32 X with float64 X_val computes in float64: nothing the user gave is rounded."""
    net64, X, y, X_val, y_val = problem()
    a, b = with_params(net64, np.float64), with_params(net64, np.float64)
    np.random.seed(2)
    mixed = a.train(X.astype(np.float32), y, X_val, y_val, **train_kwargs())
    np.random.seed(2)
    exact = b.train(X.astype(np.float32).astype(np.float64), y, X_val, y_val, **train_kwargs())
    np.testing.assert_allclose(mixed["loss_history"], exact["loss_history"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("params_dtype", [np.float32, np.float64])
def test_loss_and_predict_follow_the_data_precision(params_dtype):
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1)
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    y = np.array([0, 1, 2, 2, 1])
    net = with_params(net, params_dtype)
    before = {k: v.copy() for k, v in net.params.items()}

    scores32 = net.loss(X.astype(np.float32))
    value32, grads32 = net.loss(X.astype(np.float32), y, reg=0.05)
    assert scores32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads32.values())
    assert abs(value32 - CORRECT_LOSS) < 1e-5

    scores64 = net.loss(X)
    value64, grads64 = net.loss(X, y, reg=0.05)
    assert scores64.dtype == np.float64
    assert all(g.dtype == np.float64 for g in grads64.values())
    if params_dtype == np.float64:
        assert abs(value64 - CORRECT_LOSS) < 1e-12
    np.testing.assert_array_equal(net.predict(X.astype(np.float32)), scores32.argmax(axis=1))
    np.testing.assert_array_equal(net.predict(X), scores64.argmax(axis=1))
    for name, value in net.params.items():  # loss and predict never touch the params
        assert value.dtype == params_dtype
        np.testing.assert_array_equal(value, before[name])
