"""Each optimizer and each learning-rate schedule of solver.train, step by step against its
update rule written out in numpy (float64, given batches, the hand-written gradients)."""
import jax
import numpy as np
import pytest

import numpy_rules
from jaxnet import loop, optim, solver
from jaxnet.config import OPTIMIZERS, TrainConfig

N, D, H, C, B, T = 20, 6, 5, 3, 4, 12   # iterations_per_epoch = 5: decays after 0, 5 and 10


def problem(seed=0):
    """Tiny float64 data, initial params (large enough that every step moves them) and
    minibatches drawn once."""
    rng = np.random.RandomState(seed)
    params = {"W1": 0.5 * rng.randn(D, H), "b1": 0.1 * rng.randn(H),
              "W2": 0.5 * rng.randn(H, C), "b2": 0.1 * rng.randn(C)}
    X, y = rng.randn(N, D), rng.randint(0, C, N)
    return params, X, y, rng.randint(0, N, (T, B))


def expected_lrs(config):
    if config.schedule == "step":
        return numpy_rules.step_schedule(N, B, T, config.learning_rate, config.learning_rate_decay)
    return numpy_rules.cosine_schedule(T, config.learning_rate, config.warmup_iters)


SCHEDULES = {"step": dict(schedule="step", learning_rate_decay=0.7),
             "cosine": dict(schedule="cosine"),
             "cosine+warmup": dict(schedule="cosine", warmup_iters=4)}
LEARNING_RATES = {"sgd": 0.3, "momentum": 0.2, "nesterov": 0.2, "adam": 0.05, "adamw": 0.05}


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_training_follows_the_update_rule_step_by_step(optimizer, schedule):
    params, X, y, batches = problem()
    config = TrainConfig(hidden_size=H, num_iters=T, batch_size=B, reg=0.05, dtype="float64",
                         optimizer=optimizer, learning_rate=LEARNING_RATES[optimizer],
                         momentum=0.8, weight_decay=0.3, **SCHEDULES[schedule])
    result = solver.train(X, y, X, y, config, params=params, batches=batches)
    lrs = expected_lrs(config)
    expected, losses = numpy_rules.train(params, X, y, batches, lrs, reg=0.05,
                                         optimizer=optimizer, momentum=0.8, weight_decay=0.3)
    np.testing.assert_allclose(result.history["loss_history"], losses, rtol=1e-11, atol=0)
    for name in params:
        np.testing.assert_allclose(result.params[name], expected[name], rtol=1e-9, atol=1e-11,
                                   err_msg=name)
    # The rule must matter: plain SGD with the same learning rates ends elsewhere.
    if optimizer != "sgd":
        sgd, _ = numpy_rules.train(params, X, y, batches, lrs, reg=0.05, optimizer="sgd")
        assert np.max(np.abs(sgd["W1"] - expected["W1"])) > 1e-3


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learning_rates_are_the_schedule_written_out(schedule):
    config = TrainConfig(hidden_size=H, num_iters=T, batch_size=B, learning_rate=0.3,
                         **SCHEDULES[schedule])
    with jax.enable_x64(True):
        lrs = np.asarray(optim.learning_rates(config, config.hyperparams(),
                                              loop.make_schedule(N, B, T).decays_before))
    np.testing.assert_allclose(lrs, expected_lrs(config), rtol=1e-13, atol=1e-16)
    if schedule == "step":                       # decays after steps 0, 5 and 10
        np.testing.assert_allclose(lrs[[0, 1, 5, 6, 10, 11]],
                                   0.3 * 0.7 ** np.array([0, 1, 1, 2, 2, 3]), rtol=1e-13)
    elif schedule == "cosine+warmup":
        np.testing.assert_allclose(lrs[:5], [0.075, 0.15, 0.225, 0.3, 0.3], rtol=1e-13)


def test_weight_decay_and_momentum_values_reach_the_optimizer():
    """Two configs that differ only in a continuous value train differently, as numpy says."""
    params, X, y, batches = problem(seed=1)
    base = dict(hidden_size=H, num_iters=T, batch_size=B, reg=0.0, dtype="float64",
                learning_rate=0.05, schedule="cosine", optimizer="adamw")
    for changes in ({"weight_decay": 0.0}, {"weight_decay": 0.5},
                    {"momentum": 0.5, "weight_decay": 0.5}):
        config = TrainConfig(**base, **changes)
        result = solver.train(X, y, X, y, config, params=params, batches=batches)
        expected, _ = numpy_rules.train(params, X, y, batches, expected_lrs(config), reg=0.0,
                                        optimizer="adamw", momentum=config.momentum,
                                        weight_decay=config.weight_decay)
        for name in params:
            np.testing.assert_allclose(result.params[name], expected[name], rtol=1e-9,
                                       atol=1e-11, err_msg=f"{changes} {name}")
