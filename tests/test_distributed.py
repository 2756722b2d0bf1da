"""Multi-process sweeps and searches: real processes joined by jax.distributed on 127.0.0.1.

Each test spawns the scripts as 2 processes of one CPU device each (gloo
collectives), as the README's one-machine form does, and compares them with a
1-process run in this process: the same per-config results, best config and best
params. A killed process, mismatched data and bad flags must each end every
process quickly with one clear line.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from jaxnet import data, search, sweep
from jaxnet.commands import search as search_command
from jaxnet.config import TrainConfig

HIDDEN, RATES = (20, 30), (1e-3, 3e-3, 1e-2)  # 2 groups of 3 configs: not a multiple of 2
GRID = ["--hidden-size", "20,30", "--learning-rate", "1e-3,3e-3,1e-2", "--reg", "0.1",
        "--batch-size", "50", "--std", "1e-2", "--learning-rate-decay", "0.95"]
BASE = TrainConfig(batch_size=50, reg=0.1, std=1e-2, learning_rate_decay=0.95)
SEARCH = ["--coarse", "3", "--coarse-hidden", "20", "--coarse-epochs", "2", "--top", "2",
          "--narrow", "3", "--narrow-hidden", "30", "--narrow-epochs", "2", "--final-hidden",
          "30", "--final-epochs", "2", "--preprocess", "none", "--num-test", "50"]
PARAMS = ("W1", "b1", "W2", "b2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset(path: Path, features: int, shift: float = 0.0) -> Path:
    """An .npz of learnable rows (class centers plus noise), train/val/test."""
    rng = np.random.RandomState(0)
    centers = rng.randn(10, features)
    splits = {}
    for name, n in (("train", 300), ("val", 100), ("test", 50)):
        y = rng.randint(0, 10, n)
        splits[f"X_{name}"] = (centers[y] + 2 * rng.randn(n, features) + shift).astype(np.float32)
        splits[f"y_{name}"] = y
    np.savez(path, **splits)
    return path


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("rows") / "rows.npz", 40)


def start(script: str, args: list, num: int = 2, extra: dict | None = None,
          dump: Path | None = None) -> list:
    """``num`` processes of ``scripts/<script>`` joined on a free port; ``extra[i]``
    replaces arguments of process i; with ``dump``, process i's XLA writes the
    programs it compiles or loads to ``dump/process<i>``."""
    port = free_port()
    env = {**clean_environ(), "PYTHONUNBUFFERED": "1"}
    return [subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / script), *(extra or {}).get(i, args),
         "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num),
         "--process-id", str(i), "--heartbeat-timeout", "10", "--join-timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**env, "XLA_FLAGS": f"--xla_dump_to={dump / f'process{i}'}"} if dump else env)
        for i in range(num)]


def clean_environ() -> dict:
    """This environment on the CPU, without a persistent compilation cache (with one,
    processes compile nothing that the cache holds, and share nothing)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    return {**env, "JAX_PLATFORMS": "cpu"}


def compiled_over_both(dump: Path) -> list[str]:
    """The programs over both processes' devices that a process compiled itself, in
    order: XLA dumps a program it compiles as it was before optimisation too."""
    return [p.name.split(".")[1] for p in sorted(dump.glob("*.before_optimizations.txt"))
            if "num_partitions=2" in p.read_text()]


def loaded(dump: Path) -> list[str]:
    """The programs a process loaded, compiled by another process, in order."""
    return [p.name.split(".")[1] for p in sorted(dump.glob("*.after_optimizations.txt"))]


def finish(processes: list, timeout: float = 240) -> list:
    """(status, stdout, stderr) of each process, all ended within ``timeout`` seconds."""
    try:
        ended = [p.communicate(timeout=timeout) for p in processes]
        return [(p.returncode, *outputs) for p, outputs in zip(processes, ended)]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def same_lines(a: str, b: str) -> bool:
    """Whether two processes printed the same lines, up to their wall times."""
    times = re.compile(r"\d+(\.\d+)? s\b")
    return times.sub("", a) == times.sub("", b)


def reference_sweep(path: Path, num_iters: int) -> sweep.SweepResult:
    d = data.load_npz(path)
    configs = sweep.grid(TrainConfig(**{**BASE.__dict__, "num_iters": num_iters}),
                         hidden_size=HIDDEN, learning_rate=RATES)
    return sweep.run_sweep(configs, d["X_train"], d["y_train"], d["X_val"], d["y_val"])


def assert_same_sweep(out: Path, ref: sweep.SweepResult):
    """results.json and best/params.npz in ``out`` equal the 1-process ``ref`` (1e-5)."""
    got = {(r["hidden_size"], r["learning_rate"]): r
           for r in json.loads((out / "results.json").read_text())["results"]}
    assert len(got) == len(ref.results) == 6
    for r in ref.results:
        row = got[(r.config.hidden_size, r.config.learning_rate)]
        assert row["status"] == r.status
        np.testing.assert_allclose([row["val_acc"], row["final_val_acc"], row["train_acc"],
                                    row["final_loss"]],
                                   [r.val_acc, r.final_val_acc, r.final_train_acc, r.final_loss],
                                   atol=1e-5)
    best = ref.results[ref.best_index].config
    config = json.loads((out / "best" / "config.json").read_text())
    assert (config["hidden_size"], config["learning_rate"]) == (best.hidden_size,
                                                                 best.learning_rate)
    saved = np.load(out / "best" / "params.npz")
    for name in PARAMS:
        np.testing.assert_allclose(saved[name], ref.best_params[name], atol=1e-5, err_msg=name)


def test_two_process_sweep_equals_one_process(rows, tmp_path):
    out, dump = tmp_path / "out", tmp_path / "xla"
    ended = finish(start("sweep.py", GRID + ["--num-iters", "200", "--data", str(rows),
                                             "--out", str(out)], dump=dump))
    assert [status for status, _, _ in ended] == [0, 0], [e for _, _, e in ended]
    # Process 0 compiles every program over both processes (each group's init and
    # loop, the gathers); process 1 compiles only the join's handshake and loads the rest.
    compiled = compiled_over_both(dump / "process0")
    assert {"jit_init", "jit_chunk"} <= set(compiled)
    assert compiled_over_both(dump / "process1") == ["jit__identity_fn"] == compiled[:1]
    assert loaded(dump / "process1") == compiled[1:]
    # Every process prints the same table and best line; process 1 writes nothing.
    assert same_lines(ended[0][1], ended[1][1]) and "best: " in ended[0][1]
    assert "6 configs in 2 groups on 2 cpu device(s) of 2 processes" in ended[0][2]
    assert sorted(p.name for p in out.iterdir()) == ["COMPLETE", "best", "heatmap.png",
                                                     "results.csv", "results.json"]
    assert_same_sweep(out, reference_sweep(rows, 200))


def test_killed_process_stops_the_other_and_resume_finishes(rows, tmp_path):
    out = tmp_path / "out"
    args = GRID + ["--num-iters", "3000", "--data", str(rows), "--out", str(out),
                   "--checkpoint-every", "1e-9"]
    processes = start("sweep.py", args)
    progress = out / "checkpoint" / "progress-none.npz"
    deadline = time.monotonic() + 180
    while not progress.exists() and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.05)
    assert progress.exists(), finish(processes)
    processes[1].kill()
    killed_at = time.monotonic()
    (status, stdout, stderr), _ = finish(processes, timeout=60)
    assert time.monotonic() - killed_at < 30
    assert status == 3
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    # Its next collective fails, or, in a longer chunk, the killed process's heartbeat
    # stops first.
    assert len(lines) == 1 and lines[0].startswith((
        "error: process 0 lost contact with the other processes",
        "error: process 0 heard nothing from process(es) 1")), stderr
    assert "--resume" in lines[0] and "Traceback" not in stderr
    # No result file was begun (the run folder's lock stays, held by no one); the
    # checkpoint files are complete (written atomically).
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint"]
    assert not [p for p in (out / "checkpoint").iterdir() if p.name.startswith(".")]
    saved = json.loads(str(np.load(progress)["meta"]))
    assert len(saved["finished"]) < 6
    # Both processes rerun with --resume: the sweep continues and ends as an uninterrupted one.
    resumed = finish(start("sweep.py", ["--resume", str(out), "--data", str(rows)]))
    assert [status for status, _, _ in resumed] == [0, 0], [e for _, _, e in resumed]
    # Each process says where it picked up, from which file.
    for _, _, stderr in resumed:
        assert re.search(rf"^resuming from {re.escape(str(out))}/checkpoint/progress-none"
                         rf"(\.previous)?\.npz: \d config\(s\) finished, group \d at step \d+$",
                         stderr, re.M), stderr
    assert_same_sweep(out, reference_sweep(rows, 3000))
    assert not (out / "checkpoint").exists()


JOB = """
import argparse, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxnet import distributed, program_sharing
coordinator, process_id, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if case == "other cpu" and process_id == 1:
    program_sharing.cpu_signature = lambda: bytes(32)  # as if its host had other CPUs
told = None if case == "mpirun" else process_id  # mpirun tells the count and the rank
distributed.join(argparse.Namespace(
    coordinator=coordinator, num_processes=None if told is None else 2, process_id=told,
    join_timeout=20, heartbeat_timeout=10))
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("configs",)), PartitionSpec("configs"))
x = distributed.put(np.arange(4.0), sharding)
print(jax.process_index(), distributed.host(jax.jit(lambda x: x @ x * x)(x)))
"""
MPIRUN = {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://127.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2"}


@pytest.mark.parametrize("case, shared", [
    ("mpirun", True), ("other cpu", False), ("other XLA flags", False),
    ("other JAX settings", False), ("other XLA flags, sharing asked for", False),
    ("persistent cache", False)])
def test_processes_share_programs_only_with_the_same_keys(tmp_path, case, shared):
    """Process 1 loads process 0's binaries only when both compute the same key for
    a program (same CPUs, XLA flags...), have the same JAX settings and no persistent
    cache could serve process 0 instead; otherwise each compiles its own, and neither
    waits for the other."""
    coordinator, processes = f"127.0.0.1:{free_port()}", []
    for i in range(2):
        env = {**clean_environ(), "XLA_FLAGS": f"--xla_dump_to={tmp_path / f'process{i}'}"}
        if case == "mpirun":
            env.update(MPIRUN, OMPI_COMM_WORLD_RANK=str(i), OMPI_COMM_WORLD_LOCAL_RANK=str(i))
        if case.startswith("other XLA flags") and i == 1:
            env["XLA_FLAGS"] += " --xla_cpu_enable_fast_math=false"
        if case.endswith("sharing asked for"):
            env["JAX_SHARE_BINARY_BETWEEN_HOSTS"] = "true"
        if case == "other JAX settings" and i == 1:  # changes the product, not the handshake
            env["JAX_DEFAULT_MATMUL_PRECISION"] = "highest"
        if case == "persistent cache":
            env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "cache")
        processes.append(subprocess.Popen(
            [sys.executable, "-c", JOB, coordinator, str(i), case], cwd=REPO, env=env,
            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    ended = finish(processes, timeout=60)
    assert [(status, stdout) for status, stdout, _ in ended] == [
        (0, f"{i} [ 0. 14. 28. 42.]\n") for i in range(2)], [e for _, _, e in ended]
    everything = ["jit__identity_fn", "jit__lambda", "jit__identity_fn"]  # join, x, gather
    assert compiled_over_both(tmp_path / "process0") == everything
    assert compiled_over_both(tmp_path / "process1") == (everything[:1] if shared else everything)
    assert loaded(tmp_path / "process1") == (everything[1:] if shared else [])


def test_processes_with_different_data_are_refused(rows, tmp_path):
    other = dataset(tmp_path / "other.npz", 40, shift=0.5)
    args = GRID + ["--num-iters", "100", "--out", str(tmp_path / "out")]
    ended = finish(start("sweep.py", args, extra={0: args + ["--data", str(rows)],
                                                  1: args + ["--data", str(other)]}))
    for status, _, stderr in ended:
        assert status == 2
        lines = [line for line in stderr.splitlines() if line.startswith("error")]
        # Each process finds the difference; the first to stop the job tells the other.
        assert len(lines) == 1 and lines[0].endswith(
            "the data differ between processes: process(es) 1 hold other data than process 0 "
            "(checksums differ); every process must read the same dataset"), stderr
        assert "Traceback" not in stderr
    assert not (tmp_path / "out" / "results.json").exists()


SALLOC = {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "vm"}  # no step


@pytest.mark.parametrize("flags, env, message", [
    (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"], {},
     "--process-id must be in [0, 1] for --num-processes 2; got 2"),
    (["--num-processes", "2", "--process-id", "1"], {}, "--coordinator missing"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "1"], {},
     "--coordinator must be HOST:PORT"),
    (["--coordinator", "127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1",
      "--join-timeout", "3"], {}, "could not join the job within --join-timeout 3 s: nothing "
                                  "answers at 127.0.0.1:"),
    (["--coordinator", "127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0",
      "--join-timeout", "3"], {}, "could not join the job within --join-timeout 3 s: not "
                                  "every process of the job joined"),
    (["--coordinator", "127.0.0.1:{taken}", "--num-processes", "2", "--process-id", "0"], {},
     "port {taken} of --coordinator is taken on this host"),
    (["--join-timeout", "inf"], {}, "--join-timeout: must be a number of seconds in (0, 86400]"),
    (["--join-timeout", "nan"], {}, "--join-timeout: must be a number of seconds in (0, 86400]"),
    (["--join-timeout", "1e12"], {}, "--join-timeout: must be a number of seconds in (0, 86400]"),
    (["--heartbeat-timeout", "99999999999"], {},
     "--heartbeat-timeout: must be a number of seconds in (0, 86400]"),
    ([], SALLOC, "this shell holds a SLURM allocation of 2 tasks but is none of them (started "
                 "without srun): start the job with srun python "),
    (["--num-processes", "3"], {**SALLOC, "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"},
     "--num-processes 3 disagrees with the scheduler's 2 tasks ($SLURM_NTASKS): leave "
     "--num-processes out under srun or mpirun"),
])
def test_bad_job_flags_give_one_line_and_status_2(rows, tmp_path, flags, env, message):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        ports = {"port": free_port(), "taken": taken.getsockname()[1]}
        flags, message = [f.format(**ports) for f in flags], message.format(**ports)
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--data",
                               str(rows), "--num-iters", "10", "--out", str(tmp_path / "out"),
                               *flags], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
    assert time.monotonic() - started < 40
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "resume" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_an_error_on_one_process_ends_every_process(rows, tmp_path):
    """Process 0 refuses its --out after joining; process 1, which has no such check,
    stops at once with process 0's line and status instead of waiting in a collective."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    ended = finish(start("sweep.py", GRID + ["--num-iters", "100", "--data", str(rows),
                                             "--out", str(out)]), timeout=60)
    assert [status for status, _, _ in ended] == [2, 2], [e for _, _, e in ended]
    first = ended[0][2].strip()
    assert first.startswith(f"error: --out {out} already holds results.json"), first
    lines = [line for line in ended[1][2].splitlines() if line.startswith("error")]
    assert lines == [first.replace("error: ", "error: process 0 stopped the job: ", 1)]
    assert lines[0] == ended[1][2].strip().splitlines()[-1]


@pytest.mark.parametrize("case", ["other learning rates", "resume and fresh"])
def test_processes_started_with_other_flags_are_refused(rows, tmp_path, case):
    """Both processes end with the same line, naming the flag, before any collective."""
    out = tmp_path / "out"
    args = GRID + ["--num-iters", "100", "--data", str(rows), "--out", str(out)]
    if case == "other learning rates":
        other = [("1e-3" if a == "1e-3,3e-3,1e-2" else a) for a in args]
        expected = ("error: process 1 was started with other flags than process 0 "
                    "(--learning-rate 1e-3 where process 0 has 1e-3,3e-3,1e-2): start every "
                    "process of the job with the same command and flags")
    else:
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "args.json").write_text("{}")  # a run that can be resumed
        args, other = ["--resume", str(out), "--data", str(rows)], args
        expected = (f"error: process 0 was started with --resume {out} and process 1 "
                    f"without: start every process with --resume {out} to continue that run, "
                    f"or every process without it for a new one")
    ended = finish(start("sweep.py", args, extra={1: other}), timeout=60)
    assert [status for status, _, _ in ended] == [2, 2], [e for _, _, e in ended]
    # Process 0 compares the flags and stops the job; process 1 ends with its line.
    for stderr, prefix in zip([e for _, _, e in ended], ["", "process 0 stopped the job: "]):
        assert stderr.startswith(expected.replace("error: ", f"error: {prefix}", 1)), stderr
        assert stderr.count("\n") == 1


def test_a_stopped_job_says_to_restart_every_process(rows, tmp_path):
    out = tmp_path / "out"
    processes = start("sweep.py", GRID + ["--num-iters", "3000", "--data", str(rows), "--out",
                                          str(out), "--checkpoint-every", "1e-9"])
    progress = out / "checkpoint" / "progress-none.npz"
    deadline = time.monotonic() + 180
    while not progress.exists() and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.05)
    for p in processes:
        p.send_signal(signal.SIGTERM)
    ended = finish(processes, timeout=60)
    assert [status for status, _, _ in ended] == [143, 143], [e for _, _, e in ended]
    for _, _, stderr in ended:
        assert stderr.strip().splitlines()[-1].endswith(
            f"continue with: every process of the job started again with --resume {out} "
            f"(under SLURM: srun python {REPO / 'scripts' / 'sweep.py'} --resume {out})")


def test_two_process_search_equals_one_process(tmp_path):
    images = dataset(tmp_path / "images.npz", 3072)
    out = tmp_path / "out"
    ended = finish(start("search.py", SEARCH + ["--data", str(images), "--out", str(out)]))
    assert [status for status, _, _ in ended] == [0, 0], [e for _, _, e in ended]
    assert same_lines(ended[0][1], ended[1][1]) and "answer: " in ended[0][1]
    summary = json.loads((out / "summary.json").read_text())
    # The same search in this process, from the same flags.
    plan = search_command.make_plan(search_command.build_parser().parse_args(SEARCH))
    ref = search.run_search(plan, data.load_npz(images), tmp_path / "ref", num_test=50)
    assert summary["best"]["config"] == ref["best"]["config"]
    for name, value in ref["best"]["metrics"].items():
        if name.endswith("_acc"):
            assert summary["best"]["metrics"][name] == pytest.approx(value, abs=1e-5), name
    saved, expected = (np.load(folder / "best" / "params.npz") for folder in (out, tmp_path / "ref"))
    for name in PARAMS:
        np.testing.assert_allclose(saved[name], expected[name], atol=1e-5, err_msg=name)
