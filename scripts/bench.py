#!/usr/bin/env python3
"""Measure jaxnet against the notebook's numpy loop and the machine's matrix peak.

Everything is measured in one run on the same machine, so the ratios mean
something even where absolute times do not (a shared machine is noisy; each
number is the median of several repeats):

  peak    float32 matrix-multiply peak: a 2048x2048 product with numpy; when
          jaxnet runs on a GPU, also the GPU's, an 8192x8192 product with jax
          (the jaxnet rows' "% peak" is then against the GPU's)
  single  the notebook's run (hidden 50, batch 200, 1000 iterations): the numpy
          reference loop (jaxnet.reference.train) in float64 and float32, and
          jaxnet's solver.train in float32 and in mixed precision (compute_dtype
          bfloat16), steady state and compile time
  grid    the notebook's 12-config grid (lr x reg x batch size, 2000 iterations):
          the numpy reference one config after another (float64) against
          jaxnet.sweep.run_sweep in float32 and in mixed precision, compilation
          included and in steady state
  rss     peak memory (ru_maxrss, and VmHWM) of a child process running a
          48-config sweep of the notebook's shape; runs first, while this
          process is small, since Linux hands a parent's ru_maxrss to its child
  sweep   with --sweep-configs N: an N-config sweep (hidden 50, batch 200, 2000
          iterations), steady state after compile (how a GPU figure is measured)
  accuracy  (needs --data-dir) what mixed precision costs: the notebook's grid in
          float32 and in mixed precision on CIFAR-10, the best validation
          accuracy of each and its params' accuracy on the 10,000 test images
  preset  (needs --data-dir; about 13 + 17 minutes on 2 cores) the same for the
          best preset (standardized inputs), trained once in each precision

Achieved GFLOP/s count the matrix products analytically (see "flop_model" in
the JSON). The data are CIFAR-10-shaped random numbers unless --data-dir
points at CIFAR-10. Timings are wall times; compilation time is "first call
minus steady state", with JAX's caches cleared before each first call.

Examples:
  python scripts/bench.py --json bench.json
  python scripts/bench.py --only single --repeats 5
  python scripts/bench.py --only sweep --device gpu --sweep-configs 1024
  python scripts/bench.py --only accuracy,preset --data-dir data --json accuracy.json
  python scripts/bench.py --quick --json /tmp/bench.json   # harness check, seconds
"""
import argparse
import dataclasses
import json
import operator
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxnet import loop, preprocess, reference, runs, solver, sweep
from jaxnet.arrays import aligned_empty
from jaxnet.commands import cli
from jaxnet.config import PRESETS, PRESET_PREPROCESS, TrainConfig

SECTIONS = ("peak", "single", "grid", "rss", "sweep", "accuracy", "preset")
DEFAULT_SECTIONS = ("peak", "single", "grid", "rss")
GRID_VALUES = {"learning_rate": [5e-4, 1e-3, 2.5e-3], "reg": [0.25, 0.5], "batch_size": [100, 200]}
# 48 configs in 2 groups of 24 (one per batch size): the notebook's grid, widened.
RSS_VALUES = {"learning_rate": [5e-4, 1e-3, 2.5e-3, 5e-3], "reg": [0.1, 0.25, 0.5],
              "learning_rate_decay": [0.9, 0.95], "batch_size": [100, 200]}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes: the notebook's by default, tiny ones with --quick."""

    num_train: int = 49000
    num_val: int = 1000
    num_features: int = 3072
    num_classes: int = 10
    hidden: int = 50
    single_iters: int = 1000
    single_batch: int = 200
    grid_iters: int = 2000
    grid_batches: tuple = (100, 200)
    peak_n: int = 2048
    device_peak_n: int = 8192
    rss_iters: int = 200


QUICK = Sizes(num_train=600, num_val=60, num_features=96, hidden=8, single_iters=40,
              single_batch=20, grid_iters=40, grid_batches=(10, 20), peak_n=256, rss_iters=20,
              device_peak_n=256)


# ----------------------------------------------------------------------------- counting

def step_flops(B: int, D: int, H: int, C: int) -> int:
    """Matrix-product FLOPs of one training step (2 per multiply-add).

    forward X@W1 2BDH + h@W2 2BHC; backward dW1 2BDH, dW2 2BHC, dh 2BHC
    (no dX: the inputs are not differentiated).
    """
    return 4 * B * D * H + 6 * B * H * C


def run_flops(N: int, D: int, H: int, C: int, M: int, B: int, T: int) -> int:
    """FLOPs of a T-step run: the steps plus, at each epoch end, the forward pass
    of the validation set (M rows) and of the minibatch (train accuracy)."""
    per_epoch = max(N / B, 1)
    epochs = sum(1 for it in range(T) if it % per_epoch == 0)
    forward = lambda rows: 2 * rows * D * H + 2 * rows * H * C  # noqa: E731
    return T * step_flops(B, D, H, C) + epochs * (forward(M) + forward(B))


FLOP_MODEL = ("per step: forward X@W1 2*B*D*H + h@W2 2*B*H*C, backward dW1 2*B*D*H, "
              "dW2 2*B*H*C, dh 2*B*H*C (no dX); per epoch end: forward of the validation "
              "set 2*M*(D*H + H*C) and of the minibatch 2*B*(D*H + H*C); biases, ReLU, "
              "softmax and updates not counted")


# ----------------------------------------------------------------------------- timing helpers

def median(values):
    return float(statistics.median(values))


def timed(fn):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def clear_jax_caches():
    """Forget every compiled program, as in a fresh process."""
    loop.COMPILED.clear()
    jax.clear_caches()


def block(tree):
    jax.block_until_ready(tree)
    return tree


# ----------------------------------------------------------------------------- data and machine

def sizes_for(args) -> Sizes:
    """The notebook's sizes, or tiny ones with --quick (real images keep D = 3072)."""
    sizes = QUICK if args.quick else Sizes()
    if args.quick and args.data_dir:
        sizes = dataclasses.replace(sizes, num_features=Sizes.num_features)
    if args.rss_iters:
        sizes = dataclasses.replace(sizes, rss_iters=args.rss_iters)
    return sizes


def make_data(sizes: Sizes, data_dir: str | None, seed: int = 0) -> tuple:
    """(X, y, X_val, y_val) float32: CIFAR-10 from data_dir, or random of its shape."""
    if data_dir:
        from jaxnet import data
        d = data.get_CIFAR10_data(data_dir, sizes.num_train, sizes.num_val, 0)
        if d["X_train"].shape[1] != sizes.num_features:
            raise ValueError(f"{data_dir}: rows have {d['X_train'].shape[1]} features, "
                             f"expected {sizes.num_features}")
        return d["X_train"], d["y_train"], d["X_val"], d["y_val"]
    rng = np.random.default_rng(seed)
    # Drawn straight in float32 (no float64 copy inflates the peak memory), into
    # 64-byte aligned buffers as jaxnet.data loads CIFAR-10, so that jaxnet uses
    # them in place, as it does the real data.
    X, X_val = (rng.standard_normal(dtype=np.float32,
                                    out=aligned_empty((rows, sizes.num_features), np.float32))
                for rows in (sizes.num_train, sizes.num_val))
    y = rng.integers(0, sizes.num_classes, sizes.num_train)
    y_val = rng.integers(0, sizes.num_classes, sizes.num_val)
    return X, y, X_val, y_val


def blas_info() -> str:
    """The BLAS library and kernel numpy uses, from threadpoolctl when installed."""
    try:
        import threadpoolctl
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    entries = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
               f"threads={i.get('num_threads')}"
               for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(entries) or "unknown"


def machine_info(device) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu or platform.processor(), "cores": os.cpu_count(), "usable_cores": usable,
        "python": platform.python_version(), "numpy": np.__version__, "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "blas": blas_info(), "device": str(device), "platform": device.platform,
        "env": {k: os.environ[k] for k in sorted(os.environ)
                if k.startswith(("OPENBLAS", "OMP_", "MKL_", "XLA_", "JAX_"))},
    }


def _jaxlib_version():
    try:
        import jaxlib
        return jaxlib.__version__
    except (ImportError, AttributeError):
        return None


# ----------------------------------------------------------------------------- sections

def bench_peak(sizes: Sizes, repeats: int) -> dict:
    """numpy float32 GFLOP/s of an n x n product (n = 2048), median of the repeats."""
    n = sizes.peak_n
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up the BLAS threads
    times = [timed(lambda: a @ b)[0] for _ in range(max(repeats, 5))]
    return {"peak_gflops": 2 * n ** 3 / median(times) / 1e9, "peak_size": n,
            "peak_times_s": times}


def bench_device_peak(device, n: int, repeats: int) -> dict:
    """float32 GFLOP/s of a jitted n x n product on ``device`` (an accelerator).

    Runs at JAX's default matmul precision, the one jaxnet's programs use
    (recorded in the JSON: on NVIDIA GPUs since Ampere it lets XLA use TF32).
    """
    import jax.numpy as jnp
    with jax.default_device(device):
        a, b = (jax.random.normal(key, (n, n), jnp.float32)
                for key in jax.random.split(jax.random.key(1)))
        matmul = jax.jit(jnp.matmul)
        block(matmul(a, b))
        times = [timed(lambda: block(matmul(a, b)))[0] for _ in range(max(repeats, 10))]
    return {"device_peak_gflops": 2 * n ** 3 / median(times) / 1e9, "device_peak_size": n,
            "device_peak_times_s": times,
            "matmul_precision": str(jax.config.jax_default_matmul_precision or "default")}


def numpy_params(sizes: Sizes, dtype, seed: int) -> dict:
    rng = np.random.RandomState(seed)
    D, H, C = sizes.num_features, sizes.hidden, sizes.num_classes
    return {"W1": (1e-4 * rng.randn(D, H)).astype(dtype), "b1": np.zeros(H, dtype),
            "W2": (1e-4 * rng.randn(H, C)).astype(dtype), "b2": np.zeros(C, dtype)}


def numpy_run(sizes, data, config: TrainConfig, dtype, seed=0) -> float:
    """Seconds of the notebook's numpy loop (jaxnet.reference.train) for ``config``."""
    X, y, X_val, y_val = data
    params = numpy_params(sizes, dtype, seed)
    seconds, _ = timed(lambda: reference.train(
        params, X, y, X_val, y_val, config.learning_rate, config.learning_rate_decay,
        config.reg, config.num_iters, config.batch_size, np.random.RandomState(seed)))
    return seconds


def mixed(config: TrainConfig) -> TrainConfig:
    """``config`` in mixed precision: bfloat16 products, float32 accumulation."""
    return dataclasses.replace(config, compute_dtype="bfloat16")


def bench_single(sizes: Sizes, data32, data64, device, repeats: int, say) -> dict:
    """numpy float64/float32 and jaxnet float32 and mixed precision on the notebook's
    single run, interleaved."""
    config = TrainConfig(hidden_size=sizes.hidden, num_iters=sizes.single_iters,
                         batch_size=sizes.single_batch)
    rows = {"numpy_f64": [], "numpy_f32": [], "jaxnet_first": [], "jaxnet_steady": [],
            "jaxnet_compile": [], "bf16_first": [], "bf16_steady": [], "bf16_compile": []}
    for r in range(repeats):
        rows["numpy_f64"].append(numpy_run(sizes, data64, config, np.float64))
        rows["numpy_f32"].append(numpy_run(sizes, data32, config, np.float32))
        for name, run_config in (("jaxnet", config), ("bf16", mixed(config))):
            clear_jax_caches()
            with jax.default_device(device):
                first, _ = timed(lambda: solver.train(*data32, run_config))
                steady, _ = timed(lambda: solver.train(*data32, run_config))
            rows[f"{name}_first"].append(first)
            rows[f"{name}_steady"].append(steady)
            rows[f"{name}_compile"].append(first - steady)
        say(f"  single repeat {r + 1}/{repeats}: numpy f64 {rows['numpy_f64'][-1]:.2f} s, "
            f"f32 {rows['numpy_f32'][-1]:.2f} s, jaxnet {rows['jaxnet_steady'][-1]:.2f} s "
            f"(+{rows['jaxnet_compile'][-1]:.2f} s compile), bfloat16 "
            f"{rows['bf16_steady'][-1]:.2f} s")
    N, D = data32[0].shape
    flops = run_flops(N, D, sizes.hidden, sizes.num_classes, len(data32[2]),
                      sizes.single_batch, sizes.single_iters)
    out = {"numpy_f64_s": median(rows["numpy_f64"]), "numpy_f32_s": median(rows["numpy_f32"]),
           "jaxnet_single_s": median(rows["jaxnet_steady"]),
           "jaxnet_single_first_s": median(rows["jaxnet_first"]),
           "jaxnet_single_compile_s": median(rows["jaxnet_compile"]),
           "bf16_single_s": median(rows["bf16_steady"]),
           "bf16_single_compile_s": median(rows["bf16_compile"]),
           "single_tflop": flops / 1e12, "single_times_s": rows}
    out["single_speedup_f32"] = out["numpy_f32_s"] / out["jaxnet_single_s"]
    out["single_speedup_f64"] = out["numpy_f64_s"] / out["jaxnet_single_s"]
    out["single_bf16_speedup_f32"] = out["numpy_f32_s"] / out["bf16_single_s"]
    out["single_bf16_speedup_f64"] = out["numpy_f64_s"] / out["bf16_single_s"]
    out["single_bf16_speedup_jaxnet"] = out["jaxnet_single_s"] / out["bf16_single_s"]
    for key in ("numpy_f64", "numpy_f32", "jaxnet_single", "bf16_single"):
        out[f"{key}_gflops"] = flops / out[f"{key}_s"] / 1e9
    return out


def grid_configs(sizes: Sizes) -> list:
    base = TrainConfig(hidden_size=sizes.hidden, num_iters=sizes.grid_iters,
                       learning_rate_decay=0.95)
    return sweep.grid(base, **{**GRID_VALUES, "batch_size": list(sizes.grid_batches)})


def grid_flops(sizes: Sizes, configs, N: int, M: int) -> int:
    return sum(run_flops(N, sizes.num_features, c.hidden_size, sizes.num_classes, M,
                         c.batch_size, c.num_iters) for c in configs)


def device_list(device) -> list:
    return [d for d in jax.local_devices() if d.platform == device.platform]


def run_sweep_timed(configs, data, device) -> float:
    with jax.default_device(device):
        seconds, result = timed(lambda: sweep.run_sweep(configs, *data,
                                                        devices=device_list(device)))
    if any(r.status != "ok" for r in result.results):
        raise RuntimeError("a benchmark config diverged; the timing would not be comparable")
    return seconds


def bench_grid(sizes: Sizes, data32, data64, device, repeats: int, grid_repeats: int,
               say) -> dict:
    """The notebook's 12-config grid: numpy float64 one by one vs jaxnet's vmapped sweep,
    in float32 and in mixed precision (interleaved). ``grid_repeats`` 0 times the
    sweeps' steady state only (no numpy reference, no first call)."""
    configs = grid_configs(sizes)
    sweeps = {"jaxnet": configs, "bf16": [mixed(c) for c in configs]}
    times: dict = {"numpy_f64": [], "jaxnet_first": [], "jaxnet_steady": [], "bf16_first": [],
                   "bf16_steady": []}
    for r in range(max(grid_repeats, repeats)):
        if r < grid_repeats:
            times["numpy_f64"].append(sum(numpy_run(sizes, data64, c, np.float64, seed=i)
                                          for i, c in enumerate(configs)))
        for name, sweep_configs in sweeps.items():
            if r < max(grid_repeats, 1):  # the first call compiles
                clear_jax_caches()
                first = run_sweep_timed(sweep_configs, data32, device)
                if r < grid_repeats:
                    times[f"{name}_first"].append(first)
            times[f"{name}_steady"].append(run_sweep_timed(sweep_configs, data32, device))
        say(f"  grid repeat {r + 1}/{max(grid_repeats, repeats)}: "
            + (f"numpy f64 {times['numpy_f64'][-1]:.1f} s, jaxnet {times['jaxnet_first'][-1]:.1f}"
               f" s with compilation, " if r < grid_repeats else "")
            + f"jaxnet steady {times['jaxnet_steady'][-1]:.1f} s, bfloat16 steady "
              f"{times['bf16_steady'][-1]:.1f} s")
    N, M = len(data32[0]), len(data32[2])
    flops = grid_flops(sizes, configs, N, M)
    out = {"grid_configs": len(configs), "grid_tflop": flops / 1e12, "grid_times_s": times}
    for name, key in (("numpy_f64", "grid_numpy_f64"), ("jaxnet_first", "grid_jaxnet"),
                      ("jaxnet_steady", "grid_jaxnet_steady"), ("bf16_first", "grid_bf16"),
                      ("bf16_steady", "grid_bf16_steady")):
        if times[name]:
            out[f"{key}_s"] = median(times[name])
            out[f"{key}_gflops"] = flops / out[f"{key}_s"] / 1e9
    out["grid_bf16_speedup_jaxnet"] = out["grid_jaxnet_steady_s"] / out["grid_bf16_steady_s"]
    if grid_repeats:
        out["grid_jaxnet_compile_s"] = out["grid_jaxnet_s"] - out["grid_jaxnet_steady_s"]
        out["grid_speedup_f64"] = out["grid_numpy_f64_s"] / out["grid_jaxnet_s"]
        out["grid_speedup_f64_steady"] = out["grid_numpy_f64_s"] / out["grid_jaxnet_steady_s"]
        out["grid_bf16_speedup_f64"] = out["grid_numpy_f64_s"] / out["grid_bf16_s"]
    return out


def rss_configs(sizes: Sizes) -> list:
    base = TrainConfig(hidden_size=sizes.hidden, num_iters=sizes.rss_iters)
    return sweep.grid(base, **{**RSS_VALUES, "batch_size": list(sizes.grid_batches)})


def peak_rss_bytes() -> tuple:
    """(VmHWM, ru_maxrss) of this process in bytes; VmHWM is None where /proc is missing.

    On Linux ru_maxrss survives execve: a child started from a large parent
    reports at least the parent's size. VmHWM belongs to the process image.
    """
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, maxrss
    except OSError:
        pass
    return None, maxrss


def rss_child(args) -> None:
    """In a child process: run the 48-config sweep, print its own peak RSS as JSON."""
    sizes = sizes_for(args)
    device = runs.select_device(args.device)
    data = make_data(sizes, args.data_dir)
    configs = rss_configs(sizes)
    seconds = run_sweep_timed(configs, data, device)
    hwm, maxrss = peak_rss_bytes()
    print(json.dumps({"vmhwm_mb": None if hwm is None else hwm / 1e6,
                      "maxrss_mb": maxrss / 1e6, "configs": len(configs), "seconds": seconds}))


def bench_rss(sizes: Sizes, args, say) -> dict:
    """Peak RSS of a fresh child process that makes the data and runs the 48-config sweep.

    Run before the parent makes its data, so that even ru_maxrss (which a
    child inherits from its parent at exec on Linux) is the child's own.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child",
           "--rss-iters", str(sizes.rss_iters)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--device", args.device] if args.device else []
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child failed (status {proc.returncode}): "
                           f"{proc.stderr.strip().splitlines()[-1:] or ''}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    say(f"  48-config sweep in a child: {child['maxrss_mb']:.0f} MB peak RSS, "
        f"{child['seconds']:.1f} s")
    return {"sweep48_peak_rss_mb": child["maxrss_mb"], "sweep48_vmhwm_mb": child["vmhwm_mb"],
            "sweep48_configs": child["configs"],
            "sweep48_iters": sizes.rss_iters, "sweep48_s": child["seconds"],
            "sweep48_data_mb": data_bytes(sizes) / 1e6}


def data_bytes(sizes: Sizes) -> int:
    """Bytes of the float32 features and int64 labels."""
    rows = sizes.num_train + sizes.num_val
    return rows * (4 * sizes.num_features + 8)


def bench_sweep(sizes: Sizes, data32, device, num_configs: int, repeats: int, say) -> dict:
    """An N-config sweep of the notebook's shape (batch 200): first call and steady state."""
    base = TrainConfig(hidden_size=sizes.hidden, num_iters=sizes.grid_iters,
                       batch_size=max(sizes.grid_batches), learning_rate_decay=0.95)
    configs = sweep.random_configs(num_configs, {"learning_rate": ("log", 2e-4, 2e-3),
                                                 "reg": ("log", 0.05, 0.5)}, base)
    clear_jax_caches()
    first = run_sweep_timed(configs, data32, device)
    steady = [run_sweep_timed(configs, data32, device) for _ in range(repeats)]
    N, M = len(data32[0]), len(data32[2])
    flops = grid_flops(sizes, configs, N, M)
    out = {"sweep_configs": num_configs, "sweep_tflop": flops / 1e12, "sweep_first_s": first,
           "sweep_steady_s": median(steady), "sweep_times_s": steady}
    out["sweep_steady_gflops"] = flops / out["sweep_steady_s"] / 1e9
    out["sweep_configs_per_s"] = num_configs / out["sweep_steady_s"]
    if num_configs == 1024:
        out["sweep1024_steady_s"] = out["sweep_steady_s"]
    say(f"  {num_configs}-config sweep: {first:.1f} s first call, {out['sweep_steady_s']:.1f} s "
        "steady")
    return out


def load_cifar10(sizes: Sizes, data_dir: str) -> dict:
    """CIFAR-10 from data_dir: the first sizes.num_train training images, the next
    sizes.num_val for validation, and the whole test split."""
    from jaxnet import data
    return data.get_CIFAR10_data(data_dir, sizes.num_train, sizes.num_val, num_test=None)


def bench_accuracy(sizes: Sizes, dataset: dict, device, say) -> dict:
    """The notebook's grid in float32 and in mixed precision, same seeds: each one's best
    validation accuracy and its params' accuracy on the whole test split."""
    splits = (dataset["X_train"], dataset["y_train"], dataset["X_val"], dataset["y_val"])
    out = {}
    for name, configs in (("f32", grid_configs(sizes)),
                          ("bf16", [mixed(c) for c in grid_configs(sizes)])):
        with jax.default_device(device):
            result = sweep.run_sweep(configs, *splits, devices=device_list(device))
        best = result.results[result.best_index]
        metrics = runs.evaluate(result.best_params, dataset, eval_test=True)
        out[f"accuracy_grid_{name}_val"] = best.val_acc
        out[f"accuracy_grid_{name}_test_full"] = metrics["test_acc_full"]
        out[f"accuracy_grid_{name}_best_config"] = {
            k: getattr(best.config, k) for k in GRID_VALUES}
        out[f"accuracy_grid_{name}_vals"] = [r.val_acc for r in result.results]
        say(f"  grid {name}: best val {best.val_acc:.4f}, test {metrics['test_acc_full']:.4f}")
    out.update(accuracy_costs("grid", out))
    out["accuracy_grid_max_config_val_diff_points"] = 100 * max(
        abs(a - b) for a, b in zip(out["accuracy_grid_f32_vals"], out["accuracy_grid_bf16_vals"]))
    return out


def accuracy_costs(name: str, out: dict) -> dict:
    """Points of validation and test accuracy lost to mixed precision (negative: gained)."""
    return {f"accuracy_{name}_{split}_cost_points":
            100 * (out[f"accuracy_{name}_f32_{split}"] - out[f"accuracy_{name}_bf16_{split}"])
            for split in ("val", "test_full")}


def bench_preset(sizes: Sizes, dataset: dict, device, quick: bool, say) -> dict:
    """The best preset (standardized inputs) trained in float32 and in mixed precision:
    best validation and whole-test accuracy, and the training time of each."""
    config = PRESETS["best"]
    if quick:
        config = dataclasses.replace(config, hidden_size=sizes.hidden,
                                     num_iters=sizes.single_iters)
    transform = preprocess.fit(PRESET_PREPROCESS["best"], dataset["X_train"])
    preprocessed = preprocess.apply_to_splits(dataset, transform)
    out = {}
    float32 = dataclasses.replace(config, compute_dtype="float32")
    for name, run_config in (("f32", float32), ("bf16", mixed(float32))):
        with jax.default_device(device):
            result = solver.train(dataset["X_train"], dataset["y_train"], dataset["X_val"],
                                  dataset["y_val"], run_config,
                                  input_transform=(transform.mean, transform.matrix))
        metrics = runs.evaluate(result.best_params, preprocessed, eval_test=True)
        out[f"accuracy_preset_{name}_val"] = result.best_val_acc
        out[f"accuracy_preset_{name}_test_full"] = metrics["test_acc_full"]
        out[f"accuracy_preset_{name}_s"] = result.wall_s
        say(f"  best preset {name}: val {result.best_val_acc:.4f}, test "
            f"{metrics['test_acc_full']:.4f} in {result.wall_s:.0f} s")
    out.update(accuracy_costs("preset", out))
    out["accuracy_preset_iters"] = config.num_iters
    return out


# ----------------------------------------------------------------------------- report

# (key, comparison, limit, text, platform of the jaxnet rows the target is set for; None:
# every platform)
TARGETS = [
    ("single_speedup_f32", ">=", 1.5, "single run: jaxnet vs numpy float32", "cpu"),
    ("single_speedup_f64", ">=", 2.8, "single run: jaxnet vs numpy float64", "cpu"),
    ("grid_speedup_f64", ">=", 3.0, "grid: jaxnet sweep (with compile) vs numpy float64", "cpu"),
    ("grid_peak_fraction", ">=", 0.75, "grid: sweep steady state / matrix peak", "cpu"),
    ("sweep48_peak_rss_mb", "<", 3000.0, "48-config sweep peak RSS (MB)", "cpu"),
    ("sweep1024_steady_s", "<=", 15.0, "1,024-config sweep after compilation (s)", "gpu"),
    ("single_bf16_speedup_f32", ">=", 2.0, "single run: jaxnet bfloat16 vs numpy float32",
     "cpu"),
    ("grid_bf16_speedup_jaxnet", ">=", 1.6, "grid steady state: jaxnet bfloat16 vs float32",
     "cpu"),
    ("accuracy_grid_val_cost_points", "<=", 0.5,
     "notebook grid: best val accuracy lost to bfloat16 (points)", None),
    ("accuracy_grid_test_full_cost_points", "<=", 0.5,
     "notebook grid: test accuracy lost to bfloat16 (points)", None),
    ("accuracy_preset_val_cost_points", "<=", 0.5,
     "best preset: val accuracy lost to bfloat16 (points)", None),
    ("accuracy_preset_test_full_cost_points", "<=", 0.5,
     "best preset: test accuracy lost to bfloat16 (points)", None),
]


def jaxnet_peak(results: dict) -> float | None:
    """The peak jaxnet's rows are measured against: that of the device they ran on."""
    return results.get("device_peak_gflops", results.get("peak_gflops"))


COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def report(results: dict) -> str:
    peak = results.get("peak_gflops")
    lines = []
    m = results["machine"]
    lines.append(f"machine: {m['cpu']}, {m['usable_cores']} of {m['cores']} cores; "
                 f"numpy {m['numpy']} ({m['blas']}); jax {m['jax']} on {m['device']}")
    lines.append(f"data: {results['data']}; load average {results['loadavg_start']} at start, "
                 f"{results['loadavg_end']} at end")
    busiest = max(results["loadavg_start"][0], results["loadavg_end"][0])
    if busiest > m["usable_cores"] + 0.5:
        lines.append(f"warning: load average {busiest:.1f} on {m['usable_cores']} cores: other "
                     "processes competed for the CPU. numpy's BLAS threads slow down far more "
                     "than XLA's under contention (up to 5x), so the speedups are overstated; "
                     "rerun on an idle machine")
    lines.append(f"FLOPs counted: {FLOP_MODEL}")
    lines.append("")
    header = f"{'row':44} {'seconds':>9} {'GFLOP/s':>8} {'% peak':>7} {'speedup':>8}"
    lines += [header, "-" * len(header)]

    device_peak = jaxnet_peak(results)

    def row(name, seconds_key, gflops_key=None, speedup_key=None, note=""):
        if seconds_key not in results:
            return
        gf = results.get(gflops_key) if gflops_key else None
        # numpy rows against the host's peak, jaxnet rows against their device's.
        row_peak = peak if seconds_key.startswith(("numpy", "grid_numpy")) else device_peak
        cells = [f"{name:44}", f"{results[seconds_key]:9.2f}",
                 f"{gf:8.1f}" if gf else f"{'':8}",
                 f"{100 * gf / row_peak:6.0f}%" if gf and row_peak else f"{'':7}",
                 f"{results[speedup_key]:7.2f}x" if speedup_key in results else f"{'':8}"]
        lines.append(" ".join(cells) + (f"  {note}" if note else ""))

    if peak:
        lines.append(f"{'matrix peak (numpy f32 %dx%d)' % ((results['peak_size'],) * 2):44} "
                     f"{'':9} {peak:8.1f} {100:6.0f}%")
    if "device_peak_gflops" in results:
        size = results["device_peak_size"]
        name = f"device peak (jax f32 {size}x{size}, {results['matmul_precision']})"
        lines.append(f"{name:44} {'':9} {device_peak:8.1f} {100:6.0f}%")
    row("single: numpy reference float64", "numpy_f64_s", "numpy_f64_gflops")
    row("single: numpy reference float32", "numpy_f32_s", "numpy_f32_gflops")
    row("single: jaxnet float32 (steady)", "jaxnet_single_s", "jaxnet_single_gflops",
        "single_speedup_f32", "speedup vs numpy f32")
    if "single_speedup_f64" in results:
        lines.append(f"{'':44} {'':9} {'':8} {'':7} {results['single_speedup_f64']:7.2f}x"
                     "  speedup vs numpy f64")
    row("single: jaxnet compile time", "jaxnet_single_compile_s")
    row("single: jaxnet bfloat16 (steady)", "bf16_single_s", "bf16_single_gflops",
        "single_bf16_speedup_f32", "speedup vs numpy f32")
    if "single_bf16_speedup_jaxnet" in results:
        lines.append(f"{'':44} {'':9} {'':8} {'':7} "
                     f"{results['single_bf16_speedup_jaxnet']:7.2f}x  speedup vs jaxnet f32")
    row("single: jaxnet bfloat16 compile time", "bf16_single_compile_s")
    row(f"grid ({results.get('grid_configs')} configs): numpy float64 sequential",
        "grid_numpy_f64_s", "grid_numpy_f64_gflops")
    row("grid: jaxnet run_sweep, with compilation", "grid_jaxnet_s", "grid_jaxnet_gflops",
        "grid_speedup_f64", "speedup vs numpy f64")
    row("grid: jaxnet run_sweep, steady state", "grid_jaxnet_steady_s",
        "grid_jaxnet_steady_gflops", "grid_speedup_f64_steady")
    row("grid: bfloat16 run_sweep, with compilation", "grid_bf16_s", "grid_bf16_gflops",
        "grid_bf16_speedup_f64", "speedup vs numpy f64")
    row("grid: bfloat16 run_sweep, steady state", "grid_bf16_steady_s",
        "grid_bf16_steady_gflops", "grid_bf16_speedup_jaxnet", "speedup vs jaxnet f32 steady")
    if "sweep_configs" in results:
        row(f"sweep ({results['sweep_configs']} configs, batch 200): first call",
            "sweep_first_s")
        row(f"sweep ({results['sweep_configs']} configs): steady state", "sweep_steady_s",
            "sweep_steady_gflops")
    if "sweep48_peak_rss_mb" in results:
        lines.append(f"48-config sweep ({results['sweep48_iters']} iterations) in a child: "
                     f"peak RSS {results['sweep48_peak_rss_mb']:.0f} MB (ru_maxrss; VmHWM "
                     f"{results['sweep48_vmhwm_mb'] or 0:.0f} MB); the float32 data alone: "
                     f"{results['sweep48_data_mb']:.0f} MB")
    for name, text in (("grid", "notebook grid, best config"), ("preset", "best preset")):
        if f"accuracy_{name}_f32_val" in results:
            lines.append(f"accuracy, {text}: " + "; ".join(
                f"{label} val {results[f'accuracy_{name}_{key}_val']:.4f} test "
                f"{results[f'accuracy_{name}_{key}_test_full']:.4f}"
                for key, label in (("f32", "float32"), ("bf16", "bfloat16")))
                + f"; cost {results[f'accuracy_{name}_val_cost_points']:+.2f} / "
                  f"{results[f'accuracy_{name}_test_full_cost_points']:+.2f} points")
    platform = results["machine"]["platform"]
    checks = [(key, op, limit, text) for key, op, limit, text, target_platform in TARGETS
              if key in results and target_platform in (platform, None)]
    if checks:
        lines += ["", f"targets ({platform}):"]
        for key, op, limit, text in checks:
            value = results[key]
            verdict = "met " if COMPARISONS[op](value, limit) else "MISS"
            lines.append(f"  {verdict} {text}: {value:.3g} (target {op} {limit:g})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def parse_args():
    parser = cli.Parser(description=__doc__)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="repeats of each measurement (the median is reported)")
    parser.add_argument("--grid-repeats", type=int, default=1,
                        help="repeats of the grid's numpy reference (~90 s each) and of the "
                             "sweep's first call; 0 times the sweeps' steady state only")
    parser.add_argument("--only", default=",".join(DEFAULT_SECTIONS), metavar="LIST",
                        help=f"comma-separated sections among {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes that run in seconds: checks the harness, not the speed")
    parser.add_argument("--device", choices=["cpu", "gpu"], default=None,
                        help="device of the jaxnet rows (default: JAX's default device)")
    parser.add_argument("--sweep-configs", type=cli.positive_int, metavar="N",
                        help="time an N-config sweep of the notebook's shape (adds 'sweep')")
    parser.add_argument("--rss-iters", type=cli.positive_int, default=None,
                        help="iterations of the 48-config memory sweep (default 200; "
                             "memory does not grow with iterations beyond 4 bytes per "
                             "config and step of loss history)")
    parser.add_argument("--data-dir", help="benchmark on CIFAR-10 from this folder instead of "
                                           "random data of its shape")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args()
    if args.rss_child:
        return rss_child(args)
    if args.json:   # found unwritable now, not after minutes of benchmark
        runs.check_output_file(Path(args.json), "--json")
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f"--only: unknown section(s) {', '.join(unknown) or '(none)'}; "
                         f"choose among {', '.join(SECTIONS)}")
    if args.sweep_configs and "sweep" not in sections:
        sections.append("sweep")
    if "sweep" in sections and not args.sweep_configs:
        raise ValueError("the 'sweep' section needs --sweep-configs N")
    if args.grid_repeats < 0:
        raise ValueError(f"--grid-repeats must be >= 0; got {args.grid_repeats}")
    measures_accuracy = [s for s in ("accuracy", "preset") if s in sections]
    if measures_accuracy and not args.data_dir:
        raise ValueError(f"the {' and '.join(measures_accuracy)} section(s) need CIFAR-10: "
                         "give --data-dir")
    sizes = sizes_for(args)
    device = runs.select_device(args.device)
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    results = {"machine": machine_info(device), "device": str(device),
               "sections": sections, "quick": args.quick, "repeats": args.repeats,
               "grid_repeats": args.grid_repeats, "flop_model": FLOP_MODEL,
               "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    if "rss" in sections:  # first, while this process is still small (see bench_rss)
        say("peak memory of a 48-config sweep (child process) ...")
        results.update(bench_rss(sizes, args, say))
    need_data = any(s in sections for s in ("single", "grid", "sweep"))
    if need_data:
        say("making the data ...")
        data32 = make_data(sizes, args.data_dir)
        results["data"] = (f"CIFAR-10 from {args.data_dir}" if args.data_dir else
                           "random float32 normal of CIFAR-10's shape (not real images)")
        results["data"] += (f": N={len(data32[0])}, D={data32[0].shape[1]}, "
                            f"M={len(data32[2])} validation rows")
    else:
        results["data"] = "none needed"
    if "single" in sections or "grid" in sections:
        data64 = (data32[0].astype(np.float64), data32[1], data32[2].astype(np.float64),
                  data32[3])
    if "peak" in sections:
        say("matrix peak ...")
        results.update(bench_peak(sizes, args.repeats))
        if device.platform != "cpu":
            results.update(bench_device_peak(device, sizes.device_peak_n, args.repeats))
    if "single" in sections:
        say("single run ...")
        results.update(bench_single(sizes, data32, data64, device, args.repeats, say))
    if "grid" in sections:
        say("notebook grid ...")
        results.update(bench_grid(sizes, data32, data64, device, args.repeats,
                                  args.grid_repeats, say))
    if "sweep" in sections:
        say(f"{args.sweep_configs}-config sweep ...")
        results.update(bench_sweep(sizes, data32, device, args.sweep_configs, args.repeats,
                                   say))
    if measures_accuracy:
        dataset = load_cifar10(sizes, args.data_dir)
    if "accuracy" in sections:
        say("accuracy: the notebook grid in float32 and bfloat16 ...")
        results.update(bench_accuracy(sizes, dataset, device, say))
    if "preset" in sections:
        say("accuracy: the best preset in float32 and bfloat16 ...")
        results.update(bench_preset(sizes, dataset, device, args.quick, say))
    peak = jaxnet_peak(results)
    if peak:
        for fraction, gflops in (("grid_peak_fraction", "grid_jaxnet_steady_gflops"),
                                 ("sweep_peak_fraction", "sweep_steady_gflops"),
                                 ("single_peak_fraction", "jaxnet_single_gflops")):
            if gflops in results:
                results[fraction] = results[gflops] / peak
    results["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(report(results))
    if args.json:
        runs.write_json(Path(args.json), results)
        print(f"results in {args.json}")


if __name__ == "__main__":
    cli.run(main, extra_errors=(RuntimeError,))
