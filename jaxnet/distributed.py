"""One sweep, many processes: joining JAX's multi-controller runtime, and moving
arrays between the processes of a job.

Every process runs the same program (``jax.distributed``): the configs of a sweep
are sharded over the global mesh (every device of every process), each process
trains the configs on its own devices, and the host code reads results through
``host``, which gathers the shards of the other processes
(``multihost_utils.process_allgather``). Process 0 writes the files.

A process joins when it is one of several: started by ``srun`` or ``mpirun``
(JAX detects SLURM and Open MPI itself), or given ``--coordinator HOST:PORT
--num-processes N --process-id I`` (or ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``). With none of these it stays a single
process and nothing here changes what it does. In a CPU job whose processes would
compile alike (same CPUs, jaxlib, XLA flags), process 0 compiles each program over
the job's devices and the others load its binary (``jaxnet.program_sharing``).

Failures are made short and bounded: joining gives up after ``--join-timeout``
with one line (JAX itself would abort with a C++ trace), and a collective that
fails because a peer died raises ``PeerLost``, which the scripts turn into one
line and exit status 3 without waiting for JAX's shutdown barrier.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from . import program_sharing

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}
# Process counts set by srun and mpirun; JAX reads the rest of these clusters' settings.
CLUSTER_SIZES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
PEER_LOST_STATUS = 3


class PeerLost(Exception):
    """A collective failed: another process of the job died or cannot be reached."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--coordinator, --num-processes, --process-id, --join-timeout, --heartbeat-timeout."""
    group = parser.add_argument_group(
        "many processes (jax.distributed; under srun or mpirun nothing is needed)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help=f"address of process 0, where the job's processes meet "
                            f"(default: ${ENV['coordinator']})")
    group.add_argument("--num-processes", type=int, metavar="N",
                       help=f"processes in the job (default: ${ENV['num_processes']})")
    group.add_argument("--process-id", type=int, metavar="I",
                       help=f"this process's number, 0 to N-1; process 0 writes the output "
                            f"(default: ${ENV['process_id']})")
    group.add_argument("--join-timeout", type=float, default=120.0, metavar="SECONDS",
                       help="give up when the job's processes have not all joined by then")
    group.add_argument("--heartbeat-timeout", type=int, default=60, metavar="SECONDS",
                       help="a process silent for this long is taken for dead and the job "
                            "stops; make it longer than one chunk of steps takes")


def _setting(args: argparse.Namespace, name: str, parse: Callable = str):
    value = getattr(args, name, None)
    if value is None and os.environ.get(ENV[name]):
        try:
            value = parse(os.environ[ENV[name]])
        except ValueError:
            raise ValueError(f"${ENV[name]} must be an integer; got "
                             f"{os.environ[ENV[name]]!r}") from None
    return value


def join(args: argparse.Namespace) -> bool:
    """Join the job the flags, the environment or the cluster describe; False (and
    nothing done) for a process on its own. Call before anything else uses JAX.

    Raises ValueError for settings that cannot work. When the processes have not
    all joined within ``args.join_timeout`` seconds, the process ends with one line
    and status 2.
    """
    coordinator = _setting(args, "coordinator")
    num_processes = _setting(args, "num_processes", int)
    process_id = _setting(args, "process_id", int)
    explicit = (coordinator, num_processes, process_id)
    cluster = any(os.environ.get(v, "1").isdigit() and int(os.environ[v]) > 1
                  for v in CLUSTER_SIZES if v in os.environ)
    if all(v is None for v in explicit) and not cluster:
        return False
    if not cluster and None in explicit:
        missing = [f"--{n.replace('_', '-')}" for n, v in zip(ENV, explicit) if v is None]
        raise ValueError(f"{', '.join(missing)} missing: outside SLURM and Open MPI a process "
                         f"of a job needs --coordinator HOST:PORT, --num-processes N and "
                         f"--process-id I")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1; got {num_processes}")
    if process_id is not None and (process_id < 0 or (num_processes is not None
                                                      and process_id >= num_processes)):
        limit = "" if num_processes is None else (
            f" in [0, {num_processes - 1}] for --num-processes {num_processes}")
        raise ValueError(f"--process-id must be{limit or ' >= 0'}; got {process_id}")
    if args.join_timeout <= 0 or args.heartbeat_timeout < 1:
        raise ValueError(f"--join-timeout and --heartbeat-timeout must be > 0; got "
                         f"{args.join_timeout:g} and {args.heartbeat_timeout}")
    if coordinator is not None:
        address, _, port = coordinator.rpartition(":")
        if not address or not port.isdigit():
            raise ValueError(f"--coordinator must be HOST:PORT; got {coordinator!r}")
    if num_processes == 1:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # SIGTERM is handled by jaxnet itself (resume.stop_on_signals); JAX's preemption
    # service would only add log lines when a process dies.
    jax.config.update("jax_enable_preemption_service", False)
    # JAX aborts the process with a C++ trace when its own join deadline passes, so
    # its deadline is set past ours and a timer ends the process first, in one line.
    timer = threading.Timer(args.join_timeout, _give_up_joining,
                            (coordinator, process_id, args.join_timeout))
    timer.daemon = True
    timer.start()
    if coordinator is not None and process_id not in (None, 0):
        _wait_for_coordinator(coordinator, time.monotonic() + args.join_timeout)
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=int(args.join_timeout) + 60,
                               heartbeat_timeout_seconds=args.heartbeat_timeout)
    timer.cancel()
    jax.config.update("jax_share_binary_between_hosts", False)  # until the processes agree
    keys = program_sharing.job_wide_keys(program_sharing.cpu_signature())
    # A first collective connects the processes now: a process that stops later
    # closes a live connection, and its peers' next collective fails at once. Gloo
    # announces the connection on stdout, where the results go: it is kept out.
    # Compiling this collective also computes this process's key of a program over
    # the job's devices, which the processes then compare.
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        _allgather(np.zeros(program_sharing.VOTE_BYTES, np.uint8))
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    program_sharing.share_if_agreed(keys, _allgather)
    return True


def _wait_for_coordinator(coordinator: str, deadline: float) -> None:
    """Return once process 0's coordination service accepts connections, or at
    ``deadline``. A process that connects before the service listens waits out gRPC's
    reconnect backoff, about 1 s: most of the join of processes started together."""
    while time.monotonic() < deadline and not _answers(coordinator, timeout=1):
        time.sleep(0.01)


def _answers(coordinator: str, timeout: float) -> bool:
    """Whether something accepts connections at ``coordinator`` (HOST:PORT)."""
    address, _, port = coordinator.rpartition(":")
    try:
        socket.create_connection((address.strip("[]"), int(port)), timeout=timeout).close()
        return True
    except OSError:
        return False


def _give_up_joining(coordinator: str | None, process_id: int | None, timeout: float) -> None:
    reason = "not every process of the job joined"
    if coordinator is not None and process_id != 0 and not _answers(coordinator, timeout=5):
        reason = f"nothing answers at {coordinator}"
    os.write(2, f"error: could not join the job within --join-timeout {timeout:g} s: "
                f"{reason} (start every process of the job: under srun or mpirun, or each "
                f"with the same --coordinator, the address of process 0)\n".encode())
    os._exit(2)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes files: process 0 (or the only process)."""
    return jax.process_index() == 0


def devices() -> list:
    """The devices a sweep shards configs over: every process's when the job has many
    processes, this process's own otherwise."""
    return jax.devices() if is_multiprocess() else jax.local_devices()


def host(x) -> np.ndarray:
    """``x`` as a numpy array on this host; shards held by other processes are gathered
    (a collective: every process must call it, in the same order). Raises ``PeerLost``
    when a process of the job is gone."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    return _allgather(x, tiled=True)


def _lost(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"process {jax.process_index()} lost contact with the other processes of the "
            f"job ({first}); one of them stopped (killed, out of memory, host down). "
            f"Rerun every process with --resume OUT to continue from the last checkpoint")


def put(a, sharding, place: Callable = jax.device_put) -> jax.Array:
    """``a`` (numpy, the same on every process) as a jax array laid out by ``sharding``.

    ``place(a, device_or_sharding)`` puts numpy on a device (e.g. ``kernels.device_array``
    to alias aligned buffers). A sharding over other processes' devices too is
    assembled from this process's shards, each placed by ``place``.
    """
    if sharding.is_fully_addressable:
        return place(a, sharding)
    a = np.asarray(a)
    index = sharding.addressable_devices_indices_map(a.shape)
    return jax.make_array_from_single_device_arrays(
        a.shape, sharding, [place(a[i], device) for device, i in index.items()])


def _allgather(mine, tiled: bool = False) -> np.ndarray:
    """Every process's ``mine`` (the same shape on each), stacked: (processes, ...);
    with ``tiled``, a global array's shards joined into the whole array."""
    try:
        return multihost_utils.process_allgather(mine, tiled=tiled)
    except (RuntimeError, ValueError) as exc:
        raise PeerLost(_lost(exc)) from None


def agree(flag: bool, signum: int | None) -> tuple[bool, int | None]:
    """Every process's ``flag`` or-ed, and the first signal any process received (None
    when none did): one decision the whole job takes together, e.g. to save now."""
    if not is_multiprocess():
        return flag, signum
    everyone = _allgather(np.array([int(flag), signum or 0], np.int32))
    signals = [int(s) for s in everyone[:, 1] if s]
    return bool(everyone[:, 0].any()), signals[0] if signals else None


def check_same(**digests: str) -> None:
    """Refuse (ValueError) when a SHA-256 hex digest differs between processes, e.g.
    ``check_same(data=arrays.fingerprint(X, ...))``: every process must train on the
    same data, or the results would silently be wrong."""
    if not is_multiprocess():
        return
    mine = np.frombuffer(b"".join(bytes.fromhex(d) for d in digests.values()), np.uint8)
    everyone = _allgather(mine).reshape(jax.process_count(), len(digests), -1)
    for k, name in enumerate(digests):
        differ = [p for p in range(len(everyone)) if not np.array_equal(everyone[p, k],
                                                                         everyone[0, k])]
        if differ:
            raise ValueError(f"the {name} differ between processes: process(es) "
                             f"{', '.join(map(str, differ))} hold other {name} than process 0 "
                             f"(checksums differ); every process must read the same dataset")


@contextlib.contextmanager
def output_folder(out: Path) -> Iterator[Path]:
    """``out`` on the writing process; elsewhere a temporary folder, deleted on leaving,
    so that every process runs the same code and prints the same lines while only
    process 0 writes into ``out``."""
    if is_writer():
        yield Path(out)
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"jaxnet-process{jax.process_index()}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
