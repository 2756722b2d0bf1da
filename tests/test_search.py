"""Searching over preprocessing and the staged search: seeded draws, narrowing, per-kind
sweeps, and scripts/search.py end to end on the CIFAR-10 fixture."""
import csv
import dataclasses
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest

from jaxnet import preprocess, search, sweep
from jaxnet.data import get_CIFAR10_data
from jaxnet.config import PRESETS, TrainConfig
from conftest import REPO

SMALL = TrainConfig(hidden_size=8, num_iters=30, batch_size=25, std=1e-3)
SPLITS = ["--num-training", "150", "--num-validation", "50", "--num-test", "40"]
# Every stage tiny: 150 images in batches of 25 make an epoch 6 iterations.
TINY_STAGES = ["--batch-size", "25", "--coarse", "3", "--coarse-hidden", "8",
               "--coarse-epochs", "1", "--top", "2", "--narrow", "2", "--narrow-hidden", "8",
               "--narrow-epochs", "1", "--final-hidden", "8", "--final-epochs", "2",
               "--final-lr-scales", "1,0.5", "--translate-range", "0:1"]


@pytest.fixture(scope="module")
def dataset(cifar_fixture):
    d = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=40)
    return {name: a / 64 if name.startswith("X_") else a for name, a in d.items()}


def run_search_script(*args):
    return subprocess.run([sys.executable, "scripts/search.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def read_rows(path):
    return list(csv.DictReader(open(path)))


def test_random_preprocessed_is_seeded_and_leaves_the_configs_as_they_were():
    ranges = {"learning_rate": ("log", 1e-4, 1e-2), "translate": ("int", 0, 2)}
    with_kinds = {**ranges, "preprocess": ["none", "standardize", "zca"]}
    configs, kinds = search.random_preprocessed(60, with_kinds, SMALL, seed=4)
    assert search.random_preprocessed(60, with_kinds, SMALL, seed=4) == (configs, kinds)
    assert set(kinds) == {"none", "standardize", "zca"}
    assert configs == sweep.random_configs(60, ranges, SMALL, seed=4)
    assert search.random_preprocessed(60, with_kinds, SMALL, seed=5)[1] != kinds


def row(learning_rate, dropout, translate, kind, val_acc, status="ok"):
    return {"learning_rate": learning_rate, "dropout": dropout, "translate": translate,
            "preprocess": kind, "val_acc": val_acc, "status": status}


ROWS = [row(2e-4, 0.35, 1, "none", 0.55), row(8e-4, 0.05, 0, "standardize", 0.54),
        row(1e-4, 0.2, 1, "none", 0.53), row(3e-3, 0.85, 2, "zca", 0.40),
        row(1e6, 0.1, 2, "pca", 0.0, "diverged")]


def test_narrow_ranges_span_the_top_rows():
    ranges = search.narrow_ranges(ROWS, 3)
    assert ranges["learning_rate"] == ("log", pytest.approx(5e-5), pytest.approx(1.6e-3))
    assert ranges["dropout"] == ("uniform", 0.0, pytest.approx(0.45))   # 0.05 - 0.1 -> 0
    assert ranges["translate"] == [0, 1]
    assert ranges["preprocess"] == ["none", "standardize"]
    assert list(ranges) == ["learning_rate", "dropout", "translate", "preprocess"]


def test_narrow_ranges_clip_dropout_and_skip_diverged_rows():
    ranges = search.narrow_ranges(ROWS, 10)
    assert ranges["learning_rate"] == ("log", pytest.approx(5e-5), pytest.approx(6e-3))
    assert ranges["dropout"] == ("uniform", 0.0, search.MAX_DROPOUT)   # 0.85 + 0.1 -> 0.9
    assert ranges["translate"] == [0, 1, 2]
    assert "pca" not in ranges["preprocess"]
    with pytest.raises(ValueError, match="every config diverged"):
        search.narrow_ranges(ROWS[-1:], 4)


def test_iterations_per_epoch_budget():
    assert search.iterations(5, 49000, 200) == 1226
    assert search.iterations(10, 49000, 200) == 2451
    assert search.iterations(50, 49000, 200) == 12251
    assert search.iterations(150, 49000, 200) == PRESETS["best"].num_iters == 36751
    assert search.iterations(1, 150, 25) == 7


def test_train_command_lists_what_differs_from_the_best_preset():
    plan = search.SearchPlan(whiten_eps=0.1)
    # num_iters always: without it the preset's time budget would set the length.
    assert search.train_command(PRESETS["best"], "standardize", plan) == \
        "python scripts/train.py --preset best --num-iters 36751 --eval-test"
    assert search.train_command(PRESETS["best"], "none", plan) == \
        "python scripts/train.py --preset best --num-iters 36751 --preprocess none --eval-test"
    config = dataclasses.replace(PRESETS["best"], learning_rate=3.3e-05, translate=3, flip=False)
    command = search.train_command(config, "zca", plan, ["--data-dir", "my data"])
    assert command == ("python scripts/train.py --preset best --num-iters 36751 "
                       "--learning-rate 3.3e-05 "
                       "--flip 0 --translate 3 --preprocess zca --whiten-eps 0.1 --eval-test "
                       "--data-dir 'my data'")
    assert "--pca-components 400" in search.train_command(config, "pca", plan)


def test_sweep_preprocessed_equals_one_sweep_per_kind(dataset):
    configs = sweep.grid(SMALL, learning_rate=[1e-4, 1e-3], reg=[0.0, 0.1])
    kinds = ["standardize", "none", "none", "standardize"]
    transforms = search.fit_transforms(kinds, dataset["X_train"])
    assert transforms["none"] is None and transforms["standardize"].kind == "standardize"
    reports = []
    merged = search.sweep_preprocessed(configs, kinds, dataset, transforms, keep_params=True,
                                       progress=lambda g, n, done, total: reports.append((g, n)))
    assert sorted(set(reports)) == [(0, 2), (1, 2)]   # groups numbered across the kinds
    t = transforms["standardize"]
    for kind, indices, transform in [("none", [1, 2], None),
                                     ("standardize", [0, 3], (t.mean, t.matrix))]:
        alone = sweep.run_sweep([configs[i] for i in indices], dataset["X_train"],
                                dataset["y_train"], dataset["X_val"], dataset["y_val"],
                                keep_params=True, input_transform=transform)
        for i, r in zip(indices, alone.results):
            assert merged.results[i].config == configs[i]
            np.testing.assert_array_equal(merged.results[i].params["W1"], r.params["W1"])
    best = merged.results[merged.best_index]
    assert best.val_acc == max(r.val_acc for r in merged.results)
    table = sweep.results_table(merged, kinds)
    assert [r["preprocess"] for r in table] == [kinds[r["index"]] for r in table]
    with pytest.raises(ValueError, match="one preprocessing kind per config"):
        search.sweep_preprocessed(configs, kinds[:2], dataset, transforms)
    with pytest.raises(ValueError, match="no fitted transform for zca"):
        search.sweep_preprocessed(configs[:1], ["zca"], dataset, transforms)


def test_search_script_end_to_end(cifar_fixture, tmp_path):
    out = tmp_path / "search"
    proc = run_search_script("--data-dir", cifar_fixture, *SPLITS, *TINY_STAGES,
                             "--preprocess", "none,standardize,pca", "--pca-components", 20,
                             "--out", out)
    assert proc.returncode == 0, proc.stderr
    coarse, narrow, final = (read_rows(out / stage / "results.csv")
                             for stage in ("coarse", "narrow", "final"))
    assert (len(coarse), len(narrow), len(final)) == (3, 2, 2)
    assert all(r["preprocess"] in ("none", "standardize", "pca") for r in coarse)
    assert {(r["hidden_size"], r["num_iters"]) for r in coarse + narrow} == {("8", "7")}

    # The narrow stage draws inside the ranges of the coarse stage's top 2.
    coarse_json = json.load(open(out / "coarse" / "results.json"))["results"]
    ranges = search.narrow_ranges(coarse_json, 2)
    for r in narrow:
        assert ranges["learning_rate"][1] <= float(r["learning_rate"]) <= ranges["learning_rate"][2]
        assert ranges["dropout"][1] <= float(r["dropout"]) <= ranges["dropout"][2]
        assert int(r["translate"]) in ranges["translate"]
        assert r["preprocess"] in ranges["preprocess"]

    # The final stage: the narrow winner, longer and wider, at each learning-rate scale.
    winner = narrow[0]
    assert sorted(float(r["learning_rate"]) for r in final) == pytest.approx(
        sorted(float(winner["learning_rate"]) * s for s in (1, 0.5)))
    assert {(r["hidden_size"], r["num_iters"], r["preprocess"], r["dropout"]) for r in final} \
        == {("8", "13", winner["preprocess"], winner["dropout"])}

    summary = json.load(open(out / "summary.json"))
    assert [s["name"] for s in summary["stages"]] == ["coarse", "narrow", "final"]
    assert summary["stages"][0]["ranges"]["learning_rate"] == {"log": [5e-05, 0.003]}
    assert summary["stages"][1]["ranges"]["preprocess"] == {"choice": ranges["preprocess"]}
    assert [len(s["top"]) for s in summary["stages"]] == [2, 2, 2]

    metrics = json.load(open(out / "best" / "metrics.json"))
    assert {"train_acc", "val_acc", "test_acc", "test_acc_full", "best_val_acc"} <= set(metrics)
    assert metrics["val_acc"] == metrics["best_val_acc"] == float(final[0]["val_acc"])
    config = json.load(open(out / "best" / "config.json"))
    assert config["preprocess"] == final[0]["preprocess"] == summary["best"]["preprocess"]
    classifier = preprocess.load_classifier(out / "best" / "params.npz")
    assert (classifier.transform is None) == (config["preprocess"] == "none")
    # test_acc is measured on the first --num-test (40) test images, test_acc_full on all.
    raw = get_CIFAR10_data(cifar_fixture, num_training=150, num_validation=50, num_test=None,
                           subtract_mean=False)
    predicted = classifier.probabilities(raw["X_test"]).argmax(axis=1)
    assert np.mean(predicted[:40] == raw["y_test"][:40]) == pytest.approx(metrics["test_acc"])
    assert np.mean(predicted == raw["y_test"]) == pytest.approx(metrics["test_acc_full"])

    # The printed train.py command trains the answer again.
    command = summary["best"]["command"]
    assert f"train it again with: {command}" in proc.stdout
    args = shlex.split(command)
    assert args[:4] == ["python", "scripts/train.py", "--preset", "best"]
    again = subprocess.run([sys.executable, *args[1:], "--out", tmp_path / "again"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    retrained = json.load(open(tmp_path / "again" / "metrics.json"))
    for name in ("val_acc", "test_acc", "test_acc_full"):
        assert retrained[name] == pytest.approx(metrics[name]), name


def test_search_keeps_finished_stages_when_a_later_one_fails(cifar_fixture, tmp_path):
    out = tmp_path / "failing"
    # A learning rate 1e30 times the narrow winner's makes every final run diverge.
    proc = run_search_script("--data-dir", cifar_fixture, *SPLITS, *TINY_STAGES,
                             "--final-lr-scales", "1e30", "--preprocess", "none", "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].startswith(
        "error: every config of the final stage diverged")
    assert "Traceback" not in proc.stderr
    assert len(read_rows(out / "coarse" / "results.csv")) == 3
    assert len(read_rows(out / "narrow" / "results.csv")) == 2
    stages = json.load(open(out / "summary.json"))["stages"]
    assert [s["name"] for s in stages] == ["coarse", "narrow"]
    assert not (out / "best").exists() and not (out / "COMPLETE").exists()


def test_search_refuses_a_setting_a_later_stage_cannot_train_before_training(cifar_fixture,
                                                                             tmp_path):
    out = tmp_path / "refused"
    # 10 warmup iterations fit the 13-iteration coarse runs, not the 7-iteration narrow ones.
    proc = run_search_script("--data-dir", cifar_fixture, *SPLITS, *TINY_STAGES,
                             "--coarse-epochs", 2, "--warmup-iters", 10, "--preprocess", "none",
                             "--out", out)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: the narrow stage (1 epochs of 150 rows, hidden 8): "
                                        "warmup_iters must be in [0, num_iters); got 10"]
    assert not (out / "coarse").exists()


@pytest.mark.parametrize("args,message", [
    (["--coarse", "0"], "argument --coarse: must be >= 1"),
    (["--final-lr-scales", "1,-2"], "argument --final-lr-scales: must be a finite number > 0"),
    (["--coarse-epochs", "abc"], "argument --coarse-epochs: invalid positive_float value"),
    (["--preprocess", "none,blur"], "--preprocess takes a comma-separated list of"),
    (["--dropout-range", "0:1.5"], "--dropout-range must lie in [0, 1)"),
    (["--lr-range", "1e-2:1e-4"], "LOW <= HIGH"),
    (["--optimizer", "foo"], "optimizer must be one of"),
    (["--translate-range", "0:2:uniform"], "translate must be an integer"),
    (["--data", "missing.npz"], "missing.npz"),
])
def test_search_script_bad_flags_one_line(args, message, tmp_path):
    proc = run_search_script(*args, "--out", tmp_path / "never")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "never").exists()


def test_search_script_needs_a_test_split(tmp_path):
    rng = np.random.RandomState(0)
    npz = tmp_path / "no_test.npz"
    np.savez(npz, X_train=rng.randn(60, 12), y_train=rng.randint(0, 3, 60),
             X_val=rng.randn(20, 12), y_val=rng.randint(0, 3, 20))
    proc = run_search_script("--data", npz, "--out", tmp_path / "never")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: the search evaluates its answer on a test split; the dataset has no X_test"]


def test_extra_ranges_are_drawn_after_the_kinds_and_narrowed_within_their_range():
    """A plan with mixup and label-smoothing ranges draws the same learning rates, dropouts,
    shifts and kinds as one without, and narrows the new fields like dropout."""
    plain = search.SearchPlan()
    extra = search.SearchPlan(ranges={**search.COARSE_RANGES,
                                      "mixup": ("uniform", 0.0, 0.4),
                                      "label_smoothing": ("uniform", 0.0, 0.2)})
    configs, kinds = search.random_preprocessed(12, search.coarse_stage_ranges(plain), SMALL)
    extra_configs, extra_kinds = search.random_preprocessed(
        12, search.coarse_stage_ranges(extra), SMALL)
    assert extra_kinds == kinds
    assert [dataclasses.replace(c, mixup=0.0, label_smoothing=0.0) for c in extra_configs] \
        == configs
    assert len({c.mixup for c in extra_configs}) == 12
    assert all(0 <= c.mixup <= 0.4 and 0 <= c.label_smoothing <= 0.2 for c in extra_configs)
    rows = [{**r, "mixup": m, "label_smoothing": s}
            for r, m, s in zip(ROWS, (0.05, 0.3, 0.15, 0.4, 0.2), (0.19, 0.1, 0.0, 0.2, 0.1))]
    ranges = search.narrow_ranges(rows, 3, extra.ranges)
    assert ranges["mixup"] == ("uniform", 0.0, pytest.approx(0.4))       # 0.05-0.1, 0.3+0.1
    assert ranges["label_smoothing"] == ("uniform", 0.0, pytest.approx(0.2))  # 0.19+0.05 -> 0.2
    assert list(ranges)[-1] == "preprocess"


def test_search_script_draws_the_extra_ranges(cifar_fixture, tmp_path):
    out = tmp_path / "levers"
    proc = run_search_script("--data-dir", cifar_fixture, *SPLITS, *TINY_STAGES,
                             "--preprocess", "none", "--mixup-range", "0.1:0.5",
                             "--label-smoothing-range", "0.05:0.2", "--ema", "0.9",
                             "--out", out)
    assert proc.returncode == 0, proc.stderr
    coarse = read_rows(out / "coarse" / "results.csv")
    assert all(0.1 <= float(r["mixup"]) <= 0.5 and 0.05 <= float(r["label_smoothing"]) <= 0.2
               and float(r["ema"]) == 0.9 for r in coarse)
    assert len({r["mixup"] for r in coarse}) == 3
    summary = json.load(open(out / "summary.json"))
    assert summary["stages"][1]["ranges"]["mixup"]["uniform"][0] >= 0.1
    best = summary["best"]["config"]
    assert f"--mixup {best['mixup']}" in summary["best"]["command"]
    assert "--ema 0.9" in summary["best"]["command"]
    final_top = summary["stages"][2]["top"][0]
    assert (f", mixup {final_top['mixup']:.3g}, label_smoothing "
            f"{final_top['label_smoothing']:.3g}, none)") in proc.stdout
    refused = run_search_script("--data-dir", cifar_fixture, "--label-smoothing-range", "0:1",
                                "--out", tmp_path / "refused")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --label-smoothing-range: label_smoothing must be in [0, 1); got 1.0")


def test_ablation_script_trains_each_row_once_and_prints_the_table(cifar_fixture, tmp_path):
    quick = ["--", "--num-iters", "3", "--hidden-size", "8", "--data-dir", str(cifar_fixture),
             *SPLITS]
    command = [sys.executable, "scripts/ablation.py", "--out", str(tmp_path), "--only",
               "bf16,mixup", *quick]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    rows = [line.split(" | ") for line in first.stdout.splitlines()[2:]]
    assert [r[0] for r in rows] == ["| bf16", "| mixup"]
    for row, name in zip(rows, ("bf16", "mixup")):
        metrics = json.load(open(tmp_path / name / "metrics.json"))
        assert row[3] == f"{metrics['test_acc_full']:.4f}"
        assert json.load(open(tmp_path / name / "config.json"))["hidden_size"] == 8
    assert json.load(open(tmp_path / "mixup" / "config.json"))["mixup"] == 0.2
    # Complete rows are read back, not trained again.
    stamp = (tmp_path / "bf16" / "metrics.json").stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.stdout == first.stdout
    assert (tmp_path / "bf16" / "metrics.json").stat().st_mtime_ns == stamp
