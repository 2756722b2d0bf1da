"""scripts/predict.py end to end: PNGs written from fixture arrays are classified exactly as
the model classifies the same arrays in memory; bad inputs give one line and exit status 2."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxnet import model, preprocess, solver
from jaxnet.config import TrainConfig
from jaxnet.saved_model import save_model
from jaxnet.data import get_CIFAR10_data
from conftest import REPO

PREDICT = REPO / "scripts" / "predict.py"


def run_predict(*args):
    return subprocess.run([sys.executable, str(PREDICT), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.fixture(scope="module")
def trained(cifar_fixture, tmp_path_factory):
    """A small network trained on PCA-whitened fixture data, saved as train.py would save it."""
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=12)
    transform = preprocess.fit_pca(d["X_train"], 40, whiten=True, eps=1.0)
    data = preprocess.apply_to_splits(d, transform)
    config = TrainConfig(hidden_size=16, num_iters=60, batch_size=50, optimizer="adam",
                                learning_rate=1e-2, std=1e-2, reg=0.0)
    params = solver.train(data["X_train"], d["y_train"], data["X_val"], d["y_val"],
                          config).params
    path = tmp_path_factory.mktemp("model") / "params.npz"
    save_model(path, params, {"hidden_size": 16},
                    extra={"mean_image": d["mean_image"], **transform.to_arrays()})
    folder = tmp_path_factory.mktemp("pngs")
    raw = np.rint(d["X_test"] + d["mean_image"]).astype(np.uint8).reshape(-1, 32, 32, 3)
    files = []
    for i, image in enumerate(raw):
        files.append(folder / f"img{i}.png")
        Image.fromarray(image).save(files[-1])
    scores = np.asarray(model.scores(params, data["X_test"]))
    return path, files, raw, scores, params


def test_load_classifier_matches_in_memory_model(trained):
    path, _, raw, scores, _ = trained
    classifier = preprocess.load_classifier(path)
    assert classifier.transform.kind == "pca" and classifier.params["W1"].shape == (40, 16)
    probabilities = classifier.probabilities(raw)
    np.testing.assert_allclose(probabilities, np.asarray(jax.nn.softmax(scores, axis=1)),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(probabilities.argmax(1), scores.argmax(1))


def test_predict_script_matches_in_memory_predictions(trained):
    path, files, _, scores, _ = trained
    proc = run_predict(path, *files)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(files)
    probabilities = np.asarray(jax.nn.softmax(scores, axis=1))
    for line, file, p in zip(lines, files, probabilities):
        name, rest = line.split(": ", 1)
        assert name == str(file)
        top = [item.rsplit(" ", 1) for item in rest.split(", ")]
        assert len(top) == 3
        expected = np.argsort(-p, kind="stable")[:3]
        assert [c for c, _ in top] == [preprocess.CLASS_NAMES[i] for i in expected]
        np.testing.assert_allclose([float(v) for _, v in top], p[expected], atol=6e-4)


def test_read_image_resizes_and_converts(trained, tmp_path):
    path, files, raw, _, _ = trained
    np.testing.assert_array_equal(preprocess.read_image(files[0]), raw[0])   # PNG: lossless
    big = tmp_path / "big.jpg"
    Image.open(files[0]).convert("L").resize((64, 48)).save(big)
    image = preprocess.read_image(big)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], image[..., 2])            # grey -> RGB
    p = preprocess.load_classifier(path).probabilities(image[None])
    assert p.shape == (1, 10) and abs(p.sum() - 1) < 1e-5


def one_line_error(proc, *words):
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_unreadable_image_is_one_line_exit_2(trained, tmp_path):
    path, files, _, _, _ = trained
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    one_line_error(run_predict(path, files[0], bad), "notes.png", "not a readable image")
    with pytest.raises(ValueError, match="missing.png"):
        preprocess.read_image(tmp_path / "missing.png")


def test_mismatched_checkpoint_is_one_line_exit_2(trained, tmp_path):
    path, files, _, _, params = trained
    wrong = tmp_path / "wrong.npz"          # W1 takes 40 inputs, the saved preprocessing none
    save_model(wrong, params, extra={"mean_image": np.zeros(3072, np.float32)})
    one_line_error(run_predict(wrong, files[0]), "W1 takes 40 inputs")


def test_load_classifier_refuses_what_does_not_fit(trained, tmp_path):
    path, _, _, _, params = trained
    no_mean = tmp_path / "no_mean.npz"
    save_model(no_mean, params)
    with pytest.raises(ValueError, match="no mean_image"):
        preprocess.load_classifier(no_mean)
    small = tmp_path / "small.npz"
    save_model(small, params, extra={"mean_image": np.zeros(40, np.float32)})
    with pytest.raises(ValueError, match=r"needs \(3072,\)"):
        preprocess.load_classifier(small)
    with pytest.raises(ValueError, match="expected 4"):
        preprocess.load_classifier(path, class_names=("a", "b", "c", "d"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK junk")
    with pytest.raises(ValueError, match="garbage.npz"):
        preprocess.load_classifier(garbage)
    with pytest.raises(FileNotFoundError, match="none.npz"):
        preprocess.load_classifier(tmp_path / "none.npz")
