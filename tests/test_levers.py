"""Mixup, label smoothing and the moving average of the weights, each held to its formula
written out in numpy (float64), and each kept exact in sweeps and across resumes."""
import dataclasses

import jax
import numpy as np
import pytest

import numpy_rules
from jaxnet import augment, loop, reference, solver, sweep
from jaxnet.config import TrainConfig

N, D, H, C, B, T = 20, 6, 5, 3, 4, 12   # validated after steps 0, 5, 10 and 11


def problem(seed=0):
    """Tiny float64 data, initial params and minibatches drawn once."""
    rng = np.random.RandomState(seed)
    params = {"W1": 0.5 * rng.randn(D, H), "b1": 0.1 * rng.randn(H),
              "W2": 0.5 * rng.randn(H, C), "b2": 0.1 * rng.randn(C)}
    X, y = rng.randn(N, D), rng.randint(0, C, N)
    return params, X, y, rng.randint(0, N, (T, B))


def scores(params, X):
    return np.maximum(X @ params["W1"] + params["b1"], 0) @ params["W2"] + params["b2"]


def base_config(**changes) -> TrainConfig:
    return TrainConfig(**{**dict(hidden_size=H, num_iters=T, batch_size=B, reg=0.0,
                                 dtype="float64", learning_rate=0.3, learning_rate_decay=0.7),
                          **changes})


def first_step_key(config: TrainConfig) -> jax.Array:
    """The key of step 0 of the training loop, written out (jaxnet.step.step_key)."""
    return jax.random.fold_in(jax.random.key(config.seed), 0)


def test_label_smoothing_is_the_loss_against_smoothed_targets():
    params, X, y, batches = problem()
    for smoothing in (0.0, 0.2):
        config = base_config(label_smoothing=smoothing)
        result = solver.train(X, y, X, y, config, params=params, batches=batches)
        expected = numpy_rules.smoothed_cross_entropy(scores(params, X[batches[0]]),
                                                      y[batches[0]], smoothing)
        assert result.history["loss_history"][0] == pytest.approx(expected, rel=1e-12)
    plain = numpy_rules.smoothed_cross_entropy(scores(params, X[batches[0]]), y[batches[0]], 0)
    assert abs(expected - plain) > 1e-2   # smoothing changes the loss


def test_label_smoothing_gradient_moves_towards_uniform_targets():
    """One SGD step with smoothing equals numpy's step on the smoothed loss (its gradient
    by central differences), and differs from the step without smoothing."""
    params, X, y, batches = problem(seed=1)
    config = base_config(num_iters=1, label_smoothing=0.3)
    result = solver.train(X, y, X, y, config, params=params, batches=batches[:1])
    Xb, yb = X[batches[0]], y[batches[0]]
    for name, value in params.items():
        grad = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            def loss_at(delta):
                moved = {**params, name: value.copy()}
                moved[name][i] += delta
                return numpy_rules.smoothed_cross_entropy(scores(moved, Xb), yb, 0.3)
            grad[i] = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6
        np.testing.assert_allclose(result.params[name], value - 0.3 * grad, atol=1e-8,
                                   err_msg=name)
    plain = solver.train(X, y, X, y, dataclasses.replace(config, label_smoothing=0.0),
                         params=params, batches=batches[:1])
    assert np.max(np.abs(plain.params["W2"] - result.params["W2"])) > 1e-3


def test_mixup_blends_rows_and_losses_with_one_beta_weight_per_step():
    params, X, y, batches = problem()
    config = base_config(mixup=0.4)
    result = solver.train(X, y, X, y, config, params=params, batches=batches)
    with jax.enable_x64(True):   # drawn in the run's precision
        lam, partners = augment.mixup_partners(
            jax.random.fold_in(first_step_key(config), augment.MIXUP_STREAM), np.float64(0.4), B)
    lam, partners = float(lam), np.asarray(partners)
    assert 0 < lam < 1 and sorted(partners) == list(range(B))
    Xb, yb = X[batches[0]], y[batches[0]]
    mixed = scores(params, lam * Xb + (1 - lam) * Xb[partners])
    expected = (lam * numpy_rules.smoothed_cross_entropy(mixed, yb, 0)
                + (1 - lam) * numpy_rules.smoothed_cross_entropy(mixed, yb[partners], 0))
    assert result.history["loss_history"][0] == pytest.approx(expected, rel=1e-12)
    plain = solver.train(X, y, X, y, base_config(), params=params, batches=batches)
    assert abs(plain.history["loss_history"][0] - expected) > 1e-3


@pytest.mark.parametrize("alpha, share_near_the_ends", [(0.2, (0.45, 0.9)), (4.0, (0.0, 0.02))])
def test_mixup_weights_follow_beta_alpha_alpha(alpha, share_near_the_ends):
    """lam ~ Beta(alpha, alpha): mean 1/2; a small alpha puts most draws near 0 or 1, a
    large one near 1/2. Partners are a fresh permutation each step."""
    keys = jax.random.split(jax.random.key(0), 2000)
    lams, partners = jax.vmap(lambda k: augment.mixup_partners(k, alpha, 8))(keys)
    lams = np.asarray(lams)
    assert abs(lams.mean() - 0.5) < 0.03
    near_ends = np.mean((lams < 0.1) | (lams > 0.9))
    assert share_near_the_ends[0] <= near_ends <= share_near_the_ends[1]
    assert np.all(np.sort(np.asarray(partners), axis=1) == np.arange(8))
    assert len({tuple(p) for p in np.asarray(partners)[:50]}) > 40


def test_ema_validates_chooses_and_saves_the_moving_average():
    params, X, y, batches = problem(seed=2)
    config = base_config(ema=0.6)
    result = solver.train(X, y, X, y, config, params=params, batches=batches)
    trajectory: list = []
    final, _ = numpy_rules.train(params, X, y, batches,
                                 numpy_rules.step_schedule(N, B, T, 0.3, 0.7), reg=0.0,
                                 optimizer="sgd", trajectory=trajectory)
    averages = numpy_rules.moving_averages(trajectory, 0.6)
    # The last step's params are the optimizer's; the model is the average.
    for name in params:
        np.testing.assert_allclose(result.params[name], final[name], rtol=1e-9, atol=1e-12)
    validated = np.flatnonzero(loop.make_schedule(N, B, T).validate)
    hits = [np.sum(reference.predict(averages[t], X) == y) for t in validated]
    assert result.history["val_acc_history"] == pytest.approx(
        [h / N for h in hits[:3]], abs=0)     # epoch ends: steps 0, 5, 10
    best = validated[int(np.argmax(hits))]   # the first of equal maxima
    assert result.best_val_acc == max(hits) / N
    for name in params:
        np.testing.assert_allclose(result.best_params[name], averages[best][name], rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    assert np.max(np.abs(averages[best]["W1"] - trajectory[best]["W1"])) > 1e-2


def test_new_levers_in_a_sweep_equal_solo_runs_and_share_one_program():
    params, X, y, batches = problem(seed=3)
    rng = np.random.RandomState(3)
    X, y = rng.randn(40, D), rng.randint(0, C, 40)
    base = TrainConfig(hidden_size=H, num_iters=30, batch_size=B, reg=0.01, dtype="float64",
                       optimizer="adam", learning_rate=0.05, schedule="cosine", std=0.3,
                       dropout=0.2, seed=5)
    configs = [dataclasses.replace(base, mixup=m, label_smoothing=s, ema=e)
               for m, s, e in ((0.3, 0.1, 0.9), (1.0, 0.2, 0.95), (0.5, 0.05, 0.8))]
    assert len(sweep.group_configs(configs)) == 1
    assert len(sweep.group_configs(configs + [dataclasses.replace(base, ema=0.0)])) == 2
    result = sweep.run_sweep(configs, X, y, X[:10], y[:10], chunk_size=7)
    for config, swept in zip(configs, result.results):
        solo = solver.train(X, y, X[:10], y[:10], config, chunk_size=7)
        np.testing.assert_allclose(swept.history["loss_history"], solo.history["loss_history"],
                                   rtol=1e-12)
        assert swept.val_acc == solo.best_val_acc
    losses = [r.history["loss_history"][-1] for r in result.results]
    assert len(set(losses)) == 3   # the values reach the shared program


@pytest.mark.parametrize("field, value, message", [
    ("ema", 1.0, "ema must be in [0, 1)"), ("ema", -0.1, "ema must be in [0, 1)"),
    ("label_smoothing", 1.0, "label_smoothing must be in [0, 1)"),
    ("mixup", float("inf"), "mixup must be finite and >= 0"),
    ("mixup", -1.0, "mixup must be finite and >= 0")])
def test_lever_values_outside_their_range_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()
