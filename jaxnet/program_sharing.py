"""Processes of a CPU job share compiled programs: process 0 compiles each program
over the job's devices, the others load its binary (JAX's
``jax_share_binary_between_hosts``).

This module touches a private part of JAX (as ``gloo_address`` does, and
``distributed`` for the job's client): it replaces
``jax._src.cache_key._hash_accelerator_config``, the part of a compiled program's
key that names its devices. On the CPU (jaxlib 0.10) that part covers only the
process's own devices, so no two processes ever compute the same key and JAX's
own sharing waits forever. ``private_hash_function`` finds the function, or
returns None on a JAX where it is gone or has another signature, and then
nothing is shared (each process compiles its own programs, as without this
module); tests/test_program_sharing.py fails loudly in that case.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import platform
from typing import Callable

import jax
import numpy as np
from jax._src import cache_key  # JAX's keys of compiled programs (private)

PRIVATE_NAME = "_hash_accelerator_config"
PRIVATE_PARAMETERS = ["hash_obj", "accelerators"]


def private_hash_function() -> Callable | None:
    """JAX's own ``_hash_accelerator_config`` (even while replaced here), or None when
    this JAX has no such function with the parameters it is replaced for."""
    jax_hash = getattr(cache_key, PRIVATE_NAME, None)
    jax_hash = getattr(jax_hash, "jax_hash", jax_hash)
    if jax_hash is None or list(inspect.signature(jax_hash).parameters) != PRIVATE_PARAMETERS:
        return None
    return jax_hash


VOTE_BYTES = 33  # whether a process may share compiled programs, and its key's digest


def cpu_signature() -> bytes:
    """SHA-256 of what XLA compiles CPU code for: the machine's architecture and its
    instruction-set flags (``/proc/cpuinfo`` on Linux; the processor's name elsewhere)."""
    text = f"{platform.machine()} {platform.processor()}"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        text += next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    return hashlib.sha256(text.encode()).digest()


def job_wide_keys(cpu: bytes) -> list | None:
    """Make the keys under which JAX finds compiled programs agree between processes
    for programs over the devices of several processes. Returns a list that will hold
    this process's key of the first such program it compiles (less the key's last,
    constant parts), or None, changing nothing, on a JAX whose keys are made otherwise.

    JAX's key hashes the program, jaxlib, the XLA flags, the compile options and the
    program's devices; on the CPU (jaxlib 0.10) the devices' part covers only the
    process's own devices, so no two processes agree. For programs over several
    processes it is made here of every device of the program and ``cpu``, the CPU
    signature, since a binary is compiled for its host's CPU.
    """
    jax_hash = private_hash_function()
    if jax_hash is None:
        return None
    recorded = []

    def hash_devices(hash_obj, accelerators: np.ndarray) -> None:
        if len({d.process_index for d in accelerators.flat}) < 2:
            return jax_hash(hash_obj, accelerators)
        hash_obj.update(cpu)
        for d in accelerators.flat:
            hash_obj.update(f"{d.device_kind}:{d.id}:{d.process_index};".encode())
        if not recorded:
            recorded.append(hash_obj.copy().digest())

    hash_devices.jax_hash = jax_hash
    setattr(cache_key, PRIVATE_NAME, hash_devices)
    return recorded


def share_if_agreed(keys: list | None, allgather: Callable[[np.ndarray], np.ndarray]) -> None:
    """Let process 0 compile each program over the job's devices and the others load
    its binary (JAX's ``jax_share_binary_between_hosts``) instead of compiling the
    same program: processes on one host would compete for its cores (2 processes on
    2 cores spent 2-4 s more per sweep compiling than 1 process with 2 devices).

    ``keys`` (from ``job_wide_keys``) holds this process's key of the join's
    handshake. A process waits for a binary under its own key, so the job shares only
    when every process computed the same key (same CPUs, jaxlib, XLA flags, compile
    options, compression) and has the same JAX settings (which shape every later
    program: matmul precision, x64...), on CPUs, and without a persistent compilation
    cache (a process that finds a program there publishes nothing). Otherwise JAX's
    keys are put back and every process compiles its own programs. All processes
    decide together: a collective.
    """
    willing = bool(keys) and jax.devices()[0].platform == "cpu" and (
        not jax.config.jax_compilation_cache_dir)
    # Each process's own GPUs (*_visible_devices, set from the local rank) are its own.
    settings = repr(sorted((k, v) for k, v in jax.config.values.items()
                           if not k.endswith("_visible_devices")))
    zstd = importlib.util.find_spec("zstandard") is not None  # JAX's compression
    digest = hashlib.sha256(b"".join([keys[0] if keys else b"", settings.encode(),
                                      bytes([zstd])])).digest()
    everyone = allgather(np.frombuffer(bytes([willing]) + digest, np.uint8))
    if everyone[:, 0].all() and (everyone == everyone[0]).all():
        jax.config.update("jax_share_binary_between_hosts", True)
    elif keys is not None:
        setattr(cache_key, PRIVATE_NAME, private_hash_function())
