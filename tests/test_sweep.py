"""Sweeps: every config equals its solo run, sharding and divergence change nothing else."""
import csv
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from jaxnet import model, preprocess, solver, sweep
from jaxnet.saved_model import load_model
from jaxnet.data import get_CIFAR10_data
from jaxnet.config import TrainConfig
from conftest import REPO

# Configs that learn (the loss falls from 2.93 to about 2.7 at 1e-2 and 1.6 at 3e-2), so that
# a wrong update cannot hide behind a flat loss.
BASE = TrainConfig(hidden_size=8, num_iters=40, batch_size=25, std=1e-2, learning_rate=1e-2)


@pytest.fixture(scope="module")
def fixture_data(cifar_fixture):
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=100)
    return d["X_train"] / 64, d["y_train"], d["X_val"] / 64, d["y_val"]


def assert_matches_solo(result, data, tol, input_transform=None):
    losses = result.history["loss_history"]
    assert np.mean(losses[-5:]) < losses[0] - 0.05, (result.config, losses[0], losses[-5:])
    solo = solver.train(*data, result.config, input_transform=input_transform)
    np.testing.assert_allclose(result.history["loss_history"], solo.history["loss_history"],
                               rtol=0, atol=tol)
    for name in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(result.params[name], solo.params[name], rtol=0, atol=tol)
    assert result.history["val_acc_history"] == pytest.approx(solo.history["val_acc_history"])


def test_sweep_configs_equal_solo_runs_float32(fixture_data):
    configs = sweep.grid(BASE, learning_rate=[1e-2, 3e-2], reg=[0.0, 0.5],
                         batch_size=[25, 10], hidden_size=[8, 5])
    assert len(sweep.group_configs(configs)) == 4
    result = sweep.run_sweep(configs, *fixture_data, keep_params=True)
    assert [r.config for r in result.results] == configs
    assert all(r.status == "ok" for r in result.results)
    for r in result.results:
        assert_matches_solo(r, fixture_data, 1e-5)
    best = result.results[result.best_index]
    assert best.val_acc == max(r.val_acc for r in result.results)
    assert result.best_params["W1"].shape == (3072, best.config.hidden_size)


def test_sweep_configs_equal_solo_runs_float64(fixture_data):
    base = dataclasses.replace(BASE, dtype="float64", optimizer="momentum")
    configs = sweep.grid(base, learning_rate=[1e-2, 3e-2], momentum=[0.5, 0.9])
    result = sweep.run_sweep(configs, *fixture_data, keep_params=True)
    assert result.results[0].params["W1"].dtype == np.float64
    for r in result.results:
        assert_matches_solo(r, fixture_data, 1e-10)


@pytest.mark.parametrize("kind", ["standardize", "pca"])
def test_sweep_with_input_transform_equals_solo_runs(fixture_data, kind):
    """Augmenting groups transform each minibatch in the loop, the others X up front."""
    transform = preprocess.fit(kind, fixture_data[0], k=20)
    arrays = (transform.mean, transform.matrix)
    configs = sweep.grid(BASE, learning_rate=[3e-2, 1e-1], flip=[False, True])
    result = sweep.run_sweep(configs, *fixture_data, keep_params=True, input_transform=arrays)
    assert len(sweep.group_configs(configs)) == 2
    for r in result.results:
        assert r.params["W1"].shape == (transform.output_size, BASE.hidden_size)
        assert_matches_solo(r, fixture_data, 1e-5, input_transform=arrays)
    assert result.best_params["W1"].shape == (transform.output_size, BASE.hidden_size)


def test_sweep_input_transform_shapes_are_checked(fixture_data):
    transform = preprocess.fit("pca", fixture_data[0], k=20)
    with pytest.raises(ValueError, match="input_transform must be"):
        sweep.run_sweep([BASE], *fixture_data, input_transform=(transform.mean[:5],
                                                                 transform.matrix))


def test_memory_estimate_counts_the_transformed_input_size():
    full = sweep.estimate_memory(BASE, 1, 3072, 10, 0)
    reduced = sweep.estimate_memory(BASE, 1, 3072, 10, 0, input_size=20)
    # params, best params and gradients (SGD keeps no slots) of W1, float32
    assert full - reduced == 4 * 3 * (3072 - 20) * BASE.hidden_size
    # the moving average of the weights is one more copy of the params
    averaged = sweep.estimate_memory(dataclasses.replace(BASE, ema=0.99), 1, 3072, 10, 0)
    H = BASE.hidden_size
    assert averaged - full == 4 * (3072 * H + H + H * 10 + 10)


def test_diverging_config_is_marked_and_others_unaffected(fixture_data):
    configs = sweep.grid(BASE, learning_rate=[1e-2, 1e6, 3e-2])
    result = sweep.run_sweep(configs, *fixture_data, keep_params=True)
    assert [r.status for r in result.results] == ["ok", "diverged", "ok"]
    assert result.best_index in (0, 2)
    for i in (0, 2):
        assert_matches_solo(result.results[i], fixture_data, 1e-5)
    table = sweep.results_table(result)
    assert table[-1]["status"] == "diverged" and table[-1]["index"] == 1


def test_memory_budget_splits_a_group_without_changing_results(fixture_data):
    configs = sweep.grid(BASE, learning_rate=[1e-2, 2e-2, 3e-2], reg=[0.0, 0.1])
    data_bytes = sum(np.asarray(a).nbytes for a in fixture_data)
    one = sweep.estimate_memory(BASE, 1, 3072, 10, data_bytes)
    two = sweep.estimate_memory(BASE, 2, 3072, 10, data_bytes)
    assert two > one > data_bytes
    budget = one + (two - one) * 1.5  # room for two configs at a time
    chunks = []
    whole = sweep.run_sweep(configs, *fixture_data, keep_params=True)
    split = sweep.run_sweep(configs, *fixture_data, keep_params=True, max_memory=budget,
                            progress=lambda g, n, done, total: chunks.append(done))
    assert chunks.count(BASE.num_iters) == 3  # six configs, two per chunk
    for a, b in zip(whole.results, split.results):
        np.testing.assert_allclose(a.history["loss_history"], b.history["loss_history"],
                                   atol=1e-6)
    with pytest.raises(ValueError, match="more than max_memory"):
        sweep.run_sweep(configs, *fixture_data, max_memory=data_bytes)


def test_sharded_over_four_devices_equals_one_device(tmp_path, cifar_fixture):
    script = textwrap.dedent(f"""
        import jax, numpy as np
        from jaxnet import sweep
        from jaxnet.data import get_CIFAR10_data
        from jaxnet.config import TrainConfig
        assert len(jax.devices()) == 4
        d = get_CIFAR10_data({str(cifar_fixture)!r}, num_training=150, num_validation=50, num_test=100)
        data = d["X_train"] / 64, d["y_train"], d["X_val"] / 64, d["y_val"]
        configs = sweep.grid(TrainConfig(hidden_size=8, num_iters=30, batch_size=25, std=1e-2),
                             learning_rate=[1e-2, 2e-2, 3e-2], reg=[0.0, 0.5])
        four = sweep.run_sweep(configs, *data, keep_params=True)
        one = sweep.run_sweep(configs, *data, keep_params=True, devices=jax.devices()[:1])
        worst = max(np.max(np.abs(np.array(a.history["loss_history"]) -
                                  np.array(b.history["loss_history"])))
                    for a, b in zip(four.results, one.results))
        worst_w = max(np.max(np.abs(a.params["W1"] - b.params["W1"]))
                      for a, b in zip(four.results, one.results))
        print(worst, worst_w, four.best_index == one.best_index)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    worst, worst_w, same_best = out.stdout.split()
    assert float(worst) < 1e-6 and float(worst_w) < 1e-6 and same_best == "True"


def test_grid_counts_and_order():
    configs = sweep.grid(BASE, learning_rate=[1e-3, 1e-2], reg=[0.1, 0.2, 0.3])
    assert len(configs) == 6
    assert [(c.learning_rate, c.reg) for c in configs[:3]] == [(1e-3, 0.1), (1e-3, 0.2),
                                                               (1e-3, 0.3)]
    assert all(c.hidden_size == BASE.hidden_size for c in configs)


def test_random_configs_ranges_spread_and_seed():
    ranges = {"learning_rate": ("log", 1e-5, 1e-1), "dropout": ("uniform", 0.0, 0.5),
              "hidden_size": ("int", 10, 20), "optimizer": ["sgd", "adam"]}
    configs = sweep.random_configs(2000, ranges, BASE, seed=1)
    lrs = np.array([c.learning_rate for c in configs])
    assert len(configs) == 2000 and lrs.min() >= 1e-5 and lrs.max() <= 1e-1
    # Log-uniform: each decade holds about a quarter of the draws.
    decades = np.histogram(np.log10(lrs), bins=[-5, -4, -3, -2, -1])[0]
    assert np.all(np.abs(decades - 500) < 100), decades
    hidden = [c.hidden_size for c in configs]
    assert min(hidden) == 10 and max(hidden) == 20
    assert {c.optimizer for c in configs} == {"sgd", "adam"}
    assert all(0 <= c.dropout <= 0.5 for c in configs)
    again = sweep.random_configs(2000, ranges, BASE, seed=1)
    assert again == configs
    assert sweep.random_configs(2000, ranges, BASE, seed=2) != configs
    with pytest.raises(ValueError, match="unknown range kind"):
        sweep.random_configs(3, {"reg": ("cubic", 0, 1)})


def run_sweep_script(*args):
    return subprocess.run([sys.executable, "scripts/sweep.py", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_sweep_script_end_to_end(cifar_fixture, tmp_path):
    out = tmp_path / "sweep"
    proc = run_sweep_script("--data-dir", str(cifar_fixture), "--num-training", "150",
                            "--num-validation", "50", "--num-test", "100", "--num-iters", "30",
                            "--batch-size", "25", "--hidden-size", "8", "--lr", "1e-4,1e6",
                            "--reg", "0,0.5", "--std", "1e-3", "--eval-test", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4
    assert [r["status"] for r in rows] == ["ok", "ok", "diverged", "diverged"]
    assert float(rows[0]["val_acc"]) >= float(rows[1]["val_acc"])
    assert len(json.load(open(out / "results.json"))["results"]) == 4
    metrics = json.load(open(out / "best" / "metrics.json"))
    assert {"train_acc", "val_acc", "test_acc", "best_val_acc"} <= set(metrics)
    for name in ("heatmap.png", "best/loss_acc.png", "best/weights.png"):
        with Image.open(out / name) as image:
            image.load()
            pixels = np.asarray(image.convert("RGB"))
        assert image.format == "PNG" and min(pixels.shape[:2]) >= 100, name
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{name} is nearly blank"
    # best/ holds the chosen config's best params: they predict the splits as reported.
    best = rows[0]
    assert json.load(open(out / "best" / "config.json"))["learning_rate"] == 1e-4
    checkpoint = load_model(out / "best" / "params.npz", input_size=3072)
    assert {k: v.shape for k, v in checkpoint.params.items()} == {
        "W1": (3072, 8), "b1": (8,), "W2": (8, 10), "b2": (10,)}
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=100)
    for key, split in (("train_acc", "train"), ("val_acc", "val"), ("test_acc", "test")):
        predicted = np.asarray(model.predict(checkpoint.params, d[f"X_{split}"]))
        assert metrics[key] == np.mean(predicted == d[f"y_{split}"]), key
    assert metrics["val_acc"] == metrics["best_val_acc"] == float(best["val_acc"])
    printed = next(line for line in proc.stdout.splitlines() if line.startswith("best: "))
    assert printed.startswith(f"best: learning_rate=0.0001, reg={best['reg']}: "
                              f"train_acc {metrics['train_acc']:.4f} "
                              f"val_acc {metrics['val_acc']:.4f}")


def test_sweep_script_random_search(tmp_path):
    rng = np.random.RandomState(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, X_train=rng.randn(100, 12), y_train=rng.randint(0, 3, 100),
             X_val=rng.randn(30, 12), y_val=rng.randint(0, 3, 30))
    proc = run_sweep_script("--data", str(npz), "--random", "5", "--lr-range", "1e-3:1e-1",
                            "--num-iters", "20", "--batch-size", "10", "--hidden-size", "4",
                            "--std", "0.1", "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    lrs = [float(r["learning_rate"]) for r in csv.DictReader(open(tmp_path / "r/results.csv"))]
    assert len(lrs) == 5 and all(1e-3 <= lr <= 1e-1 for lr in lrs)


def test_sweep_script_preprocess_grid_saves_a_predict_ready_best(cifar_fixture, tmp_path):
    out = tmp_path / "pre"
    proc = run_sweep_script("--data-dir", str(cifar_fixture), "--num-training", "150",
                            "--num-validation", "50", "--num-test", "100", "--num-iters", "30",
                            "--batch-size", "25", "--hidden-size", "8", "--lr", "1e-4,1e-3",
                            "--reg", "0", "--std", "1e-3", "--preprocess", "standardize,pca",
                            "--pca-components", "20", "--eval-test", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted((r["preprocess"], float(r["learning_rate"])) for r in rows) == [
        ("pca", 1e-4), ("pca", 1e-3), ("standardize", 1e-4), ("standardize", 1e-3)]
    config = json.load(open(out / "best" / "config.json"))
    assert config["preprocess"] == rows[0]["preprocess"]
    classifier = preprocess.load_classifier(out / "best" / "params.npz")
    assert classifier.transform.kind == config["preprocess"]
    assert classifier.params["W1"].shape == (classifier.transform.output_size, 8)
    metrics = json.load(open(out / "best" / "metrics.json"))
    # Measured on the preprocessed splits, the best params give the accuracy they were chosen by.
    assert metrics["val_acc"] == metrics["best_val_acc"] == float(rows[0]["val_acc"])
    raw = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=100,
                           subtract_mean=False)
    predicted = classifier.probabilities(raw["X_test"]).argmax(axis=1)
    assert np.mean(predicted == raw["y_test"]) == pytest.approx(metrics["test_acc"])
    assert f"preprocess={config['preprocess']}" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--lr", "abc"], "cannot parse"),
    (["--batch-size", "0"], "batch_size must be an integer in [1, 2**31)"),
    (["--random", "3"], "needs at least one --NAME-range"),
    (["--dropout-range", "0:0.5"], "need --random N"),
    (["--random", "3", "--lr-range", "1e-2:1e-4"], "LOW <= HIGH"),
    (["--optimizer", "foo"], "optimizer must be one of"),
    (["--bogus"], "unrecognized arguments"),
    (["--preprocess", "none,whiten"], "--preprocess takes a comma-separated list of"),
])
def test_sweep_script_bad_flags_one_line(args, message, tmp_path):
    proc = run_sweep_script(*args, "--data", str(tmp_path / "missing.npz"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
