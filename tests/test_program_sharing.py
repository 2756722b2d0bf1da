"""jaxnet.program_sharing replaces one private function of JAX: this file fails loudly
when a JAX release renames it or changes its parameters (the job would then silently
compile every program in every process)."""
import hashlib
import inspect

import jax
import numpy as np
from jax._src import cache_key

from jaxnet import program_sharing


def test_jax_still_has_the_private_function_it_replaces():
    found = getattr(cache_key, program_sharing.PRIVATE_NAME, None)
    assert found is not None, (
        f"jax {jax.__version__} has no jax._src.cache_key.{program_sharing.PRIVATE_NAME}: "
        "update jaxnet/program_sharing.py")
    found = getattr(found, "jax_hash", found)
    assert list(inspect.signature(found).parameters) == program_sharing.PRIVATE_PARAMETERS
    assert program_sharing.private_hash_function() is found


def test_keys_of_one_process_programs_stay_jax_own_and_are_restored():
    """Programs over one process's devices keep JAX's key; putting JAX's function back
    (what a job that does not share does) leaves no trace of the replacement."""
    jax_hash = program_sharing.private_hash_function()
    recorded = program_sharing.job_wide_keys(bytes(32))
    try:
        replaced = getattr(cache_key, program_sharing.PRIVATE_NAME)
        assert replaced is not jax_hash and replaced.jax_hash is jax_hash
        devices = np.array(jax.local_devices())
        ours, theirs = (hashlib.sha256() for _ in range(2))
        replaced(ours, devices)
        jax_hash(theirs, devices)
        assert ours.digest() == theirs.digest() and recorded == []
    finally:
        setattr(cache_key, program_sharing.PRIVATE_NAME, jax_hash)
    assert program_sharing.private_hash_function() is jax_hash
