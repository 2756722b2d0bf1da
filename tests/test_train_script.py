"""scripts/train.py end to end on a CIFAR-10 fixture and on an .npz, and its one-line errors."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from jaxnet import model, solver
from jaxnet.saved_model import load_model
from jaxnet.data import get_CIFAR10_data
from jaxnet.config import TrainConfig

SCRIPT = REPO / "scripts" / "train.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL_SPLITS = ["--num-training", "150", "--num-validation", "50", "--num-test", "100"]


def run_train(*args, timeout=120):
    # An unreachable mirror with a dummy checksum: nothing here may touch the network.
    env = {**os.environ, "JAXNET_CIFAR10_URL": "http://127.0.0.1:9/x.tar.gz",
           "JAXNET_CIFAR10_MD5": "0" * 32}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def check_png(path):
    """A PNG that decodes to a picture with some content."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] >= 100 and pixels.shape[1] >= 100, (path, pixels.shape)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{path} is nearly blank"


def test_train_script_end_to_end_on_cifar10(cifar_fixture, tmp_path):
    out = tmp_path / "run"
    proc = run_train("--data-dir", cifar_fixture, *SMALL_SPLITS, "--num-iters", 30,
                     "--batch-size", 20, "--hidden-size", 10, "--eval-test", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"run saved in {out}/" in proc.stdout
    assert sorted(os.listdir(out)) == ["COMPLETE", "config.json", "history.json", "loss_acc.png",
                                       "metrics.json", "params.npz", "weights.png"]

    config = json.loads((out / "config.json").read_text())
    assert (config["num_iters"], config["batch_size"], config["hidden_size"]) == (30, 20, 10)
    assert config["learning_rate"] == 1e-4 and config["optimizer"] == "sgd"

    history = json.loads((out / "history.json").read_text())
    assert len(history["loss_history"]) == 30
    assert all(np.isfinite(history["loss_history"]))
    assert history["loss_history"][0] == pytest.approx(np.log(10), abs=0.05)  # std 1e-4 init
    # 150 images, batch 20: iterations_per_epoch = 7.5, so epochs end at 0 and 15.
    assert len(history["val_acc_history"]) == len(history["train_acc_history"]) == 2

    metrics = json.loads((out / "metrics.json").read_text())
    assert {"train_acc", "val_acc", "test_acc", "test_acc_full", "final_val_acc", "wall_s",
            "device"} <= set(metrics)
    # The printed summary is the metrics file, to its printed precision.
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("train_acc "))
    accs, _, tail = summary.partition("  (")
    words = accs.split()
    assert dict(zip(words[::2], map(float, words[1::2]))) == {
        k: float(f"{v:.4f}") for k, v in metrics.items() if "_acc" in k}
    assert tail == f"{metrics['wall_s']:.1f} s on {metrics['device']})"

    # The saved params are the best validated ones (each epoch end and the last step), and
    # they give the metrics when they predict the same splits again.
    ckpt = load_model(out / "params.npz", input_size=3072)
    assert {k: v.shape for k, v in ckpt.params.items()} == {
        "W1": (3072, 10), "b1": (10,), "W2": (10, 10), "b2": (10,)}
    assert ckpt.config == config and ckpt.history == history
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=None)
    np.testing.assert_array_equal(ckpt.extra["mean_image"], d["mean_image"])
    for key, split, size in (("train_acc", "train", None), ("val_acc", "val", None),
                             ("test_acc", "test", 100), ("test_acc_full", "test", None)):
        X, y = d[f"X_{split}"][:size], d[f"y_{split}"][:size]
        assert metrics[key] == np.mean(np.asarray(model.predict(ckpt.params, X)) == y), key
    assert metrics["final_val_acc"] == history["val_acc_history"][-1]
    assert metrics["val_acc"] >= max(history["val_acc_history"])
    check_png(out / "loss_acc.png")
    check_png(out / "weights.png")


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.RandomState(0)
    centers = 3 * rng.randn(4, 20)

    def split(n):
        y = rng.randint(0, 4, n)
        return (centers[y] + rng.randn(n, 20)).astype(np.float32), y

    (X_train, y_train), (X_val, y_val), (X_test, y_test) = split(120), split(40), split(40)
    path = tmp_path / "small.npz"
    np.savez(path, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val,
             X_test=X_test, y_test=y_test)
    return path


# The best preset as the README documents it.
BEST_PRESET = {"hidden_size": 2000, "num_iters": 36751, "batch_size": 200,
               "learning_rate": 8.021969575436478e-4, "reg": 0.0, "optimizer": "adam",
               "schedule": "cosine", "warmup_iters": 0, "dropout": 0.22492512060101696,
               "flip": True, "translate": 2, "mixup": 0.0, "label_smoothing": 0.0,
               "ema": 0.0, "seed": 0, "dtype": "float32", "preprocess": "standardize"}


def test_best_preset_resolves_to_the_documented_settings(cifar_fixture, tmp_path):
    out = tmp_path / "best"
    proc = run_train("--preset", "best", "--num-iters", 3, "--data-dir", cifar_fixture,
                     *SMALL_SPLITS, "--out", out)
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert {key: config[key] for key in BEST_PRESET} == {**BEST_PRESET, "num_iters": 3}
    # compute_dtype "auto": the run folder holds the precision chosen on this machine.
    assert config["compute_dtype"] in ("float32", "bfloat16")
    assert (f"compute dtype auto for hidden 2000, batch 200: {config['compute_dtype']} ("
            in proc.stdout)
    checkpoint = np.load(out / "params.npz")
    assert checkpoint["W1"].shape == (3072, 2000)
    # Standardization travels with the checkpoint: one scale per pixel, three distinct values.
    assert checkpoint["extra/preprocess_kind"] == "standardize"
    assert len(np.unique(checkpoint["extra/preprocess_matrix"])) == 3
    overridden = run_train("--preset", "best", "--num-iters", 3, "--preprocess", "none",
                           "--hidden-size", 8, "--data-dir", cifar_fixture, *SMALL_SPLITS,
                           "--out", tmp_path / "plain")
    assert overridden.returncode == 0, overridden.stderr
    plain = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert (plain["preprocess"], plain["hidden_size"], plain["dropout"]) == \
        ("none", 8, BEST_PRESET["dropout"])


def test_train_script_on_an_npz(small_npz, tmp_path):
    out = tmp_path / "npzrun"
    proc = run_train("--data", small_npz, "--num-iters", 40, "--batch-size", 20,
                     "--hidden-size", 8, "--learning-rate", 0.1, "--std", 0.01, "--reg", 0.001,
                     "--optimizer", "momentum", "--eval-test", "--out", out)
    assert proc.returncode == 0, proc.stderr
    # Not 32x32x3 images: no weights.png.
    assert sorted(os.listdir(out)) == ["COMPLETE", "config.json", "history.json", "loss_acc.png",
                                       "metrics.json", "params.npz"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] >= 0.9 and metrics["test_acc"] >= 0.9  # well-separated blobs
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss_history"]) == 40
    ckpt = load_model(out / "params.npz", input_size=20)
    assert ckpt.params["W2"].shape == (8, 4)
    assert ckpt.config["optimizer"] == "momentum"
    check_png(out / "loss_acc.png")
    # The saved params are the run's best validated params, not its last ones.
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in ckpt.config.items() if k in fields})
    d = np.load(small_npz)
    again = solver.train(d["X_train"], d["y_train"], d["X_val"], d["y_val"], config)
    assert again.history["loss_history"] == pytest.approx(history["loss_history"], abs=1e-6)
    assert not np.allclose(again.best_params["W1"], again.params["W1"], atol=1e-3)
    for name in ckpt.params:
        np.testing.assert_allclose(ckpt.params[name], again.best_params[name], atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "batch_size must be an integer in [1, 2**31); got 0"),
    (["--optimizer", "foo"], "optimizer must be one of sgd, momentum, nesterov, adam, adamw"),
    (["--learning-rate", "abc"], "argument --learning-rate: invalid float value: 'abc'"),
    (["--learning-rate", "-1"], "learning_rate must be finite and >= 0; got -1.0"),
])
def test_bad_flags_give_one_line_and_status_2(cifar_fixture, tmp_path, flags, message):
    out = tmp_path / "never"
    proc = run_train("--data-dir", cifar_fixture, *SMALL_SPLITS, "--num-iters", 3,
                     "--out", out, *flags)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error: " in lines[0] and message in lines[0]
    assert proc.stdout == ""
    assert not out.exists()


def test_missing_dataset_gives_one_error_line_and_status_2(tmp_path):
    root = tmp_path / "nonexistent" / "x"
    proc = run_train("--data-dir", root, "--out", tmp_path / "never", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) <= 2, proc.stderr  # the "downloading" notice, then the error
    assert lines[-1].startswith("error: ")
    assert "http://127.0.0.1:9/x.tar.gz" in lines[-1]
    assert "scripts/get_cifar10.py" in lines[-1]  # says how to get the data
    assert not (tmp_path / "never").exists()
    assert not (root / "cifar-10-batches-py").exists()


def test_missing_npz_is_a_one_line_error(tmp_path):
    proc = run_train("--data", tmp_path / "absent.npz", "--out", tmp_path / "never")
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "absent.npz" in proc.stderr


def test_augmenting_rows_that_are_not_images_is_a_one_line_error(small_npz, tmp_path):
    # --flip needs 32x32x3 image rows; the .npz holds 20 features per row.
    proc = run_train("--data", small_npz, "--num-iters", 3, "--batch-size", 10, "--flip", 1,
                     "--out", tmp_path / "never")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert "3072" in proc.stderr
