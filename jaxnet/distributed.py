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

Failures are made short and bounded: launch mistakes are refused before joining;
joining gives up after ``--join-timeout`` with one line (JAX itself would abort
with a C++ trace); right after joining, process 0 compares every process's flags;
gloo is given an address the other hosts reach (``jaxnet.gloo_address``). Once
joined, an error on any process ends every process (``jaxnet.job_end``), and a
collective that fails because a peer died raises ``PeerLost``, which the scripts
turn into one line and exit status 3 without waiting for JAX's shutdown barrier.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
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
from jax._src import distributed as jax_distributed  # the job's client (private)
from jax.experimental import multihost_utils

from . import gloo_address, job_end, program_sharing

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}
# Process counts set by srun and mpirun; JAX reads the rest of these clusters' settings.
CLUSTER_SIZES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
PEER_LOST_STATUS = job_end.LOST_STATUS


class PeerLost(Exception):
    """A collective failed: another process of the job died or cannot be reached."""


MAX_SECONDS = 86_400.0  # a day: longer timeouts are mistakes (and overflow JAX's timers)
# Flags that may differ between the processes of a job: where each one is and reads its data,
# and its own timers. Every other flag must be the same on every process.
PROCESS_FLAGS = ("process_id", "coordinator", "data_dir", "data", "device", "join_timeout",
                 "heartbeat_timeout", "checkpoint_every", "verbose")


def seconds(text: str) -> float:
    """argparse type of the timeouts: a number of seconds in (0, one day]."""
    value = float(text)
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, {MAX_SECONDS:g}]; "
                                         f"got {text}")
    return value


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
    group.add_argument("--join-timeout", type=seconds, default=120.0, metavar="SECONDS",
                       help="give up when the job's processes have not all joined by then")
    group.add_argument("--heartbeat-timeout", type=seconds, default=60.0, metavar="SECONDS",
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


def _scheduler_size() -> tuple[str, int] | None:
    """(variable, processes) that srun or mpirun set for this job, if any."""
    for name in CLUSTER_SIZES:
        if os.environ.get(name, "").isdigit():
            return name, int(os.environ[name])
    return None


def join(args: argparse.Namespace) -> bool:
    """Join the job the flags, the environment or the cluster describe; False (and
    nothing done) for a process on its own. Call before anything else uses JAX.

    Raises ValueError for settings that cannot work, before joining. A job that
    cannot form (processes missing past ``args.join_timeout`` seconds, process 0
    unable to listen, processes started with different flags) ends the process
    with one line and status 2. Once joined, an error on any process ends every
    process of the job (``job_end``).
    """
    coordinator = _setting(args, "coordinator")
    num_processes = _setting(args, "num_processes", int)
    process_id = _setting(args, "process_id", int)
    if not _check_before_joining(coordinator, num_processes, process_id, _scheduler_size()):
        return False
    if not gloo_address.use_route_to_coordinator() and coordinator is not None:
        gloo_address.check_hostname(coordinator)  # what fails when gloo picks its address
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
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id,
                                   initialization_timeout=int(args.join_timeout) + 60,
                                   # jaxnet's heartbeat (job_end) ends a silent job first
                                   heartbeat_timeout_seconds=math.ceil(2 * args.heartbeat_timeout))
    except (RuntimeError, ValueError) as exc:
        job_end.stop_job(2, _join_failed(exc, coordinator))
    timer.cancel()
    client = jax_distributed.global_state.client
    job_end.watch(client, jax.process_index(), jax.process_count(), args.heartbeat_timeout)
    _check_same_launch(client, vars(args), args.join_timeout)
    _handshake()
    return True


def _handshake() -> None:
    """The job's first collective, which connects the processes, and their vote on
    sharing compiled programs; one line and status 2 when they cannot connect."""
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
        multihost_utils.process_allgather(np.zeros(program_sharing.VOTE_BYTES, np.uint8))
    except (RuntimeError, ValueError) as exc:
        job_end.stop_job(2, f"error: the processes of the job could not connect to each other "
                            f"({_first_line(exc)}); {gloo_address.HINT}")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    program_sharing.share_if_agreed(keys, _allgather)


def _check_before_joining(coordinator: str | None, num_processes: int | None,
                          process_id: int | None, scheduler: tuple[str, int] | None) -> bool:
    """Whether this process is one of a job (False: on its own); raises ValueError
    for settings that cannot work, and for launch mistakes that show before joining
    (a SLURM allocation entered without srun, a count that disagrees with the
    scheduler's, the coordinator's port taken on process 0's host)."""
    explicit = (coordinator, num_processes, process_id)
    cluster = scheduler is not None and scheduler[1] > 1
    if all(v is None for v in explicit) and not cluster:
        return False
    if not cluster and None in explicit:
        missing = [f"--{n.replace('_', '-')}" for n, v in zip(ENV, explicit) if v is None]
        raise ValueError(f"{', '.join(missing)} missing: outside SLURM and Open MPI a process "
                         f"of a job needs --coordinator HOST:PORT, --num-processes N and "
                         f"--process-id I")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1; got {num_processes}")
    if cluster and num_processes is not None and num_processes != scheduler[1]:
        raise ValueError(f"--num-processes {num_processes} disagrees with the scheduler's "
                         f"{scheduler[1]} tasks (${scheduler[0]}): leave --num-processes out "
                         f"under srun or mpirun, or ask the scheduler for {num_processes}")
    if process_id is not None and (process_id < 0 or (num_processes is not None
                                                      and process_id >= num_processes)):
        limit = "" if num_processes is None else (
            f" in [0, {num_processes - 1}] for --num-processes {num_processes}")
        raise ValueError(f"--process-id must be{limit or ' >= 0'}; got {process_id}")
    if cluster and coordinator is None and scheduler[0] == "SLURM_NTASKS" and (
            "SLURM_STEP_ID" not in os.environ):
        raise ValueError(f"this shell holds a SLURM allocation of {scheduler[1]} tasks but is "
                         f"none of them (started without srun): start the job with srun "
                         f"{_command_line()} (srun starts one process per task)")
    if coordinator is not None:
        address, _, port = coordinator.rpartition(":")
        if not address or not port.isdigit():
            raise ValueError(f"--coordinator must be HOST:PORT; got {coordinator!r}")
        if process_id == 0 or (process_id is None and _scheduler_rank() == 0):
            _check_port_free(int(port))
    return num_processes != 1


def _command_line() -> str:
    program = ["python", sys.argv[0]] if sys.argv[0].endswith(".py") else [sys.argv[0]]
    return shlex.join(program + sys.argv[1:])


def _scheduler_rank() -> int | None:
    for name in ("SLURM_PROCID", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def _check_port_free(port: int) -> None:
    """Refuse (ValueError) when something on this host already listens on ``port``,
    where process 0's coordination service is about to listen (on every address)."""
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As gRPC's listener: a closed connection's TIME_WAIT does not take the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("::" if family == socket.AF_INET6 else "", port))
        except OSError as exc:
            raise ValueError(f"port {port} of --coordinator is taken on this host "
                             f"({exc.strerror}: another program, or a second process given "
                             f"--process-id 0): start every process of the job with another "
                             f"port in --coordinator, and one process with each id") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _join_failed(exc: BaseException, coordinator: str | None) -> str:
    """The line of a process whose join JAX refused."""
    text = str(exc)
    if "coordinator_address should be defined" in text:
        return (f"error: no coordinator: JAX found no job to join here; under SLURM start "
                f"every process with srun {_command_line()}, elsewhere give each process "
                f"--coordinator HOST:PORT --num-processes N --process-id I")
    # Under srun or mpirun the port is JAX's choice, unknown before joining.
    if "Failed to start RPC server" in text:
        return (f"error: process 0 could not listen at {coordinator or 'its coordinator port'} "
                f"(the port is taken, or the address is not this host's): start every "
                f"process of the job with another --coordinator port")
    return f"error: could not join the job ({_first_line(exc)})"


def _check_same_launch(client, flags: dict, timeout: float) -> None:
    """Stop the job (status 2, one line on every process) when the processes were
    started with different flags, other than ``PROCESS_FLAGS``: e.g. one with --resume
    OUT and the others without, or with another --learning-rate. Each process puts its
    flags into the coordination service's key-value store and process 0 compares them,
    before any collective."""
    me, count = jax.process_index(), jax.process_count()
    mine = {k: v for k, v in flags.items() if k not in PROCESS_FLAGS}
    mine["command"] = os.path.basename(sys.argv[0])
    client.key_value_set(f"jaxnet/launch/{me}", json.dumps(mine, default=str, sort_keys=True))
    if me != 0:
        return  # process 0 stops the job if the flags differ (job_end)
    try:
        launches = [json.loads(client.blocking_key_value_get(f"jaxnet/launch/{p}",
                                                             int(timeout * 1000)))
                    for p in range(count)]
    except (RuntimeError, ValueError) as exc:
        job_end.stop_job(2, f"error: the processes of the job did not all report their flags "
                            f"within --join-timeout {timeout:g} s ({_first_line(exc)})")
    first = launches[0]
    for p, launch in enumerate(launches[1:], start=1):
        if (launch.get("resume") is None) != (first.get("resume") is None):
            resumed = first.get("resume") or launch.get("resume")
            with_, without = (0, p) if first.get("resume") else (p, 0)
            job_end.stop_job(2, f"error: process {with_} was started with --resume {resumed} "
                                f"and process {without} without: start every process with "
                                f"--resume {resumed} to continue that run, or every process "
                                f"without it for a new one")
        differ = sorted(k for k in first.keys() | launch.keys()
                        if first.get(k) != launch.get(k))
        if differ:
            shown = "; ".join(f"{_flag(k)} {_value(launch.get(k))} where process 0 has "
                              f"{_value(first.get(k))}" for k in differ[:3])
            job_end.stop_job(2, f"error: process {p} was started with other flags than process "
                                f"0 ({shown}): start every process of the job with the same "
                                f"command and flags (only --process-id, --coordinator, --data, "
                                f"--data-dir, --device, --checkpoint-every and the timeouts may "
                                f"differ)")


def _flag(name: str) -> str:
    return "the command" if name == "command" else "--" + name.replace("_", "-")


def _value(value) -> str:
    return "nothing" if value is None else str(value)


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
    reason = ("not every process of the job joined (each needs the same --num-processes "
              "and its own --process-id)")
    if coordinator is not None and process_id != 0:
        reason = (f"nothing answers at {coordinator}" if not _answers(coordinator, timeout=5)
                  else f"process 0 at {coordinator} did not let this process join (it "
                       f"failed or expects another --num-processes: see its output)")
    job_end.stop_job(2, f"error: could not join the job within --join-timeout {timeout:g} s: "
                        f"{reason} (start every process of the job: under srun or mpirun, or "
                        f"each with the same --coordinator, the address of process 0)")


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
        raise PeerLost(job_end.lost_line(jax.process_index(), str(exc))) from None


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
