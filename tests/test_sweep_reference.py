"""Sweeps of configs that learn, each config checked against numpy directly (float64):
the notebook's SGD loop of jaxnet.reference, and the other optimizers' update rules."""
import jax
import numpy as np
import pytest

import numpy_rules
from jaxnet import model, reference, sweep
from jaxnet.config import TrainConfig

N, D, H, C, B, T = 100, 20, 8, 4, 20, 60   # iterations_per_epoch = 5


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    centers = 2 * rng.randn(C, D)
    y, y_val = rng.randint(0, C, N), rng.randint(0, C, 50)
    return (centers[y] + rng.randn(N, D), y, centers[y_val] + rng.randn(50, D), y_val)


def initial_params(config):
    """The params a sweep starts config from: init_params(key(seed), ...) in float64."""
    with jax.enable_x64(True):
        params = model.init_params(jax.random.key(config.seed), D, config.hidden_size, C,
                                   config.std, np.float64)
    return {k: np.array(v) for k, v in params.items()}


def test_sgd_sweep_equals_the_numpy_reference_loop(data):
    base = TrainConfig(hidden_size=H, num_iters=T, batch_size=B, std=0.1, dtype="float64",
                       learning_rate_decay=0.9, seed=3)
    configs = sweep.grid(base, learning_rate=[0.05, 0.2], reg=[0.0, 0.01])
    result = sweep.run_sweep(configs, *data, keep_params=True)
    for r in result.results:
        c = r.config
        params = initial_params(c)
        expected = reference.train(params, *data, learning_rate=c.learning_rate,
                                   learning_rate_decay=c.learning_rate_decay, reg=c.reg,
                                   num_iters=T, batch_size=B, rng=np.random.RandomState(c.seed))
        losses = np.array(r.history["loss_history"])
        assert losses[-10:].mean() < 0.6 * losses[0], (c, losses[[0, -1]])   # it learns
        np.testing.assert_allclose(losses, expected["loss_history"], rtol=0, atol=1e-10)
        for name in params:
            np.testing.assert_allclose(r.params[name], params[name], rtol=0, atol=1e-9,
                                       err_msg=f"{c.learning_rate} {c.reg} {name}")
        assert r.history["val_acc_history"] == [float(a) for a in expected["val_acc_history"]]
        assert r.history["train_acc_history"] == [float(a)
                                                  for a in expected["train_acc_history"]]
    best = max(range(len(configs)), key=lambda i: result.results[i].val_acc)
    assert result.best_index == best and result.results[best].val_acc >= 0.8


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam", "adamw"])
def test_sweep_optimizers_follow_their_update_rules(data, optimizer):
    lr = [0.02, 0.05] if optimizer.startswith("adam") else [0.05, 0.1]
    base = TrainConfig(hidden_size=H, num_iters=T, batch_size=B, std=0.1, dtype="float64",
                       optimizer=optimizer, schedule="cosine", warmup_iters=5, reg=1e-3,
                       weight_decay=0.1, seed=1)
    configs = sweep.grid(base, learning_rate=lr, momentum=[0.5, 0.9])
    result = sweep.run_sweep(configs, *data, keep_params=True)
    batches = np.random.RandomState(base.seed).randint(0, N, (T, B))
    for r in result.results:
        c = r.config
        expected, losses = numpy_rules.train(
            initial_params(c), data[0], data[1], batches,
            numpy_rules.cosine_schedule(T, c.learning_rate, c.warmup_iters), reg=c.reg,
            optimizer=optimizer, momentum=c.momentum, weight_decay=c.weight_decay)
        assert losses[-10:].mean() < 0.6 * losses[0], (c, losses[[0, -1]])
        np.testing.assert_allclose(r.history["loss_history"], losses, rtol=1e-10, atol=0)
        for name in expected:
            np.testing.assert_allclose(r.params[name], expected[name], rtol=1e-8, atol=1e-10,
                                       err_msg=f"{c.learning_rate} {c.momentum} {name}")
