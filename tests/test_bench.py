"""scripts/bench.py: the harness runs end to end and writes every key (no timing is asserted)."""
import importlib.util
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = REPO / "scripts" / "bench.py"

REQUIRED = ["peak_gflops", "numpy_f64_s", "numpy_f32_s", "jaxnet_single_s",
            "jaxnet_single_compile_s", "grid_numpy_f64_s", "grid_jaxnet_s",
            "grid_jaxnet_steady_gflops", "grid_peak_fraction", "sweep48_peak_rss_mb",
            "single_speedup_f32", "single_speedup_f64", "grid_speedup_f64",
            "bf16_single_s", "grid_bf16_steady_s", "single_bf16_speedup_f32",
            "grid_bf16_speedup_jaxnet"]


def run_bench(*args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = run_bench("--quick", "--repeats", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), proc.stdout


def test_quick_run_writes_every_key_as_a_positive_number(quick_results):
    results, _ = quick_results
    for key in REQUIRED:
        assert key in results, key
        value = results[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value) and value > 0, (key, value)
    assert isinstance(results["device"], str) and results["device"]


def test_quick_run_describes_the_machine_and_the_flop_count(quick_results):
    results, stdout = quick_results
    machine = results["machine"]
    for key in ("cpu", "cores", "numpy", "jax", "device", "blas"):
        assert machine[key], key
    assert "2*B*D*H" in results["flop_model"]
    assert "random" in results["data"]
    assert results["sweep48_configs"] == 48
    # The ratios are the ratios of the reported times.
    assert results["single_speedup_f32"] == pytest.approx(
        results["numpy_f32_s"] / results["jaxnet_single_s"])
    assert results["grid_speedup_f64"] == pytest.approx(
        results["grid_numpy_f64_s"] / results["grid_jaxnet_s"])
    # jaxnet's rows are measured against the peak of their own device.
    jaxnet_peak = results.get("device_peak_gflops", results["peak_gflops"])
    assert results["grid_peak_fraction"] == pytest.approx(
        results["grid_jaxnet_steady_gflops"] / jaxnet_peak)
    for row in ("matrix peak", "numpy reference float64", "jaxnet float32", "run_sweep",
                "peak RSS", "targets (cpu):"):
        assert row in stdout, row


def test_flop_count_of_the_notebook_grid_is_about_2_2_tflop():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sizes = bench.Sizes()
    configs = bench.grid_configs(sizes)
    assert len(configs) == 12
    total = bench.grid_flops(sizes, configs, sizes.num_train, sizes.num_val)
    assert 2.1e12 < total < 2.3e12
    # One step of the single run: 4*B*D*H + 6*B*H*C.
    assert bench.step_flops(200, 3072, 50, 10) == 4 * 200 * 3072 * 50 + 6 * 200 * 50 * 10


@pytest.mark.parametrize("args, message", [
    (["--only", "bogus"], "unknown section"),
    (["--only", "sweep"], "--sweep-configs"),
    (["--repeats", "0"], "--repeats"),
    (["--only", "accuracy"], "need CIFAR-10: give --data-dir"),
    (["--grid-repeats", "-1"], "--grid-repeats must be >= 0"),
])
def test_bad_arguments_give_one_line_and_status_2(args, message):
    proc = run_bench(*args, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


GPU_SCRIPT = REPO / "scripts" / "bench_gpu.sh"


def test_gpu_script_runs_every_step_past_failures_and_reports_them(tmp_path):
    # PYTHON=false makes each Python step fail at once: every step must still run.
    env = {"PATH": "/usr/bin:/bin", "PYTHON": "false", "RUNS_DIR": str(tmp_path / "runs")}
    out = subprocess.run(["bash", str(GPU_SCRIPT), str(tmp_path / "out"), str(tmp_path)],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 1
    log = (tmp_path / "out" / "log.txt").read_text()
    steps = [line for line in log.splitlines() if line.startswith("== ") and
             "failed" not in line]
    assert [s.split()[2] for s in steps[1:]] == ["scripts/bench.py", "scripts/train.py",
                                                 "scripts/bench.py", "scripts/train.py"]
    assert "--sweep-configs 1024" in steps[1] and "--preset best" in steps[4]
    real = tmp_path.resolve()
    assert f"--out {real / 'runs'}/train_best --data-dir {real}" in steps[4]
    assert log.count("== failed with status 1: false") == 4


@pytest.mark.parametrize("args, status", [(["--help"], 0), ([], 1)])
def test_gpu_script_usage(args, status):
    out = subprocess.run(["bash", str(GPU_SCRIPT), *args], capture_output=True, text=True)
    assert out.returncode == status
    assert "scripts/bench_gpu.sh OUT_DIR [CIFAR10_DIR]" in out.stdout


PARTS_SCRIPT = REPO / "scripts" / "bench_parts.py"


def test_parts_quick_run_times_every_piece_and_batch_size(tmp_path):
    out = tmp_path / "parts.json"
    proc = subprocess.run([sys.executable, str(PARTS_SCRIPT), "--quick", "--repeats", "2",
                           "--steps", "5", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert results["shapes"] == {"N": 600, "D": 96, "H": 8, "B": 20}
    assert results["steps"] == 5 and results["repeats"] == 2
    for side in ("jaxnet_ms", "numpy_ms"):
        assert sorted(results[side]) == ["backward", "forward", "gather"]
    assert sorted(results["forward_by_batch"], key=int) == ["8", "20"]
    for row in results["forward_by_batch"].values():
        assert row["numpy_ms"] > 0 and math.isfinite(row["jaxnet_ms"])
    assert all(v > 0 for v in results["numpy_ms"].values())
    assert results["peak_gflops"] > 0
    for text in ("matrix peak", "numpy/jaxnet", "forward product by batch size"):
        assert text in proc.stdout, text


def test_parts_rejects_zero_steps():
    proc = subprocess.run([sys.executable, str(PARTS_SCRIPT), "--steps", "0"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "--steps" in proc.stderr
    assert "Traceback" not in proc.stderr
