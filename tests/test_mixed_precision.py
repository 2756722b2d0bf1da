"""Mixed precision (compute_dtype bfloat16): error bounds against float64, training, sweeps,
checkpoints and the refused combinations.

The tolerances follow from bfloat16's 8 significant bits (7 stored, 1 implicit):
rounding to nearest moves a value by at most u = 2**-9 of itself. A product of
two rounded factors is then off by at most (1 + u)**2 - 1 < 2**-8 + 2**-17 of
its exact value, and bfloat16 x bfloat16 fits in float32's 24 bits, so the
multiplication itself is exact. Summing D such terms in float32 adds at most
D * 2**-24 of the sum of their magnitudes. So each first-layer pre-activation
sum_d W[h, d] X[n, d] is off by at most (2**-8 + 2**-17 + D * 2**-24) times
sum_d |W[h, d] X[n, d]|.
"""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import gradcheck, kernels, model, search, solver, step, sweep
from jaxnet.saved_model import load_model
from jaxnet.data import get_CIFAR10_data
from jaxnet.config import COMPUTE_DTYPES, PRESETS, TrainConfig
from conftest import REPO

D, H, C, N = 3072, 50, 10, 200
MIXED = TrainConfig(compute_dtype="bfloat16")


def product_bound(W, X):
    """The bound above, elementwise: W (H, D), X (N, D) -> (H, N)."""
    slack = 2.0**-8 + 2.0**-17 + W.shape[1] * 2.0**-24
    return slack * (np.abs(W) @ np.abs(X).T)


@pytest.fixture(scope="module")
def case():
    """CIFAR-shaped params and a minibatch at the scale of mean-subtracted pixels.

    Every hidden unit sits far from the ReLU's kink, half always on and half always
    off (b1 = +-20, asserted below), so no rounding can switch a unit: a switch
    changes a gradient term from 0 to its full size, which no mantissa bound covers.
    (test_mixed_notebook_run_reaches_the_float32_accuracy covers what switches do
    to training.)
    """
    rng = np.random.RandomState(0)
    params = {"W1": 1e-3 * rng.randn(D, H), "b1": np.where(np.arange(H) % 2, -20.0, 20.0),
              "W2": 0.05 * rng.randn(H, C), "b2": 0.1 * rng.randn(C)}
    return params, 40.0 * rng.randn(N, D), rng.randint(0, C, N)


def mixed_loss_and_grads(params, X, y):
    """The training loop's loss (reg 0, no dropout) and gradients, W1 given as (D, H)."""
    def loss(params):
        scores = step.training_scores(MIXED, MIXED.hyperparams(), params, X,
                                        jax.random.key(0), w1_transposed=True)
        return model.cross_entropy(scores, y)

    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    params["W1"] = params["W1"].T
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    grads = {k: np.asarray(v, np.float64) for k, v in grads.items()}
    grads["W1"] = grads["W1"].T
    return float(value), grads


def test_pre_activations_stay_within_the_bfloat16_bound(case):
    params, X, _ = case
    W = params["W1"].T
    with jax.enable_x64(True):
        exact = np.asarray(jnp.asarray(W) @ jnp.asarray(X).T)
    mixed = np.asarray(kernels.bfloat16_product(jnp.asarray(W, jnp.float32),
                                               jnp.asarray(X, jnp.float32)), np.float64)
    assert mixed.shape == (H, N)
    error = np.abs(mixed - exact)
    assert np.all(error <= product_bound(W, X))
    # And it is bfloat16's error, not float32's: the typical error is far above 2**-24.
    assert np.median(error / np.abs(exact)) > 2.0**-16


def test_mixed_loss_and_gradients_match_float64(case):
    params, X, y = case
    pre = X @ params["W1"] + params["b1"]                   # (N, H)
    assert np.all(np.abs(pre) > 2 * product_bound(params["W1"].T, X).T)  # no unit switches
    with jax.enable_x64(True):
        exact_loss, exact = model.loss_and_grad(params, X, y, 0.0)
        exact_loss, exact = float(exact_loss), {k: np.asarray(v) for k, v in exact.items()}
    loss, grads = mixed_loss_and_grads(params, X, y)

    # dW1 = g^T X, g the (N, H) gradient of the pre-activations, is a product of two
    # rounded factors like the forward one: the same bound, summed over the N rows.
    # g itself carries the forward error through the softmax; b1's gradient, which
    # is g summed and has no rounded product of its own, measures that: 1e-4
    # relative at most, so 1.01 times the bound leaves room for it.
    probs = np.exp(np.maximum(pre, 0) @ params["W2"] + params["b2"])
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(N), y] -= 1
    g = (probs / N) @ params["W2"].T * (pre > 0)            # (N, H)
    assert np.allclose(g.sum(axis=0), exact["b1"])          # g is the exact cotangent
    bound = 1.01 * product_bound(g.T, X.T).T                # (D, H)
    assert np.all(np.abs(grads["W1"] - exact["W1"]) <= bound + 1e-12)

    # The loss and the other gradients are smooth functions of the pre-activations
    # (no unit switches), each off by far less than 2**-8 of the terms it sums:
    # they keep a relative error below 2**-8. (Measured: about 1e-5.)
    assert abs(loss - exact_loss) <= 2.0**-8 * exact_loss
    for name in ("b1", "W2", "b2"):
        relative = np.linalg.norm(grads[name] - exact[name]) / np.linalg.norm(exact[name])
        assert relative < 2.0**-8, (name, relative)
    # The errors are bfloat16's: far above float32's 2**-24.
    w1_error = np.linalg.norm(grads["W1"] - exact["W1"]) / np.linalg.norm(exact["W1"])
    assert w1_error > 2.0**-16 and abs(loss - exact_loss) > 2.0**-24 * exact_loss


@pytest.fixture(scope="module")
def notebook_data(cifar_full):
    d = get_CIFAR10_data(cifar_full, num_training=10000, num_validation=1000, num_test=0)
    return d["X_train"], d["y_train"], d["X_val"], d["y_val"]


def test_mixed_notebook_run_reaches_the_float32_accuracy(notebook_data):
    """The notebook's run on 10,000 real training images: within 1 point of float32."""
    full = solver.train(*notebook_data, TrainConfig())
    mixed = solver.train(*notebook_data, MIXED)
    assert full.best_val_acc > 0.2  # it learned something (chance is 0.1)
    assert abs(mixed.best_val_acc - full.best_val_acc) <= 0.01
    assert all(v.dtype == np.float32 for v in mixed.params.values())
    losses, mixed_losses = (np.array(r.history["loss_history"]) for r in (full, mixed))
    assert not np.array_equal(losses, mixed_losses)  # the bfloat16 products ran
    np.testing.assert_allclose(mixed_losses, losses, rtol=2.0**-8)


@pytest.fixture(scope="module")
def fixture_data(cifar_fixture):
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=100)
    return d["X_train"] / 64, d["y_train"], d["X_val"] / 64, d["y_val"]


def test_mixed_sweep_equals_mixed_solo_runs(fixture_data):
    base = TrainConfig(hidden_size=8, num_iters=40, batch_size=25, std=1e-3)
    configs = sweep.grid(base, compute_dtype=["float32", "bfloat16"],
                         learning_rate=[1e-4, 3e-4], reg=[0.5])
    assert len(sweep.group_configs(configs)) == 2  # the precision is part of the structure
    result = sweep.run_sweep(configs, *fixture_data, keep_params=True)
    for r in result.results:
        # In a sweep the K configs' products are one (K*H, D) product, summed in another
        # order than a solo run's: float32 results differ by float32 rounding. In mixed
        # precision such a difference can also flip a weight's bfloat16 rounding, a
        # change of 2**-9 of that weight in its products, hence a looser tolerance.
        # (Measured here: mixed sweep and solo runs agree to the last bit.)
        tol = 1e-5 if r.config.compute_dtype == "float32" else 1e-4
        solo = solver.train(*fixture_data, r.config)
        np.testing.assert_allclose(r.history["loss_history"], solo.history["loss_history"],
                                   rtol=0, atol=tol)
        for name in ("W1", "b1", "W2", "b2"):
            np.testing.assert_allclose(r.params[name], solo.params[name], rtol=0, atol=tol)
        assert r.history["val_acc_history"] == pytest.approx(solo.history["val_acc_history"])
    by_precision = [r.history["loss_history"] for r in result.results]
    assert by_precision[0] != by_precision[2]  # same hyperparameters, other precision


def test_mixed_run_with_augmentation_transform_and_dropout(fixture_data):
    """Flips and shifts act on the bfloat16 rows, the transform makes them float32 again,
    and the product casts its input back to bfloat16."""
    from jaxnet import preprocess
    transform = preprocess.fit("standardize", fixture_data[0])
    config = TrainConfig(hidden_size=8, num_iters=40, batch_size=25, std=1e-3,
                         learning_rate=1e-3, optimizer="adam", dropout=0.2, flip=True,
                         translate=1, compute_dtype="bfloat16")
    arrays = (transform.mean, transform.matrix)
    mixed = solver.train(*fixture_data, config, input_transform=arrays)
    full = solver.train(*fixture_data, dataclasses.replace(config, compute_dtype="float32"),
                        input_transform=arrays)
    np.testing.assert_allclose(mixed.history["loss_history"], full.history["loss_history"],
                               rtol=0.02)
    assert mixed.history["loss_history"] != full.history["loss_history"]


def test_memory_estimate_counts_the_bfloat16_weights_and_minibatch():
    base = TrainConfig(hidden_size=50, batch_size=200)
    full = sweep.estimate_memory(base, 1, D, C, 0)
    mixed = sweep.estimate_memory(dataclasses.replace(base, compute_dtype="bfloat16"), 1, D, C, 0)
    # plus W1's bfloat16 copy (2 bytes an entry), minus half the float32 minibatch
    assert mixed - full == 2 * D * 50 - 2 * 200 * D


def test_mixed_train_script_saves_float32_params(cifar_fixture, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--data-dir", str(cifar_fixture),
         "--num-training", "150", "--num-validation", "50", "--num-iters", "20",
         "--batch-size", "20", "--hidden-size", "10", "--compute-dtype", "bfloat16",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["compute_dtype"] == "bfloat16"
    checkpoint = load_model(out / "params.npz")
    assert checkpoint.config["compute_dtype"] == "bfloat16"
    assert {k: v.dtype for k, v in checkpoint.params.items()} == dict.fromkeys(
        ("W1", "b1", "W2", "b2"), np.float32)
    assert checkpoint.params["W1"].shape == (3072, 10)


def test_search_command_repeats_the_precision():
    for dtype in COMPUTE_DTYPES:
        config = dataclasses.replace(PRESETS["best"], compute_dtype=dtype)
        command = search.train_command(config, "standardize", search.SearchPlan())
        assert (f"--compute-dtype {dtype}" in command) == (
            dtype != PRESETS["best"].compute_dtype)


# ----------------------------------------------------------------------------- refused

@pytest.mark.parametrize("fields, message", [
    ({"dtype": "float64", "compute_dtype": "bfloat16"},
     "compute_dtype bfloat16 needs dtype float32"),
    ({"compute_dtype": "float16"},
     "compute_dtype must be one of float32, bfloat16, auto; got 'float16'"),
])
def test_bad_precision_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).validate()


@pytest.mark.parametrize("script, flags", [
    ("train.py", ["--dtype", "float64", "--compute-dtype", "bfloat16"]),
    ("sweep.py", ["--dtype", "float64", "--compute-dtype", "float32,bfloat16"]),
    ("search.py", ["--dtype", "float64", "--compute-dtype", "bfloat16"]),
])
def test_scripts_refuse_bfloat16_with_float64_in_one_line(script, flags, tmp_path):
    env = {**os.environ, "JAXNET_CIFAR10_URL": "http://127.0.0.1:9/x.tar.gz"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *flags,
                           "--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "compute_dtype bfloat16 needs dtype float32" in lines[0], \
        proc.stderr


def test_gradient_checks_refuse_bfloat16_inputs(case):
    params, X, y = case
    half = {**params, "W1": jnp.asarray(params["W1"], jnp.bfloat16)}
    with pytest.raises(ValueError, match=r"gradient checks run in float64, but "
                                         r"params\['W1'\] is bfloat16 \(8 significant bits"):
        gradcheck.compare_gradients(half, X[:5], y[:5], num_checks=3)
    with pytest.raises(ValueError, match="x is bfloat16"):
        gradcheck.eval_numerical_gradient(lambda w: float(np.sum(w)),
                                          jnp.ones(3, jnp.bfloat16))
