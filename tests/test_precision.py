"""compute_dtype="auto": the choice from CPU flags and injected timings, its cache, and its
place in configs, sweeps and the train function (no wall times are asserted)."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from jaxnet import precision, solver, sweep
from jaxnet.config import PRESETS, TrainConfig

BF16_CPU = ("AMD EPYC 9xx4", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}))
AVX2_CPU = ("AMD EPYC 7xx2", frozenset({"avx2", "fma"}))


class Timer:
    """A stand-in for ``time_products``: fixed seconds, and the shapes it was asked for."""

    def __init__(self, float32: float, bfloat16: float):
        self.seconds, self.calls = {"float32": float32, "bfloat16": bfloat16}, []

    def __call__(self, shapes, device):
        self.calls.append(tuple(shapes))
        return dict(self.seconds)


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """Choose for a CPU of the test's making, with a cache of the test's own."""
    monkeypatch.setenv("JAXNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XLA_FLAGS", raising=False)

    def use(info):
        monkeypatch.setattr(precision, "cpu_info", lambda: info)
    use(BF16_CPU)
    return use


@pytest.mark.parametrize("bfloat16, expected", [(0.5, "bfloat16"), (0.9, "bfloat16"),
                                                (0.95, "float32"), (1.6, "float32")])
def test_bfloat16_only_where_it_is_clearly_faster(bfloat16, expected):
    choice = precision.compare({"float32": 1.0, "bfloat16": bfloat16})
    assert choice.dtype == expected
    assert choice.seconds == {"float32": 1.0, "bfloat16": bfloat16}
    assert f"took {bfloat16:.2f}x the time of float32 ones" in choice.reason


def test_a_cpu_without_bfloat16_instructions_takes_float32_untimed(cpu):
    cpu(AVX2_CPU)
    timer = Timer(1.0, 0.1)
    choice = precision.choose((2000, 3072, 200), timer=timer)
    assert choice == ("float32", "the CPU has neither avx512_bf16 nor amx_bf16", {})
    assert timer.calls == []


def test_the_avx2_limit_is_decided_by_timing(cpu, monkeypatch):
    """XLA_FLAGS=--xla_cpu_max_isa=AVX2 leaves the CPU's flags as they are: bfloat16
    products emulated no faster than float32 ones must give float32."""
    monkeypatch.setenv("XLA_FLAGS",
                       "--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=")
    assert precision.choose((2000, 3072, 200), timer=Timer(0.052, 0.053)).dtype == "float32"
    monkeypatch.setenv("XLA_FLAGS", "")
    assert precision.choose((2000, 3072, 200), timer=Timer(0.050, 0.027)).dtype == "bfloat16"


def test_calibrations_are_cached_per_machine_and_shape(cpu, monkeypatch, tmp_path):
    timer = Timer(2.0, 1.0)
    first = precision.choose((20, 30, 5), timer=timer)
    again = precision.choose((20, 30, 5), timer=timer)
    assert (first.dtype, again.dtype) == ("bfloat16", "bfloat16")
    assert timer.calls == [(20, 30, 5)]
    assert again.reason.endswith("measured earlier on this machine")
    # Another shape, other XLA flags, another CPU: calibrated anew, each cached apart.
    precision.choose((40, 30, 5), timer=timer)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    precision.choose((20, 30, 5), timer=timer)
    cpu(("Intel Xeon", BF16_CPU[1] | {"amx_bf16"}))
    precision.choose((20, 30, 5), timer=timer)
    assert timer.calls == [(20, 30, 5), (40, 30, 5), (20, 30, 5), (20, 30, 5)]
    cached = json.loads((tmp_path / "cache" / "precision.json").read_text())
    assert len(cached) == 4
    assert all(value == {"float32": 2.0, "bfloat16": 1.0} for value in cached.values())


def test_a_damaged_cache_is_measured_again(cpu, tmp_path):
    path = tmp_path / "cache" / "precision.json"
    path.parent.mkdir()
    path.write_text("{not json")
    timer = Timer(1.0, 2.0)
    assert precision.choose((8, 4, 2), timer=timer).dtype == "float32"
    assert timer.calls == [(8, 4, 2)]
    assert list(json.loads(path.read_text()).values()) == [{"float32": 1.0, "bfloat16": 2.0}]
    key = precision.machine_key((8, 4, 2))
    path.write_text(json.dumps({key: {"float32": 0, "bfloat16": "fast"}}))
    assert precision.choose((8, 4, 2), timer=timer).dtype == "float32"
    assert len(timer.calls) == 2


def test_cpu_info_reads_the_model_and_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 "
                    "avx512_bf16\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert precision.cpu_info(str(path)) == ("AMD EPYC 9B14", {"fpu", "avx2", "avx512_bf16"})
    assert precision.cpu_info(str(tmp_path / "missing")) == ("", frozenset())


def test_resolve_decides_auto_only(cpu):
    lines = []
    config = TrainConfig(hidden_size=30, batch_size=5, compute_dtype="auto")
    timer = Timer(1.0, 0.5)
    resolved = precision.resolve(config, 12, say=lines.append, timer=timer)
    assert resolved == dataclasses.replace(config, compute_dtype="bfloat16")
    assert timer.calls == [(30, 12, 5)]
    assert lines == ["compute dtype auto for hidden 30, batch 5: bfloat16 (bfloat16 products "
                     "took 0.50x the time of float32 ones (bfloat16 needs <= 0.9x))"]
    for fixed in ("float32", "bfloat16"):
        same = dataclasses.replace(config, compute_dtype=fixed)
        assert precision.resolve(same, 12, timer=timer) is same
    exact = dataclasses.replace(config, dtype="float64").validate()
    assert precision.resolve(exact, 12, timer=timer).compute_dtype == "float32"
    assert len(timer.calls) == 1


def test_a_sweep_decides_once_per_group(cpu, monkeypatch):
    timer = Timer(1.0, 0.5)
    monkeypatch.setattr(precision, "time_products", timer)
    base = TrainConfig(num_iters=6, batch_size=5, hidden_size=4, compute_dtype="auto")
    configs = [base, dataclasses.replace(base, learning_rate=1e-3),
               dataclasses.replace(base, hidden_size=6),
               dataclasses.replace(base, compute_dtype="float32"),
               dataclasses.replace(base, dtype="float64")]
    rng = np.random.default_rng(0)
    X, X_val = rng.normal(size=(20, 7)).astype(np.float32), rng.normal(size=(10, 7))
    y, y_val = np.arange(20) % 3, np.arange(10) % 3
    result = sweep.run_sweep(configs, X, y, X_val.astype(np.float32), y_val)
    assert [r.config.compute_dtype for r in result.results] == \
        ["bfloat16", "bfloat16", "bfloat16", "float32", "float32"]
    assert timer.calls == [(4, 7, 5), (6, 7, 5)]
    # The train function decides too, and says what it trained.
    trained = solver.train(X, y, X_val.astype(np.float32), y_val, base)
    assert trained.config == dataclasses.replace(base, compute_dtype="bfloat16")
    assert len(timer.calls) == 2   # cached from the sweep


def test_the_best_preset_decides_its_precision():
    assert PRESETS["best"].compute_dtype == "auto"
    assert TrainConfig(compute_dtype="auto", dtype="float64").validate()


def test_the_sweep_command_says_each_groups_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXNET_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    path = tmp_path / "rows.npz"
    np.savez(path, X_train=rng.normal(size=(20, 7)).astype(np.float32), y_train=np.arange(20) % 3,
             X_val=rng.normal(size=(10, 7)).astype(np.float32), y_val=np.arange(10) % 3)
    # Timings cached as if measured on this machine: the command reads, never measures.
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "precision.json").write_text(json.dumps({
        precision.machine_key((h, 7, 5)): {"float32": 1.0, "bfloat16": 0.5} for h in (4, 6)}))
    expected = "float32" if precision.cpu_rule(precision.cpu_info()[1]) else "bfloat16"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sweep.py"), "--data", str(path),
         "--hidden-size", "4,6", "--batch-size", "5", "--num-iters", "6", "--lr", "1e-3,2e-3",
         "--reg", "0.1", "--compute-dtype", "auto", "--out", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("compute dtype auto")]
    assert [line.split(" (")[0] for line in said] == [
        f"compute dtype auto for hidden {h}, batch 5: {expected}" for h in (4, 6)]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [row["compute_dtype"] for row in rows] == [expected] * 4
