"""Checkpoints (atomic save, round trip, clear errors on bad files) and the PNG figures."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxnet import files, saved_model
from jaxnet.saved_model import load_model, save_model
from jaxnet.plots import most_varied, plot_heatmap, plot_history, plot_weights, visualize_grid

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_params(D=12, H=4, C=3, dtype=np.float32, seed=0):
    rng = np.random.RandomState(seed)
    return {"W1": rng.randn(D, H).astype(dtype), "b1": rng.randn(H).astype(dtype),
            "W2": rng.randn(H, C).astype(dtype), "b2": rng.randn(C).astype(dtype)}


def files_in(folder):
    return sorted(os.listdir(folder))


# ----------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checkpoint_round_trip(tmp_path, dtype):
    params = make_params(dtype=dtype)
    config = {"hidden_size": 4, "learning_rate": 1e-3, "optimizer": "adam", "flip": True}
    history = {"loss_history": [2.3, 1.25, 0.5], "train_acc_history": [0.1, 0.5],
               "val_acc_history": [0.125, 0.375]}
    extra = {"mean_image": np.arange(12, dtype=np.float32) / 7, "kind": np.array("pca"),
             "counts": np.array([[1, 2], [3, 4]], np.int64)}
    path = save_model(tmp_path / "sub" / "ckpt.npz", params, config, history, extra)
    assert path == tmp_path / "sub" / "ckpt.npz"
    assert files_in(tmp_path / "sub") == ["ckpt.npz"]  # no temporary file left beside it

    loaded = load_model(path, input_size=12)
    assert set(loaded.params) == {"W1", "b1", "W2", "b2"}
    for name, value in params.items():
        assert loaded.params[name].dtype == dtype
        np.testing.assert_array_equal(loaded.params[name], value)
    assert loaded.config == config
    assert loaded.history == history
    assert set(loaded.extra) == {"mean_image", "kind", "counts"}
    np.testing.assert_array_equal(loaded.extra["mean_image"], extra["mean_image"])
    assert loaded.extra["mean_image"].dtype == np.float32
    assert str(loaded.extra["kind"]) == "pca"
    np.testing.assert_array_equal(loaded.extra["counts"], extra["counts"])
    # A plain npz: readable without jaxnet and without pickles.
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(str(raw["meta"]))["format"] == saved_model.FORMAT


def test_checkpoint_defaults_numpy_values_and_overwrite(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_model(path, make_params(seed=1))
    loaded = load_model(path)
    assert loaded.config == {} and loaded.history == {} and loaded.extra == {}
    # Histories of numpy scalars (e.g. float32 losses of the numpy reference) are fine.
    history = {"loss_history": [np.float32(0.5), np.float64(0.25)], "n": np.int64(3),
               "acc": np.array([0.5, 0.75])}
    save_model(path, make_params(seed=2), history=history)
    loaded = load_model(path)
    assert loaded.history == {"loss_history": [0.5, 0.25], "n": 3, "acc": [0.5, 0.75]}
    np.testing.assert_array_equal(loaded.params["W1"], make_params(seed=2)["W1"])
    assert files_in(tmp_path) == ["ckpt.npz"]


def test_saved_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_model(tmp_path / "ckpt.npz", make_params())
        plot_history({"loss_history": [1.0, 0.5], "train_acc_history": [0.1],
                      "val_acc_history": [0.2]}, tmp_path / "h.png")
    finally:
        os.umask(old)
    for name in ("ckpt.npz", "h.png"):
        # mkstemp makes private 0o600 files; a run folder must be readable like any file.
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ----------------------------------------------------------------------------- bad files

@pytest.fixture
def saved(tmp_path):
    path = save_model(tmp_path / "good.npz", make_params(), {"a": 1}, {"loss_history": [1.0]})
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, -1])
def test_truncated_checkpoint(tmp_path, saved, cut):
    _, raw = saved
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(raw[:len(raw) - 1] if cut == -1 else raw[:int(len(raw) * cut)])
    with pytest.raises(ValueError, match=r"truncated.npz is not a readable jaxnet checkpoint"):
        load_model(bad)


def test_corrupted_checkpoint(tmp_path, saved):
    _, raw = saved
    corrupted = bytearray(raw)
    corrupted[len(raw) // 3: len(raw) // 3 + 64] = b"\xa5" * 64  # inside the array data
    bad = tmp_path / "corrupted.npz"
    bad.write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match=r"corrupted.npz is not a readable jaxnet checkpoint"):
        load_model(bad)


def test_files_that_are_not_npz(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("these are not the weights you are looking for\n")
    with pytest.raises(ValueError, match=r"notes.npz is not a readable jaxnet checkpoint.*npz"):
        load_model(text)
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:
        np.save(f, np.arange(5.0))
    with pytest.raises(ValueError, match=r"array.npz is not a readable jaxnet checkpoint"):
        load_model(npy)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_model(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path)  # a folder


def test_npz_missing_w2(tmp_path):
    params = make_params()
    del params["W2"]
    path = tmp_path / "nw2.npz"
    np.savez(path, meta=np.array(json.dumps({"format": saved_model.FORMAT})), **params)
    with pytest.raises(ValueError, match=r"not a jaxnet checkpoint: missing W2$"):
        load_model(path)
    np.savez(path, **make_params())
    with pytest.raises(ValueError, match=r"missing meta"):
        load_model(path)


@pytest.mark.parametrize("meta, message", [
    ("{not json", "metadata is corrupted"),
    (json.dumps({"format": "something-else"}), "unknown checkpoint format 'something-else'"),
    (json.dumps([1, 2]), "unknown checkpoint format"),
    ("5", "unknown checkpoint format 5"),
])
def test_bad_metadata(tmp_path, meta, message):
    path = tmp_path / "meta.npz"
    np.savez(path, meta=np.array(meta), **make_params())
    with pytest.raises(ValueError, match=message):
        load_model(path)


def test_metadata_without_config_or_history_loads(tmp_path):
    path = tmp_path / "bare.npz"
    np.savez(path, meta=np.array(json.dumps({"format": saved_model.FORMAT})), **make_params())
    loaded = load_model(path)
    assert loaded.config == {} and loaded.history == {}


@pytest.mark.parametrize("change, message", [
    ({"W2": np.zeros((5, 3), np.float32)}, r"params shapes do not fit together.*W2 \(5, 3\)"),
    ({"b1": np.zeros(3, np.float32)}, r"params shapes do not fit together.*b1 \(3,\)"),
    ({"b2": np.zeros(4, np.float32)}, r"params shapes do not fit together"),
    ({"W1": np.zeros(12, np.float32)}, r"params W1 and W2 must be 2-D.*\(12,\)"),
    ({"W1": np.full((12, 4), "x")}, r"params W1 must hold real numbers; got dtype <U1"),
])
def test_mismatched_params(tmp_path, change, message):
    path = tmp_path / "shapes.npz"
    params = {**make_params(), **change}
    np.savez(path, meta=np.array(json.dumps({"format": saved_model.FORMAT})), **params)
    with pytest.raises(ValueError, match=r"shapes.npz: " + message):
        load_model(path)


def test_input_size_mismatch(saved):
    path, _ = saved
    with pytest.raises(ValueError, match=r"good.npz: params expect 12 input features, got 3072"):
        load_model(path, input_size=3072)
    assert load_model(path, input_size=12).params["W1"].shape == (12, 4)


# ----------------------------------------------------------------------------- failed saves

def test_unconvertible_extra_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"extra/transform cannot be saved"):
        save_model(tmp_path / "c.npz", make_params(), extra={"transform": {"a": 1}})
    with pytest.raises(ValueError, match=r"extra/ragged cannot be saved"):
        save_model(tmp_path / "c.npz", make_params(),
                        extra={"ragged": np.array([np.zeros(2), np.zeros(3)], dtype=object)})
    with pytest.raises(ValueError, match=r"JSON"):
        save_model(tmp_path / "c.npz", make_params(), config={"fn": print})
    with pytest.raises(ValueError, match="params is missing"):
        save_model(tmp_path / "c.npz", {"W1": np.zeros((2, 2))})
    assert files_in(tmp_path) == []


def test_failure_while_writing_leaves_no_temp_file_and_keeps_the_old_checkpoint(
        tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_model(path, make_params(seed=1))
    old_bytes = path.read_bytes()

    def broken_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, make_params(seed=2))
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "new.npz", make_params(seed=2))
    assert files_in(tmp_path) == ["c.npz"]
    assert path.read_bytes() == old_bytes


def test_interrupted_write_is_cleaned_up(tmp_path):
    def write(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(tmp_path / "out.bin", write)
    assert files_in(tmp_path) == []


# ----------------------------------------------------------------------------- plots

def check_png(path, min_size=(100, 100)):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= min_size[0] and height >= min_size[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.min() < pixels.max()  # something was drawn
    return width, height


def test_plot_history_writes_a_png(tmp_path):
    history = {"loss_history": list(np.linspace(2.3, 1.0, 50)),
               "train_acc_history": [0.1, 0.2, 0.3], "val_acc_history": [0.1, 0.15, 0.25]}
    path = plot_history(history, tmp_path / "loss_acc.png")
    assert path == tmp_path / "loss_acc.png"
    assert check_png(path) == (800, 700)  # figsize (8, 7) at 100 dpi
    assert files_in(tmp_path) == ["loss_acc.png"]


def test_plot_weights_writes_a_png(tmp_path):
    W1 = np.random.RandomState(0).randn(3072, 10).astype(np.float32)
    path = plot_weights(W1, tmp_path / "weights.png")
    assert check_png(path) == (600, 600)
    with pytest.raises(ValueError, match=r"W1 has 20 rows"):
        plot_weights(np.zeros((20, 4)), tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_visualize_grid_layout_and_scaling():
    rng = np.random.RandomState(0)
    Xs = rng.randn(50, 32, 32, 3) * 7 + 3
    grid = visualize_grid(Xs, padding=1)
    assert grid.shape == (8 * 33 - 1, 8 * 33 - 1, 3)
    for i in range(50):
        r, c = divmod(i, 8)
        tile = grid[r * 33:r * 33 + 32, c * 33:c * 33 + 32]
        assert tile.min() == pytest.approx(0.0, abs=1e-9) and tile.max() == pytest.approx(255.0)
        expected = 255 * (Xs[i] - Xs[i].min()) / (Xs[i].max() - Xs[i].min())
        np.testing.assert_allclose(tile, expected, atol=1e-9)
    # Padding rows and columns, and the 14 unused tiles, stay zero.
    assert np.all(grid[32::33] == 0) and np.all(grid[:, 32::33] == 0)
    assert np.all(grid[6 * 33:, 2 * 33:] == 0)
    assert visualize_grid(Xs[:1], padding=3).shape == (32, 32, 3)
    assert visualize_grid(Xs[:5], padding=3).shape == (3 * 35 - 3, 3 * 35 - 3, 3)


def test_visualize_grid_integer_and_constant_images():
    # int8 pixels would wrap around in img - low (127 - (-128) overflows).
    Xs = np.array([[[[-128]], [[127]]]], np.int8).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(visualize_grid(Xs, padding=0).ravel(), [0, 255])
    flat = visualize_grid(np.full((4, 3, 3, 3), 7.0))
    assert flat.shape == (7, 7, 3) and np.all(flat == 0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        visualize_grid(np.zeros((0, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        visualize_grid(np.zeros((32, 32, 3)))


def test_heatmap_axes_include_preprocessing_when_it_varies(tmp_path):
    rows = [{"learning_rate": lr, "reg": 0.25, "preprocess": kind, "val_acc": 0.1 * i}
            for i, (lr, kind) in enumerate((lr, kind) for lr in (1e-4, 1e-3, 1e-2)
                                           for kind in ("none", "zca"))]
    assert most_varied(rows, ("learning_rate", "reg", "preprocess")) == \
        ["learning_rate", "preprocess"]
    # Rows of a sweep without --preprocess have no such column.
    plain = [{k: v for k, v in r.items() if k != "preprocess"} for r in rows]
    assert most_varied(plain, ("learning_rate", "reg", "preprocess")) == ["learning_rate"]
    path = plot_heatmap(rows, tmp_path / "heatmap.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
