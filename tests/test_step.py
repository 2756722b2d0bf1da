"""The training step and the validation step on their own, on mock data (as flax's
examples test ``apply_model``/``update_model``): one SGD step of ``train_step`` is the
hand-written numpy gradient step, and ``eval_step`` counts numpy's correct predictions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import model, reference, step
from jaxnet.augment import apply_transform
from jaxnet.config import TrainConfig
from jaxnet.optim import make_optimizer

D, H, C, B = 7, 5, 3, 6


def problem(seed=0):
    rng = np.random.RandomState(seed)
    params = {"W1": 0.5 * rng.randn(D, H), "b1": 0.1 * rng.randn(H),
              "W2": 0.5 * rng.randn(H, C), "b2": 0.1 * rng.randn(C)}
    return params, rng.randn(B, D), rng.randint(0, C, B)


def one_step(config, params, X, y, w1_sumsq=None, lr=0.3):
    """``train_step`` once from ``params`` (float64); returns the new params (W1 (D, H))
    and the loss."""
    hp = {k: jnp.asarray(v) for k, v in config.hyperparams().items()}
    lrs = jnp.full(4, lr)
    state = step.transpose_w1(step.init_state(config, hp, jax.tree.map(jnp.asarray, params),
                                              lrs))
    opt = make_optimizer(config, hp, lambda count: lrs[count])
    if w1_sumsq is not None:
        w1_sumsq = jnp.sum(state.params["W1"] ** 2)
    new, loss = jax.jit(step.train_step, static_argnums=(0, 1))(
        config, opt, hp, state, X, y, 0, None, w1_sumsq)
    return {k: np.asarray(v) for k, v in step.transpose_w1(new).params.items()}, float(loss)


@pytest.mark.parametrize("carried", [False, True], ids=["sumsq computed", "sumsq carried"])
def test_one_sgd_step_is_the_hand_written_gradient_step(carried):
    """The step's gradient is that of model.loss, penalty included, whether sum(W1**2)
    is computed in the step or carried from the previous one."""
    params, X, y = problem()
    config = TrainConfig(hidden_size=H, reg=0.1, dtype="float64")
    with jax.enable_x64(True):
        new, loss = one_step(config, params, X, y, w1_sumsq=carried)
    expected_loss, grads = reference.loss_and_grads(params, X, y, reg=0.1)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    for name in model.PARAM_NAMES:
        np.testing.assert_allclose(new[name], params[name] - 0.3 * grads[name], rtol=1e-11,
                                   atol=1e-13, err_msg=name)


def test_step_draws_depend_on_seed_and_step_only():
    config = TrainConfig(seed=3)
    same = [np.asarray(jax.random.key_data(step.step_key(config, t))) for t in (5, 5)]
    other = np.asarray(jax.random.key_data(step.step_key(config, 6)))
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], other)


def test_eval_step_counts_numpys_correct_predictions():
    params, X, y = problem(1)
    mean, scale = np.linspace(-1, 1, D), np.linspace(0.5, 2, D)
    transposed = step.transpose_w1({k: jnp.asarray(v, jnp.float32) for k, v in params.items()})
    expected = int(np.sum(reference.predict(params, (X - mean) * scale) == y))
    assert 0 < expected < B  # the count is informative
    got = step.eval_step(transposed, jnp.asarray(X, jnp.float32), jnp.asarray(y),
                         (jnp.asarray(mean, jnp.float32), jnp.asarray(scale, jnp.float32)))
    assert int(got) == expected
    plain = int(np.sum(reference.predict(params, X) == y))
    assert int(step.eval_step(transposed, jnp.asarray(X, jnp.float32), jnp.asarray(y))) == plain


def test_training_scores_equal_model_scores_without_levers():
    """With no augmentation, dropout or mixup, training mode is the model's forward pass."""
    params, X, y = problem(2)
    config = TrainConfig(hidden_size=H)
    got = step.training_scores(config, config.hyperparams(), params, jnp.asarray(X),
                               jax.random.key(0))
    np.testing.assert_allclose(got, model.scores(params, jnp.asarray(X)), rtol=1e-6)
    inputs, mix, dropout = step.training_inputs(config, config.hyperparams(), jnp.asarray(X),
                                                jax.random.key(0))
    assert mix is None and dropout is None
    np.testing.assert_array_equal(inputs, apply_transform(None, jnp.asarray(X)))


def test_the_transposed_layout_is_the_same_network():
    """model.hidden's fast layout (W1 stored (H, D)) computes the same scores and loss."""
    params, X, y = problem(3)
    with jax.enable_x64(True):
        transposed = step.transpose_w1(params)
        assert transposed["W1"].shape == (H, D)
        numpy_scores = (np.maximum(X @ params["W1"] + params["b1"], 0) @ params["W2"]
                        + params["b2"])
        np.testing.assert_allclose(model.scores(transposed, X, w1_transposed=True),
                                   numpy_scores, rtol=1e-12)
        assert float(model.loss(transposed, X, y, 0.2, w1_transposed=True)) == pytest.approx(
            reference.loss_and_grads(params, X, y, reg=0.2)[0], rel=1e-12)
