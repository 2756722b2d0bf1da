"""The model's pure functions, TwoLayerNet, autodiff vs hand-written vs numeric gradients."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnet import (TwoLayerNet, compare_gradients, eval_numerical_gradient, init_params,
                    loss, loss_and_grad, predict, rel_error, scores)
from jaxnet import reference
from conftest import REPO

CORRECT_SCORES = np.asarray([
    [-0.81233741, -1.27654624, -0.70335995],
    [-0.17129677, -1.18803311, -0.47310444],
    [-0.51590475, -1.01354314, -0.85042150],
    [-0.15419291, -0.48629638, -0.52901952],
    [-0.00618733, -0.12435261, -0.15226949]])
CORRECT_LOSS = 1.30378789133


def toy():
    """The notebook's toy model and data."""
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1)
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    return net, X, np.array([0, 1, 2, 2, 1])


def random_case(seed, N, D, H, C, dtype=np.float64):
    rng = np.random.RandomState(seed)
    params = {"W1": 0.1 * rng.randn(D, H), "b1": 0.1 * rng.randn(H),
              "W2": 0.1 * rng.randn(H, C), "b2": 0.1 * rng.randn(C)}
    params = {k: v.astype(dtype) for k, v in params.items()}
    return params, rng.randn(N, D).astype(dtype), rng.randint(0, C, N)


def test_notebook_scores_and_loss_through_pure_functions():
    net, X, y = toy()
    with jax.enable_x64(True):
        s = np.asarray(scores(net.params, X))
        value = float(loss(net.params, X, y, 0.05))
    assert np.sum(np.abs(s - CORRECT_SCORES)) < 1e-7
    assert abs(value - CORRECT_LOSS) < 1e-12


def test_notebook_scores_loss_and_grads_through_twolayernet():
    net, X, y = toy()
    s = net.loss(X)
    assert s.shape == (5, 3) and s.dtype == np.float64
    assert np.sum(np.abs(s - CORRECT_SCORES)) < 1e-7
    value, grads = net.loss(X, y, reg=0.05)
    assert abs(value - CORRECT_LOSS) < 1e-12
    assert set(grads) == {"W1", "b1", "W2", "b2"}
    for name, grad in grads.items():
        assert isinstance(grad, np.ndarray) and grad.dtype == np.float64

        def f(w, name=name):
            net_params = {**net.params, name: w}
            with jax.enable_x64(True):
                return loss(net_params, X, y, 0.05)
        numeric = eval_numerical_gradient(f, net.params[name])
        assert rel_error(numeric, grad) < 1e-8, name


def test_compare_gradients_toy_below_notebook_threshold():
    net, X, y = toy()
    report = compare_gradients(net.params, X, y, 0.05)
    assert set(report) == {"W1", "b1", "W2", "b2"}
    for errors in report.values():
        assert errors["autodiff_vs_handwritten"] < 1e-12
        assert errors["autodiff_vs_numeric"] < 1e-8
        assert errors["handwritten_vs_numeric"] < 1e-8


def test_compare_gradients_detects_a_wrong_gradient():
    """A backward pass with a bug must show up as a large error (the check can fail)."""
    net, X, y = toy()
    wrong = dict(net.params)
    report_ok = compare_gradients(wrong, X, y, 0.05)
    original = reference.loss_and_grads

    def buggy(params, X, y, reg):
        value, grads = original(params, X, y, reg)
        grads["W2"] = grads["W2"] * 1.01
        return value, grads
    reference.loss_and_grads = buggy
    try:
        report_bad = compare_gradients(wrong, X, y, 0.05)
    finally:
        reference.loss_and_grads = original
    assert report_ok["W2"]["handwritten_vs_numeric"] < 1e-8
    assert report_bad["W2"]["handwritten_vs_numeric"] > 1e-3
    assert report_bad["W2"]["autodiff_vs_handwritten"] > 1e-3


def test_eval_numerical_gradient_of_known_function():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    grad = eval_numerical_gradient(lambda a: np.sum(a ** 3), x)
    assert grad.shape == x.shape
    assert rel_error(grad, 3 * x ** 2) < 1e-9


def test_rel_error_definition():
    assert rel_error(np.array([1.0]), np.array([1.0])) == 0.0
    assert rel_error(np.array([1.0, 2.0]), np.array([3.0, 2.0])) == pytest.approx(0.5)
    assert rel_error(np.zeros(2), np.zeros(2)) == 0.0  # 1e-8 floor, no division by zero


@pytest.mark.parametrize("N,D,H,C,reg", [
    (1, 5, 3, 4, 0.0), (7, 3, 1, 2, 0.3), (16, 20, 8, 10, 1e-3), (3, 12, 6, 3, 2.0)])
def test_autodiff_matches_handwritten_float64(N, D, H, C, reg):
    params, X, y = random_case(N * 7 + H, N, D, H, C)
    with jax.enable_x64(True):
        value, grads = loss_and_grad(params, X, y, reg)
    ref_value, ref_grads = reference.loss_and_grads(params, X, y, reg)
    assert abs(float(value) - ref_value) < 1e-12 * max(1.0, abs(ref_value))
    for name in params:
        assert grads[name].dtype == jnp.float64
        assert rel_error(grads[name], ref_grads[name]) < 1e-10, name


@pytest.mark.parametrize("N,D,H,C,reg", [(1, 5, 3, 4, 0.0), (16, 20, 8, 10, 0.1)])
def test_autodiff_matches_handwritten_float32(N, D, H, C, reg):
    params, X, y = random_case(N + D, N, D, H, C, dtype=np.float32)
    value, grads = loss_and_grad(params, X, y, reg)
    assert value.dtype == jnp.float32
    ref_value, ref_grads = reference.loss_and_grads(
        {k: v.astype(np.float64) for k, v in params.items()}, X.astype(np.float64), y, reg)
    assert abs(float(value) - ref_value) < 1e-5 * max(1.0, abs(ref_value))
    for name in params:
        assert rel_error(grads[name], ref_grads[name]) < 1e-4, name


def test_jit_and_eager_agree_and_predict_is_argmax():
    params, X, y = random_case(3, 10, 6, 5, 4, dtype=np.float32)
    eager_value, eager_grads = jax.value_and_grad(loss)(params, X, y, 0.1)
    jit_value, jit_grads = loss_and_grad(params, X, y, 0.1)
    assert abs(float(eager_value) - float(jit_value)) < 1e-6
    for name in params:
        np.testing.assert_allclose(eager_grads[name], jit_grads[name], rtol=1e-5, atol=1e-7)
    s = np.asarray(scores(params, X))
    np.testing.assert_array_equal(np.asarray(predict(params, X)), s.argmax(axis=1))
    np.testing.assert_array_equal(np.asarray(jax.jit(predict)(params, X)), s.argmax(axis=1))


def test_init_params_shapes_dtype_and_scale():
    params = init_params(jax.random.key(0), 3072, 50, 10, std=1e-2)
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (3072, 50), "b1": (50,), "W2": (50, 10), "b2": (10,)}
    assert all(v.dtype == jnp.float32 for v in params.values())
    assert abs(float(jnp.std(params["W1"])) - 1e-2) < 1e-3
    assert float(jnp.abs(params["b1"]).max()) == 0.0
    with jax.enable_x64(True):
        p64 = init_params(jax.random.key(0), 4, 3, 2, dtype=jnp.float64)
        assert p64["W1"].dtype == jnp.float64


def test_loss_is_stable_for_huge_scores():
    """Scores near 1e5 overflow exp() in float32; the loss must still be the right number."""
    params, X, y = random_case(0, 4, 3, 2, 3, dtype=np.float32)
    params["W2"] = params["W2"] * 1e6
    s = np.asarray(scores(params, X), np.float64)
    assert np.abs(s).max() > 1e3                     # exp(s) is inf in float32 here
    top = s.max(axis=1)
    expected = np.mean(top + np.log(np.exp(s - top[:, None]).sum(axis=1)) - s[np.arange(4), y])
    assert expected > 100
    value = float(loss(params, X, y))
    assert value == pytest.approx(expected, rel=1e-5)
    _, grads = loss_and_grad(params, X, y, 0.0)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())


def test_predict_of_twolayernet_matches_scores():
    net, X, _ = toy()
    np.testing.assert_array_equal(net.predict(X), net.loss(X).argmax(axis=1))


def test_twolayernet_float32_inputs_compute_in_float32():
    net, X, y = toy()
    net.params = {k: v.astype(np.float32) for k, v in net.params.items()}
    value, grads = net.loss(X.astype(np.float32), y, reg=0.05)
    assert grads["W1"].dtype == np.float32
    assert abs(value - CORRECT_LOSS) < 1e-5


def test_importing_jaxnet_leaves_x64_flag_alone():
    code = ("import importlib, pkgutil, jax; before = jax.config.jax_enable_x64; import jaxnet; "
            "[importlib.import_module('jaxnet.' + m.name) for m in pkgutil.iter_modules(jaxnet.__path__)]; "
            "assert jax.config.jax_enable_x64 == before; print(before)")
    for env_value in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                             text=True, env={"JAX_ENABLE_X64": env_value, "PATH": ""})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ("True" if env_value == "1" else "False")


@pytest.mark.parametrize("X,y,reg,message", [
    (np.zeros((5, 4, 1)), np.zeros(5, int), 0.0, "must be 2-D"),
    (np.zeros((5, 3)), np.zeros(5, int), 0.0, "expects 4"),
    (np.full((5, 4), np.nan), np.zeros(5, int), 0.0, "NaN or infinite"),
    (np.zeros((5, 4)), np.zeros((5, 1), int), 0.0, "1-D"),
    (np.zeros((5, 4)), np.zeros(5), 0.0, "integer"),
    (np.zeros((5, 4)), np.zeros(4, int), 0.0, "4 labels but there are 5"),
    (np.zeros((5, 4)), np.array([0, 1, 2, 3, 1]), 0.0, r"\[0, 2\]"),
    (np.zeros((5, 4)), np.array([0, -1, 2, 2, 1]), 0.0, "labels in"),
    (np.zeros((5, 4)), np.zeros(5, int), -1.0, "reg must be finite and >= 0"),
    (np.zeros((5, 4)), np.zeros(5, int), float("inf"), "reg must be finite"),
])
def test_bad_inputs_raise_value_error(X, y, reg, message):
    net, _, _ = toy()
    with pytest.raises(ValueError, match=message):
        net.loss(X, y, reg=reg)
    with pytest.raises(ValueError, match=message):
        compare_gradients(net.params, X, y, reg)


def test_gradcheck_command_prints_table_and_passes():
    out = subprocess.run([sys.executable, "scripts/gradcheck.py", "--num-checks", "20"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()
            if line.startswith(("toy", "cifar"))]
    assert [(r[0], r[1]) for r in rows] == [
        (case, p) for case in ("toy", "cifar") for p in ("W1", "b1", "W2", "b2")]
    toy_errors = [float(v) for r in rows if r[0] == "toy" for v in r[2:]]
    assert max(toy_errors) < 1e-8


def test_gradcheck_command_fails_and_names_the_entry():
    out = subprocess.run([sys.executable, "scripts/gradcheck.py", "--case", "toy",
                          "--tol", "1e-12"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1
    assert "toy W1 autodiff_vs_numeric" in out.stderr


def test_gradcheck_command_bad_flag_is_one_line():
    out = subprocess.run([sys.executable, "scripts/gradcheck.py", "--num-checks", "0"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "must be >= 1" in out.stderr
