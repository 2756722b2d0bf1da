"""How a multi-process job ends when one of its processes fails or falls silent:
every process, at once, with one line each.

A process that stops with an error after joining (a flag, a file, a check) writes
its exit status and its line into the coordination service's key-value store
(``stop_job``). Every process watches that key from a thread of its own
(``watch``): the others, whatever they are doing (waiting in a collective for the
process that stopped, training, compiling), print ``error: process I stopped the
job: LINE`` and exit with the same status. Without this the others would wait in
their next collective until a timeout, and every process would then wait out JAX's
shutdown barrier and abort with a C++ trace.

The same thread is the job's heartbeat, ahead of JAX's own: each process bumps a
counter in the store every ``POLL_MS``; process 0 stops the job when another
process's counter stands still for ``silence`` seconds, and a process that cannot
reach the store for that long ends itself (a network cut ends both sides, each
with its line, exit status 3). JAX's heartbeat is set to twice as long, since on a
missed heartbeat JAX aborts the process with a C++ trace.

A process ends with ``os._exit``: a normal exit runs JAX's shutdown, which waits
for every process of the job to reach it.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import time

KEY = "jaxnet/stopped"
ALIVE = "jaxnet/alive/"  # + process number: its heartbeat counter
DONE = "jaxnet/done/"  # + process number: the process reached its normal exit
SEEN = "jaxnet/seen/"  # + process number: the process saw the stop and ends
POLL_MS = 500  # how often the stop key is looked at: the delay before the others stop
SEEN_WAIT = 3.0  # seconds a stopping process 0 waits for the others to read its stop
LOST_STATUS = 3
RESUME_HINT = ("Start every process of the job again with --resume OUT to continue from "
               "the last checkpoint")
_ending = threading.Lock()  # one line per process, whoever ends it first
_job: dict = {}  # the client, this process's number and the watcher, once watched


def watch(client, process_id: int, num_processes: int, silence: float) -> None:
    """Watch the job from daemon threads: a stop by another process ends this one
    (one line on stderr, that process's exit status), and so does ``silence``
    seconds without the coordination service or, on process 0, without another
    process's heartbeat. ``client`` is JAX's DistributedRuntimeClient. At a normal
    exit the process waits up to ``silence`` seconds for the others to reach
    theirs, still ending at once if one of them stops instead."""
    threads = [threading.Thread(target=target, name=f"jaxnet-{target.__name__[1:]}",
                                daemon=True) for target in (_watch, _watchdog)]
    _job.update(client=client, process_id=process_id, num_processes=num_processes,
                silence=silence, closing=threading.Event(), threads=threads,
                last_reply=time.monotonic())
    # Registered after JAX's own shutdown, so it runs first: no thread may sit in a
    # call into JAX while the interpreter ends, and JAX's shutdown then finds every
    # process there.
    atexit.register(_at_exit)
    for thread in threads:
        thread.start()


def _stopped() -> str | None:
    """The stop key's value ("process<TAB>status<TAB>line") after waiting up to
    POLL_MS for it; None when no process stopped. Raises when the service is gone."""
    try:
        return _job["client"].blocking_key_value_get(KEY, POLL_MS)
    except Exception as exc:  # noqa: BLE001 - jaxlib raises its own runtime errors
        if "DEADLINE_EXCEEDED" in str(exc) or "NOT_FOUND" in str(exc):
            return None
        raise


def _watch() -> None:
    client, me = _job["client"], _job["process_id"]
    beats, heard = 0, {}  # process -> (its last counter, when it changed)
    while not _job["closing"].is_set():
        try:
            client.key_value_set(f"{ALIVE}{me}", str(beats), allow_overwrite=True)
            beats += 1
            _job["last_reply"] = time.monotonic()
            if me == 0:
                _check_heartbeats(client, heard)
            value = _stopped()
        except Exception as exc:  # noqa: BLE001
            if not _job["closing"].is_set():
                # The coordination service is gone: process 0 died or cannot be reached.
                _end(LOST_STATUS, "error: " + lost_line(me, str(exc)))
            return
        if value is not None:
            _obey(value)


def _check_heartbeats(client, heard: dict) -> None:
    """On process 0: stop the job when another process's counter stood still for the
    job's silence."""
    now, counters = time.monotonic(), dict(client.key_value_dir_get(ALIVE))
    silent = []
    for process in range(1, _job["num_processes"]):
        counter = counters.get(f"{ALIVE}{process}", counters.get(str(process)))
        if process not in heard or heard[process][0] != counter:
            heard[process] = (counter, now)
        elif now - heard[process][1] > _job["silence"]:
            silent.append(str(process))
    if silent:
        stop_job(LOST_STATUS, f"error: process 0 heard nothing from process(es) "
                              f"{', '.join(silent)} for {_job['silence']:g} s "
                              f"(--heartbeat-timeout): killed, host down, network cut or "
                              f"stalled. {RESUME_HINT}",
                 readers=_job["num_processes"] - 1 - len(silent))


def _watchdog() -> None:
    """End this process when the coordination service has not answered for the job's
    silence (a network cut leaves the watcher's call waiting)."""
    while not _job["closing"].wait(POLL_MS / 1000):
        if time.monotonic() - _job["last_reply"] > _job["silence"]:
            _end(LOST_STATUS, f"error: process {_job['process_id']} heard nothing from "
                              f"process 0, the job's coordinator, for {_job['silence']:g} s "
                              f"(--heartbeat-timeout): killed, host down, network cut or "
                              f"stalled. {RESUME_HINT}")


def _obey(value: str) -> None:
    process, status, line = value.split("\t", 2)
    if int(process) != _job["process_id"]:
        with contextlib.suppress(Exception):  # tells process 0 that it may end
            _job["client"].key_value_set(f"{SEEN}{_job['process_id']}", "")
        _end(int(status), f"error: process {process} stopped the job: "
                          f"{line.removeprefix('error: ')}")


def _at_exit() -> None:
    """At a normal exit: stop watching, then wait for the other processes to reach
    their exit, or for one of them to stop the job (then end as it did)."""
    _job["closing"].set()
    for thread in _job["threads"]:
        thread.join()
    client, deadline = _job["client"], time.monotonic() + _job["silence"]
    try:
        client.key_value_set(f"{DONE}{_job['process_id']}", "")
        while time.monotonic() < deadline:
            value = _stopped()
            if value is not None:
                _obey(value)
            if len(client.key_value_dir_get(DONE)) >= _job["num_processes"]:
                return
    except Exception:  # noqa: BLE001 - the service is gone: JAX's shutdown says so
        return


def lost_line(process_id: int, reason: str) -> str:
    """The line of a process that lost the others after the job had started."""
    first = reason.strip().splitlines()[0] if reason.strip() else "no reason given"
    return (f"process {process_id} lost contact with the other processes of the job "
            f"({first}); one of them stopped (killed, out of memory, host down, network "
            f"cut). {RESUME_HINT}")


def stop_job(status: int, line: str, readers: int | None = None) -> None:
    """End this process with ``line`` (on stderr) and ``status``; in a watched job, first
    tell the other processes, which end too (process 0 waits until ``readers`` of
    them, by default all, have read it). Never returns."""
    if _job and not _job["closing"].is_set():
        client = _job["client"]
        try:
            client.key_value_set(KEY, f"{_job['process_id']}\t{status}\t{line}")
        except Exception:  # noqa: BLE001 - another process stopped first, or the service is gone
            with contextlib.suppress(Exception):
                value = _stopped()
                if value is not None:
                    _obey(value)
        if _job["process_id"] == 0:
            # Process 0 holds the coordination service: it stays until the others have
            # read the stop (or briefly), or they would see only the service vanish.
            deadline = time.monotonic() + SEEN_WAIT
            readers = _job["num_processes"] - 1 if readers is None else readers
            with contextlib.suppress(Exception):
                while (time.monotonic() < deadline
                       and len(client.key_value_dir_get(SEEN)) < readers):
                    time.sleep(0.05)
    _end(status, line)


def lost(line: str) -> None:
    """End this process after a collective failed: as the job's stop, when another
    process stopped it (its own error closed the connections), else with ``line`` and
    ``LOST_STATUS``. Never returns."""
    if _job and not _job["closing"].is_set():
        with contextlib.suppress(Exception):  # a stopping process wrote the key before leaving
            value = _stopped()
            if value is not None:
                _obey(value)
        # At least the process whose connection broke will not read the stop.
        stop_job(LOST_STATUS, line, readers=_job["num_processes"] - 2)
    stop_job(LOST_STATUS, line)


def _end(status: int, line: str) -> None:
    if not _ending.acquire(blocking=False):
        threading.Event().wait()  # another thread is ending the process
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(2, (line.rstrip("\n") + "\n").encode())
    os._exit(status)


def watched() -> bool:
    """Whether this process is one of a job whose stops it watches."""
    return bool(_job)
