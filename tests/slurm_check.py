"""Sweeps under a real one-node SLURM cluster (Debian's slurmctld, slurmd and munge),
brought up in a temporary folder and taken down after.

Not part of the default test run (its name does not start with test_): run it as
root with ``.venv/bin/python -m pytest tests/slurm_check.py``. Missing packages are
installed with apt-get (slurmd slurmctld munge slurm-client, about 10 s).

Checks that ``srun -n 2 scripts/sweep.py`` equals one process, and that a SIGTERM
to the job (``scancel --signal=TERM``) saves and stops every task, after which
``srun -n 2 scripts/sweep.py --resume OUT`` ends as an uninterrupted sweep.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_distributed import (GRID, assert_same_sweep, clean_environ, dataset, free_port,
                              reference_sweep)

PACKAGES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "munged": "munge",
            "srun": "slurm-client"}
SWEEP = [sys.executable, str(REPO / "scripts" / "sweep.py")]


def install_missing() -> None:
    missing = sorted({package for tool, package in PACKAGES.items()
                      if shutil.which(tool) is None})
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *missing], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def slurm_conf(folder: Path) -> str:
    """One node (this host, every CPU), one partition, no cgroups (``linuxproc``)."""
    return "\n".join([
        "ClusterName=jaxnet-check", f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}", "SlurmUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={folder / 'munge.sock'}",
        "CredType=cred/munge", f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}", f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2",
        f"NodeName={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} "
        "State=UNKNOWN",
        f"PartitionName=check Nodes={socket.gethostname()} Default=YES MaxTime=INFINITE "
        "State=UP OverSubscribe=YES", ""])


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment in which srun, squeue and scancel reach the cluster."""
    assert os.geteuid() == 0, "the SLURM daemons need root"
    install_missing()
    folder = tmp_path_factory.mktemp("slurm")
    for name in ("state", "spool"):
        (folder / name).mkdir()
    (folder / "munge.key").write_bytes(os.urandom(1024))
    (folder / "munge.key").chmod(0o600)
    (folder / "slurm.conf").write_text(slurm_conf(folder))
    env = {**clean_environ(), "SLURM_CONF": str(folder / "slurm.conf")}
    subprocess.run(["munged", "--force", f"--socket={folder / 'munge.sock'}",
                    f"--key-file={folder / 'munge.key'}", f"--log-file={folder / 'munged.log'}",
                    f"--pid-file={folder / 'munged.pid'}", f"--seed-file={folder / 'seed'}"],
                   check=True)
    try:
        for daemon in (["slurmctld", "-c"], ["slurmd"]):
            subprocess.run(daemon + ["-f", env["SLURM_CONF"]], check=True, env=env)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True,
                                           text=True, env=env).stdout:
            assert time.monotonic() < deadline, (folder / "slurmctld.log").read_text()[-2000:]
            time.sleep(0.5)
        yield env
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            pid = folder / f"{name}.pid"
            if pid.exists():
                subprocess.run(["kill", pid.read_text().strip()])


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("rows") / "rows.npz", 40)


def test_srun_sweep_equals_one_process(slurm, rows, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["srun", "-n", "2", *SWEEP, *GRID, "--num-iters", "200", "--data",
                           str(rows), "--out", str(out)], capture_output=True, text=True,
                          env=slurm, timeout=300)
    assert done.returncode == 0, done.stderr
    # Both tasks print the results, and say that they are 2 processes.
    assert done.stdout.count("best: ") == 2
    assert done.stderr.count("6 configs in 2 groups on 2 cpu device(s) of 2 processes") == 2
    assert_same_sweep(out, reference_sweep(rows, 200))


def test_scancel_term_saves_every_task_and_srun_resume_finishes(slurm, rows, tmp_path):
    out = tmp_path / "out"
    job = subprocess.Popen(["srun", "-n", "2", "--job-name", "jaxnet-check", *SWEEP, *GRID,
                            "--num-iters", "3000", "--checkpoint-every", "1e-9", "--data",
                            str(rows), "--out", str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=slurm)
    progress = out / "checkpoint" / "progress-none.npz"
    deadline = time.monotonic() + 180
    while not progress.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    assert progress.exists(), job.communicate()
    job_id = subprocess.run(["squeue", "-h", "-n", "jaxnet-check", "-o", "%i"],
                            capture_output=True, text=True, env=slurm).stdout.split()
    subprocess.run(["scancel", "--signal=TERM", *job_id], check=True, env=slurm)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 143, stderr
    continue_with = (f"continue with: every process of the job started again with --resume "
                     f"{out} (under SLURM: srun python {REPO / 'scripts' / 'sweep.py'} "
                     f"--resume {out})")
    assert stderr.count(continue_with) == 2, stderr
    resumed = subprocess.run(["srun", "-n", "2", *SWEEP, "--resume", str(out), "--data",
                              str(rows)], capture_output=True, text=True, env=slurm,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count(f"resuming from {out}/checkpoint/progress-none") == 2
    assert_same_sweep(out, reference_sweep(rows, 3000))
