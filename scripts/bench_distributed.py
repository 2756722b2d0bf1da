#!/usr/bin/env python3
"""The overhead of a multi-process sweep: the same sweep as 2 processes of 1 CPU device
each (jax.distributed, gloo) against 1 process of 2 CPU devices, on the same cores.

Both run the unchanged command a user runs (scripts/sweep.py, the notebook's
12-config grid by default, on CIFAR-10 from --data-dir): the 2-process form is
the README's one-machine form, the 1-process form gets 2 host devices with
XLA_FLAGS=--xla_force_host_platform_device_count=2. The two forms alternate,
--repeats times each, so a load that drifts on a shared machine touches both;
the ratio of the medians is the overhead (target <= 1.15x), and so is the
median of each repeat's own ratio (its two runs are back to back, under about
the same load: the steadier figure on a shared machine). Two times are kept
per run: the command's whole wall time (start, data loading, joining,
compiling, training, writing) and the sweep's own (the "configs in S s" that
sweep.py prints, from the first config to the last result).

Examples:
  python scripts/bench_distributed.py --repeats 3 --json bench_distributed.json
  python scripts/bench_distributed.py --repeats 1 -- --num-iters 200   # a quick check
Arguments after -- go to scripts/sweep.py (both forms).
"""
import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "scripts" / "sweep.py"
TARGET = 1.15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(form: str, sweep_args: list, out: Path) -> dict:
    """One sweep in ``form`` ("1x2": 1 process, 2 devices; "2x1": 2 processes, 1 device
    each); returns its wall times in seconds."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, str(SWEEP), *sweep_args, "--checkpoint-every", "0"]
    start = time.perf_counter()
    if form == "1x2":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        processes = [subprocess.Popen(command + ["--out", str(out)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    else:
        port = free_port()
        processes = [subprocess.Popen(
            command + ["--out", str(out), "--coordinator", f"127.0.0.1:{port}",
                       "--num-processes", "2", "--process-id", str(i)],
            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i in range(2)]
    ended = [p.communicate() for p in processes]
    wall = time.perf_counter() - start
    for p, (_, stderr) in zip(processes, ended):
        if p.returncode != 0:
            sys.exit(f"error: the {form} sweep failed (status {p.returncode}): "
                     f"{stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
    found = re.search(r"\((\d+) configs in ([0-9.]+) s\)", ended[0][0])
    return {"wall_s": wall, "sweep_s": float(found.group(2)), "configs": int(found.group(1))}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each form (default 3)")
    parser.add_argument("--data-dir", default=str(REPO / "data"),
                        help="folder holding cifar-10-batches-py (default: data/)")
    parser.add_argument("--json", help="write every run and the medians here")
    parser.add_argument("sweep_args", nargs="*", help="more scripts/sweep.py arguments")
    args = parser.parse_args()
    sweep_args = ["--data-dir", args.data_dir, *args.sweep_args]
    runs = {"1x2": [], "2x1": []}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        for r in range(args.repeats):
            for form in ("1x2", "2x1") if r % 2 == 0 else ("2x1", "1x2"):
                runs[form].append(run(form, sweep_args, Path(tmp) / f"{form}-{r}"))
                print(f"{form} run {r + 1}: wall {runs[form][-1]['wall_s']:.1f} s, sweep "
                      f"{runs[form][-1]['sweep_s']:.1f} s", file=sys.stderr)
    medians = {form: {k: statistics.median(run[k] for run in done) for k in ("wall_s", "sweep_s")}
               for form, done in runs.items()}
    ratios = {k: medians["2x1"][k] / medians["1x2"][k] for k in ("wall_s", "sweep_s")}
    # Each repeat's two runs ran back to back, under about the same load from others.
    paired = {k: statistics.median(b[k] / a[k] for a, b in zip(runs["1x2"], runs["2x1"]))
              for k in ("wall_s", "sweep_s")}
    print(f"{runs['1x2'][0]['configs']} configs, median of {args.repeats}: "
          f"1 process x 2 devices {medians['1x2']['wall_s']:.1f} s (sweep "
          f"{medians['1x2']['sweep_s']:.1f} s), 2 processes x 1 device "
          f"{medians['2x1']['wall_s']:.1f} s (sweep {medians['2x1']['sweep_s']:.1f} s); "
          f"ratio of medians {ratios['wall_s']:.3f}x wall, {ratios['sweep_s']:.3f}x sweep; "
          f"median of paired ratios {paired['wall_s']:.3f}x wall, {paired['sweep_s']:.3f}x "
          f"sweep (target <= {TARGET}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "sweep_args": sweep_args, "runs": runs, "medians": medians, "ratios": ratios,
            "paired_ratios": paired,
            "target": TARGET, "cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
