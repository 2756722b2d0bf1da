"""Dropout masks, flips and shifts are a function of (seed, global step) alone: they differ
between steps and between seeds, repeat for the same seed and step, and do not depend on
how the run is cut into chunks (which resuming a run relies on)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import model, solver, step
from jaxnet.config import TrainConfig

N, H, C, B, T = 12, 6, 3, 4, 10


def image_problem(seed=0):
    """Random image rows (no symmetry, so a flip or shift changes the scores), float64."""
    rng = np.random.RandomState(seed)
    X = rng.randn(N, 3072)
    y = rng.randint(0, C, N)
    params = {"W1": 0.05 * rng.randn(3072, H), "b1": 0.5 + np.zeros(H),
              "W2": rng.randn(H, C), "b2": np.zeros(C)}
    return params, X, y


RANDOM_PARTS = {"dropout": dict(dropout=0.5), "flip": dict(flip=True),
                "translate": dict(translate=2)}


def frozen_losses(setting, seed):
    """Losses of T steps at learning rate 0 on one repeated minibatch: the params never
    move, so step t's loss shows only step t's random draws."""
    params, X, y = image_problem()
    config = TrainConfig(hidden_size=H, num_iters=T, batch_size=B, learning_rate=0.0, reg=0.0,
                         dtype="float64", seed=seed, **setting)
    batches = np.tile(np.arange(B), (T, 1))
    result = solver.train(X, y, X, y, config, params=params, batches=batches, chunk_size=3)
    return np.array(result.history["loss_history"]), config, params, X[:B], y[:B]


@pytest.mark.parametrize("part", RANDOM_PARTS)
def test_draws_differ_between_steps_and_seeds_and_repeat_for_the_same_step(part):
    losses, config, params, X, y = frozen_losses(RANDOM_PARTS[part], seed=3)
    # Step t draws from fold_in(key(seed), t), whatever the chunk it falls in.
    with jax.enable_x64(True):
        hp = {k: jnp.asarray(v, jnp.float64) for k, v in config.hyperparams().items()}
        expected = [float(model.cross_entropy(step.training_scores(
            config, hp, params, jnp.asarray(X), jax.random.fold_in(jax.random.key(3), t)),
            jnp.asarray(y))) for t in range(T)]
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    # A draw repeated at every step would give one loss T times.
    assert len(np.unique(losses)) >= T // 2, losses
    again, *_ = frozen_losses(RANDOM_PARTS[part], seed=3)
    np.testing.assert_array_equal(again, losses)
    other, *_ = frozen_losses(RANDOM_PARTS[part], seed=4)
    assert np.sum(other != losses) >= T // 2, (other, losses)


def test_training_scores_draws_depend_on_the_key_alone():
    params, X, _ = image_problem()
    config = TrainConfig(dropout=0.5, flip=True, translate=2)
    hp = {"dropout": jnp.asarray(0.5, jnp.float32)}
    X = jnp.asarray(X, jnp.float32)
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

    def scores(key):
        return np.asarray(step.training_scores(config, hp, params, X, key))

    base = jax.random.key(0)
    first = scores(jax.random.fold_in(base, 5))
    np.testing.assert_array_equal(first, scores(jax.random.fold_in(base, 5)))
    assert not np.allclose(first, scores(jax.random.fold_in(base, 6)))
    assert not np.allclose(first, scores(jax.random.fold_in(jax.random.key(1), 5)))
    # Evaluation scores carry none of the randomness.
    assert not np.allclose(first, np.asarray(model.scores(params, X)))


def test_chunk_size_changes_nothing_with_every_random_part_on():
    """Bit-identical params, best params and histories for chunks of 7 and of 100 steps."""
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3072).astype(np.float32)
    y = rng.randint(0, C, 60)
    config = TrainConfig(hidden_size=8, num_iters=30, batch_size=10, learning_rate=1e-3,
                         std=1e-2, reg=1e-3, optimizer="adam", dropout=0.3, flip=True,
                         translate=2, seed=5)
    small = solver.train(X, y, X[:20], y[:20], config, chunk_size=7)
    whole = solver.train(X, y, X[:20], y[:20], config, chunk_size=100)
    assert small.history == whole.history
    assert small.best_val_acc == whole.best_val_acc
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(small.params[name], whole.params[name])
        np.testing.assert_array_equal(small.best_params[name], whole.best_params[name])
    losses = np.array(whole.history["loss_history"])
    assert len(losses) == 30 and np.all(np.isfinite(losses)) and len(np.unique(losses)) == 30
