"""Dropout (off at evaluation, the right keep rate and inverted scaling in training) and
augmentation (shapes and row order kept, flips, translations as documented)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import augment, model, step
from jaxnet.config import TrainConfig


def constant_hidden_params(D=8, H=400):
    """W1 = 0, b1 = 1, W2 = I, b2 = 0: every hidden unit is 1; the scores are the hidden layer."""
    return {"W1": jnp.zeros((D, H)), "b1": jnp.ones((H,)),
            "W2": jnp.eye(H), "b2": jnp.zeros((H,))}


def hp(dropout):
    return {"dropout": jnp.asarray(dropout, jnp.float32)}


def test_scores_are_deterministic_without_dropout():
    rng = np.random.RandomState(0)
    params = model.init_params(jax.random.key(0), 30, 20, 5, std=0.5)
    X = rng.randn(16, 30).astype(np.float32)
    first, second = np.asarray(model.scores(params, X)), np.asarray(model.scores(params, X))
    np.testing.assert_array_equal(first, second)
    h = np.maximum(X @ np.asarray(params["W1"]) + np.asarray(params["b1"]), 0)
    expected = h @ np.asarray(params["W2"]) + np.asarray(params["b2"])
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_training_dropout_rate_and_inverted_scaling(rate):
    config = TrainConfig(dropout=rate)
    params = constant_hidden_params()
    X = jnp.zeros((250, 8))
    h = np.asarray(step.training_scores(config, hp(rate), params, X, jax.random.key(1)))
    n = h.size                                        # 100,000 Bernoulli draws
    dropped = np.mean(h == 0)
    # 6 standard deviations of a binomial proportion: a false failure is ~1e-9 likely.
    assert abs(dropped - rate) < 6 * np.sqrt(rate * (1 - rate) / n)
    kept = h[h != 0]
    np.testing.assert_allclose(kept, 1.0 / (1.0 - rate), rtol=1e-6)   # survivors scaled up
    assert abs(h.mean() - 1.0) < 6 * np.sqrt(rate / (1 - rate) / n)   # expectation preserved


def test_dropout_masks_differ_by_row_and_key_and_average_to_evaluation_scores():
    rate = 0.5
    config = TrainConfig(dropout=rate)
    params = model.init_params(jax.random.key(2), 12, 64, 4, std=0.3)
    X = jnp.asarray(np.random.RandomState(3).randn(5, 12), jnp.float32)
    copies = 1000                    # every row of the tiled batch draws its own mask
    runs = np.asarray(step.training_scores(config, hp(rate), params, jnp.tile(X, (copies, 1)),
                                             jax.random.key(6))).reshape(copies, *X.shape[:1], -1)
    assert not np.allclose(runs[0], runs[1])        # rows under one key draw their own masks
    # The same key draws the same masks; another key draws others.
    first, again, other = (np.asarray(step.training_scores(config, hp(rate), params, X,
                                                             jax.random.key(k)))
                           for k in (6, 6, 7))
    np.testing.assert_array_equal(again, first)
    assert np.mean(other != first) > 0.5
    # The output layer is linear in h and E[mask / keep] = 1, so the mean is the eval score,
    # within 6 standard errors of the Monte Carlo mean.
    error = np.abs(runs.mean(axis=0) - np.asarray(model.scores(params, X)))
    assert np.all(error < 6 * runs.std(axis=0) / np.sqrt(len(runs)) + 1e-6)


def test_no_dropout_config_trains_on_evaluation_scores():
    config = TrainConfig(dropout=0.0)
    params = model.init_params(jax.random.key(4), 48, 10, 3, std=1e-1)
    X = jnp.asarray(np.random.RandomState(5).randn(6, 48), jnp.float32)
    np.testing.assert_array_equal(
        np.asarray(step.training_scores(config, hp(0.0), params, X, jax.random.key(0))),
        np.asarray(model.scores(params, X)))


# ----------------------------------------------------------------------------- augmentation

def images(n=4, seed=0):
    return np.random.RandomState(seed).randint(1, 256, (n, 32, 32, 3)).astype(np.float32)


def reference_translate(image, dy, dx):
    """Pixel (i, j) moves to (i + dy, j + dx); uncovered pixels are 0."""
    out = np.zeros_like(image)
    H, W = image.shape[:2]
    rows = [i for i in range(H) if 0 <= i + dy < H]
    cols = [j for j in range(W) if 0 <= j + dx < W]
    if rows and cols:
        out[np.ix_([i + dy for i in rows], [j + dx for j in cols])] = image[np.ix_(rows, cols)]
    return out


def test_flip_is_its_own_inverse_and_mirrors_columns():
    x = images()
    flipped = np.asarray(augment.flip_horizontal(x))
    np.testing.assert_array_equal(flipped[:, :, 0], x[:, :, -1])
    np.testing.assert_array_equal(flipped[:, 5, 7], x[:, 5, 24])
    np.testing.assert_array_equal(np.asarray(augment.flip_horizontal(flipped)), x)


@pytest.mark.parametrize("shift", [(0, 0), (1, 0), (0, 1), (2, -3), (-1, -1), (-4, 3), (31, 0)])
def test_translate_moves_pixels_as_documented(shift):
    x = images(n=2)
    shifts = np.array([shift, (-shift[0], -shift[1])], np.int32)
    out = np.asarray(augment.translate(jnp.asarray(x), jnp.asarray(shifts)))
    assert out.shape == x.shape
    for n, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[n], reference_translate(x[n], dy, dx))


def test_translate_single_pixel():
    x = np.zeros((1, 32, 32, 3), np.float32)
    x[0, 10, 20] = [1, 2, 3]
    out = np.asarray(augment.translate(jnp.asarray(x), jnp.array([[3, -5]])))
    assert np.count_nonzero(out) == 3
    np.testing.assert_array_equal(out[0, 13, 15], [1, 2, 3])


def test_augment_rows_keeps_shape_dtype_and_order():
    """Each output row is a flip/shift of the same input row, so its label still applies."""
    x = images(n=24, seed=1)
    X = jnp.asarray(x.reshape(24, -1))
    out = np.asarray(augment.augment_rows(jax.random.key(7), X, True, 1))
    assert out.shape == X.shape and out.dtype == X.dtype
    seen = set()
    for n in range(24):
        candidates = {(f, dy, dx): reference_translate(x[n, :, ::-1] if f else x[n], dy, dx)
                      for f in (0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
        matches = [c for c, img in candidates.items() if np.array_equal(img.reshape(-1), out[n])]
        assert matches, f"row {n} is not a flip/shift of input row {n}"
        seen.update(matches)
    assert len(seen) > 3                  # the draws vary across rows


def test_augment_rows_off_is_identity_and_seeded():
    X = jnp.asarray(images(n=3).reshape(3, -1))
    assert augment.augment_rows(jax.random.key(0), X, False, 0) is X
    a = augment.augment_rows(jax.random.key(5), X, True, 2)
    b = augment.augment_rows(jax.random.key(5), X, True, 2)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
