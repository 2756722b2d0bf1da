"""Preprocessing fitted on the training split: standardization, PCA, ZCA, checkpoint round trip."""
import numpy as np
import pytest

from jaxnet import preprocess, solver, step
from jaxnet.config import TrainConfig
from jaxnet.saved_model import load_model, save_model
from jaxnet.data import get_CIFAR10_data
from jaxnet.preprocess import Transform


@pytest.fixture(scope="module")
def fixture_data(cifar_fixture):
    return get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=100)


def correlated(N=4000, D=12, seed=0):
    """Gaussian rows with a strongly non-diagonal covariance and a nonzero mean."""
    rng = np.random.RandomState(seed)
    A = rng.randn(D, D) * np.logspace(0, 2, D)
    return (rng.randn(N, D) @ A + 50).astype(np.float64)


def test_standardize_per_channel(fixture_data):
    X = fixture_data["X_train"]
    t = preprocess.fit_standardize(X)
    assert t.mean.shape == t.matrix.shape == (3072,) and t.output_size == 3072
    Z = t.apply(X).reshape(-1, 3)                       # all pixels, one column per channel
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(Z.std(axis=0), 1, rtol=1e-4)
    # One value per channel, repeated at every pixel: the layout is (32, 32, 3).
    np.testing.assert_array_equal(t.matrix.reshape(32, 32, 3), np.broadcast_to(
        t.matrix[:3], (32, 32, 3)))


def test_fit_on_train_only(fixture_data):
    """Changing the validation and test splits changes neither the fit nor the training rows."""
    for kind, kwargs in [("standardize", {}), ("pca", {"k": 20}), ("zca", {"eps": 0.1})]:
        dataset = dict(fixture_data)
        t1 = preprocess.fit(kind, dataset["X_train"], **kwargs)
        out1 = preprocess.apply_to_splits(dataset, t1)
        rng = np.random.RandomState(1)
        changed = dict(dataset, X_val=rng.randn(*dataset["X_val"].shape).astype(np.float32),
                       X_test=100 * rng.randn(*dataset["X_test"].shape).astype(np.float32))
        t2 = preprocess.fit(kind, changed["X_train"], **kwargs)
        out2 = preprocess.apply_to_splits(changed, t2)
        np.testing.assert_array_equal(t1.mean, t2.mean)
        np.testing.assert_array_equal(t1.matrix, t2.matrix)
        np.testing.assert_array_equal(out1["X_train"], out2["X_train"])
        np.testing.assert_array_equal(out1["X_val"], t1.apply(dataset["X_val"]))
        np.testing.assert_array_equal(out2["y_test"], dataset["y_test"])


def test_zca_whitens_to_identity_covariance():
    X = correlated()
    t = preprocess.fit_zca(X, eps=1e-13)
    assert t.matrix.shape == (12, 12)
    np.testing.assert_allclose(t.matrix, t.matrix.T, atol=1e-8)          # ZCA is symmetric
    Z = t.apply(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(np.cov(Z, rowvar=False, bias=True), np.eye(12), atol=1e-5)
    # ZCA is the whitening closest to the input: each output feature tracks its own input.
    assert all(np.corrcoef(X[:, i], Z[:, i])[0, 1] > 0.3 for i in range(12))


def test_zca_eps_shrinks_small_directions():
    X = correlated()
    values = np.linalg.eigvalsh(np.cov(preprocess.fit_zca(X, eps=0.1).apply(X), rowvar=False,
                                       bias=True))
    assert values.max() < 1 + 1e-6 and values.min() < 0.5


def test_pca_whitened_fixture_has_identity_covariance(fixture_data):
    """N = 150 < D = 3072 on the fixture: the thin-SVD path."""
    X = fixture_data["X_train"]
    t = preprocess.fit_pca(X, 40, whiten=True)
    Z = t.apply(X)
    assert Z.shape == (150, 40)
    np.testing.assert_allclose(np.cov(Z, rowvar=False, bias=True), np.eye(40), atol=2e-3)
    plain = preprocess.fit_pca(X, 40)
    np.testing.assert_allclose(plain.matrix.T @ plain.matrix, np.eye(40), atol=1e-5)
    variances = plain.apply(X).var(axis=0)
    assert np.all(np.diff(variances) <= 1e-3 * variances[0])          # descending


def test_pca_matches_eigendecomposition_both_paths():
    """The covariance path (N >= D) and the SVD path (N < D) find the same subspace."""
    X = correlated(N=3000, D=12)
    big = preprocess.fit_pca(X, 4)
    small = preprocess.fit_pca(X[:10], 4)
    _, _, ref = np.linalg.svd(X - X.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(big.matrix.T @ ref[:4].T), np.eye(4), atol=1e-6)
    _, _, ref_small = np.linalg.svd(X[:10] - X[:10].mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(small.matrix.T @ ref_small[:4].T), np.eye(4), atol=1e-6)


def test_zca_on_fewer_rows_than_features_matches_full_formula():
    X = correlated(N=8, D=12)
    t = preprocess.fit_zca(X, eps=1e-2)
    cov = np.cov(X, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(cov)
    eps = 1e-2 * np.trace(cov) / 12
    expected = (vectors / np.sqrt(np.maximum(values, 0) + eps)) @ vectors.T
    np.testing.assert_allclose(t.matrix, expected, rtol=1e-6, atol=1e-9)


def test_round_trip_through_checkpoint(tmp_path, fixture_data):
    X = fixture_data["X_train"]
    params = {"W1": np.zeros((30, 5), np.float32), "b1": np.zeros(5, np.float32),
              "W2": np.zeros((5, 10), np.float32), "b2": np.zeros(10, np.float32)}
    for t in (preprocess.fit_standardize(X), preprocess.fit_pca(X, 30, whiten=True, eps=1.0),
              preprocess.fit_zca(X, 0.05)):
        extra = {"mean_image": fixture_data["mean_image"], **t.to_arrays()}
        save_model(tmp_path / f"{t.kind}.npz", params, extra=extra)
        loaded = Transform.from_arrays(load_model(tmp_path / f"{t.kind}.npz").extra)
        assert loaded.kind == t.kind
        np.testing.assert_array_equal(loaded.apply(fixture_data["X_test"]),
                                      t.apply(fixture_data["X_test"]))
    assert Transform.from_arrays({"mean_image": np.zeros(3)}) is None


def test_invalid_transforms_are_refused(fixture_data):
    with pytest.raises(ValueError, match="kind"):
        Transform("whiten", np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"\(D, k\)"):
        Transform("pca", np.zeros(4), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"\(D,\)"):
        Transform("standardize", np.zeros(4), np.ones(3))
    with pytest.raises(ValueError, match="missing"):
        Transform.from_arrays({preprocess.MEAN_KEY: np.zeros(3)})
    with pytest.raises(ValueError, match="expects rows"):
        preprocess.fit_standardize(fixture_data["X_train"]).apply(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="k must be"):
        preprocess.fit_pca(fixture_data["X_train"], 151)
    with pytest.raises(ValueError, match="3072"):
        preprocess.fit_standardize(np.zeros((5, 10)))


# ----------------------------------------------------------------------------- in training

def test_training_with_input_transform_equals_training_on_transformed_rows(fixture_data):
    d = fixture_data
    t = preprocess.fit_pca(d["X_train"], 30, whiten=True, eps=1.0)
    config = TrainConfig(hidden_size=12, num_iters=20, batch_size=25, std=1e-2,
                                optimizer="adam", learning_rate=1e-3)
    inside = solver.train(d["X_train"], d["y_train"], d["X_val"], d["y_val"], config,
                          input_transform=(t.mean, t.matrix))
    data = preprocess.apply_to_splits(d, t)
    outside = solver.train(data["X_train"], d["y_train"], data["X_val"], d["y_val"], config)
    assert inside.params["W1"].shape == (30, 12)
    for name in inside.params:
        np.testing.assert_allclose(inside.params[name], outside.params[name], atol=1e-5)
    assert inside.history["val_acc_history"] == outside.history["val_acc_history"]


def test_input_transform_follows_augmentation(fixture_data):
    import jax

    from jaxnet import augment, model
    t = preprocess.fit_pca(fixture_data["X_train"], 20)
    X = fixture_data["X_train"][:8]
    config = TrainConfig(flip=True, translate=2)
    params = model.init_params(jax.random.key(0), 20, 6, 10, std=0.1)
    key = jax.random.key(3)
    got = step.training_scores(config, {"dropout": 0.0}, params, X, key, (t.mean, t.matrix))
    augmented = augment.augment_rows(jax.random.split(key)[0], X, True, 2)
    expected = model.scores(params, t.apply(np.asarray(augmented)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-4)
