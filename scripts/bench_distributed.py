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

--forms adds two forms that stand for processes on separate hosts, each pinned
to a core of its own (taskset), so that neither competes for the other's core:
"2x1pin" (compiled programs shared, as jaxnet does by default: process 0
compiles, process 1 loads its binaries) and "2x1pin-unshared" (process 1 runs
with one more XLA flag, which changes its programs' keys, so each process
compiles its own programs, as JAX does without jaxnet.program_sharing).
Ratios are against the first form given.

Examples:
  python scripts/bench_distributed.py --repeats 3 --json bench_distributed.json
  python scripts/bench_distributed.py --repeats 1 -- --num-iters 200   # a quick check
  python scripts/bench_distributed.py --forms 2x1pin,2x1pin-unshared --repeats 5
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
FORMS = ("1x2", "2x1", "2x1pin", "2x1pin-unshared")
# A flag that changes no program but the key of every program: no sharing between processes.
UNSHARED_FLAG = "--xla_cpu_enable_fast_math=false"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(form: str, sweep_args: list, out: Path) -> dict:
    """One sweep in ``form`` ("1x2": 1 process, 2 devices; "2x1": 2 processes, 1 device
    each; "2x1pin" and "2x1pin-unshared": 2 processes pinned to a core each, sharing
    compiled programs or not); returns its wall times in seconds."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, str(SWEEP), *sweep_args, "--checkpoint-every", "0"]
    start = time.perf_counter()
    if form == "1x2":
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        processes = [subprocess.Popen(command + ["--out", str(out)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    else:
        port, processes = free_port(), []
        for i in range(2):
            pin = ["taskset", "-c", str(i)] if form.startswith("2x1pin") else []
            own_env = dict(env)
            if form == "2x1pin-unshared" and i == 1:
                own_env["XLA_FLAGS"] = UNSHARED_FLAG
            processes.append(subprocess.Popen(
                pin + command + ["--out", str(out), "--coordinator", f"127.0.0.1:{port}",
                                 "--num-processes", "2", "--process-id", str(i)],
                env=own_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
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
    parser.add_argument("--forms", default="1x2,2x1",
                        help=f"comma-separated forms among {', '.join(FORMS)}; ratios are "
                             f"against the first (default: 1x2,2x1)")
    parser.add_argument("sweep_args", nargs="*", help="more scripts/sweep.py arguments")
    args = parser.parse_args()
    sweep_args = ["--data-dir", args.data_dir, *args.sweep_args]
    forms = args.forms.split(",")
    if len(forms) < 2 or any(f not in FORMS for f in forms):
        parser.error(f"--forms needs two or more of {', '.join(FORMS)}; got {args.forms!r}")
    runs = {form: [] for form in forms}
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        for r in range(args.repeats):
            for form in forms if r % 2 == 0 else forms[::-1]:
                runs[form].append(run(form, sweep_args, Path(tmp) / f"{form}-{r}"))
                print(f"{form} run {r + 1}: wall {runs[form][-1]['wall_s']:.1f} s, sweep "
                      f"{runs[form][-1]['sweep_s']:.1f} s", file=sys.stderr)
    keys = ("wall_s", "sweep_s")
    medians = {form: {k: statistics.median(run[k] for run in done) for k in keys}
               for form, done in runs.items()}
    first = forms[0]
    ratios = {form: {k: medians[form][k] / medians[first][k] for k in keys} for form in forms[1:]}
    # Each repeat's runs ran back to back, under about the same load from others.
    paired = {form: {k: statistics.median(b[k] / a[k] for a, b in zip(runs[first], runs[form]))
                     for k in keys} for form in forms[1:]}
    print(f"{runs[first][0]['configs']} configs, median of {args.repeats}: " + ", ".join(
        f"{form} {medians[form]['wall_s']:.1f} s (sweep {medians[form]['sweep_s']:.1f} s)"
        for form in forms))
    for form in forms[1:]:
        print(f"{form} / {first}: ratio of medians {ratios[form]['wall_s']:.3f}x wall, "
              f"{ratios[form]['sweep_s']:.3f}x sweep; median of paired ratios "
              f"{paired[form]['wall_s']:.3f}x wall, {paired[form]['sweep_s']:.3f}x sweep"
              + (f" (target <= {TARGET}x)" if (first, form) == ("1x2", "2x1") else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "sweep_args": sweep_args, "runs": runs, "medians": medians, "ratios": ratios,
            "paired_ratios": paired,
            "target": TARGET, "cpus": os.cpu_count(),
            "loadavg_after": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
