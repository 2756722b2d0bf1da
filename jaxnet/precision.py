"""``compute_dtype="auto"``: bfloat16 products where they are faster on the device at hand,
float32 products otherwise.

Whether bfloat16 pays depends on the hardware: a CPU with AVX-512 BF16 or AMX
runs XLA's bfloat16 product about 1.25x faster than the float32 one, while on
an AVX2-only CPU it is emulated and 1.6-2x slower. ``choose`` decides:

1. on a CPU without the ``avx512_bf16`` or ``amx_bf16`` flag, float32 at once;
2. otherwise a short timed calibration (``time_products``) of the first
   layer's product, forward and backward, at the run's shapes in each
   precision; bfloat16 only when it takes at most ``MARGIN`` of float32's time.

The flags alone do not settle it: XLA hands matrix products to YNNPACK, which
picks its kernels from the CPU at run time, so ``XLA_FLAGS=--xla_cpu_max_isa=AVX2``
limits XLA's own code but not the products (docs/best_network.md); only
timing sees what the products really cost under the flags in force.

Calibrations are cached per machine in ``$JAXNET_CACHE_DIR`` (default
``~/.cache/jaxnet``)/precision.json, keyed by the CPU's model and flags, the
device, the jax version, ``XLA_FLAGS`` and the shapes (``machine_key``), so a
machine calibrates each shape once. The caller writes the choice into the
run's config: from then on the run is reproducible from its folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from . import model
from .config import TrainConfig
from .files import atomic_write

# CPU flags under which XLA runs bfloat16 products natively.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# bfloat16 must take at most this share of float32's time: a tie is float32's, which
# loses no accuracy.
MARGIN = 0.9
# Timed repetitions of the product after a warm-up call; the minimum is kept.
REPEATS = 5


class Choice(NamedTuple):
    """A decision: ``dtype`` ("float32" or "bfloat16"), why, and the seconds per product
    (forward and backward) measured in each precision (empty when none were timed)."""

    dtype: str
    reason: str
    seconds: dict


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset]:
    """The CPU's model name and flags, as Linux reports them ("", empty where unknown)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return "", frozenset()
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields.get("model name", ""), frozenset(fields.get("flags", "").split())


def cpu_rule(flags: frozenset) -> str | None:
    """Why bfloat16 cannot be fast on a CPU with ``flags``, or None when only timing can tell
    (or the flags are unknown)."""
    if flags and not flags & set(BF16_FLAGS):
        return f"the CPU has neither {' nor '.join(BF16_FLAGS)}"
    return None


def default_device(device=None) -> jax.Device:
    """``device``, else the device computations go to: JAX's default device (as
    ``jax.default_device`` sets it), else the first."""
    device = device or jax.config.jax_default_device
    if isinstance(device, str):
        return jax.devices(device)[0]
    return device or jax.devices()[0]


def machine_key(shapes: tuple, device=None) -> str:
    """The cache key of a calibration at ``shapes`` (H, D, B) on ``device`` (default: JAX's
    default device): everything that changes which product is faster."""
    device = default_device(device)
    name, flags = cpu_info()
    return json.dumps({"cpu": name, "flags": sorted(flags), "device": device.device_kind,
                       "platform": device.platform, "jax": jax.__version__,
                       "xla_flags": os.environ.get("XLA_FLAGS", ""), "shapes": list(shapes)},
                      sort_keys=True)


def cache_path() -> Path:
    """Where calibrations are kept: $JAXNET_CACHE_DIR (default ~/.cache/jaxnet)/precision.json."""
    folder = os.environ.get("JAXNET_CACHE_DIR") or Path.home() / ".cache" / "jaxnet"
    return Path(folder).expanduser() / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):   # missing or damaged: calibrate again
        return {}
    return cached if isinstance(cached, dict) else {}


def time_products(shapes: tuple, device=None) -> dict:
    """Seconds per first-layer product, forward and backward, in each precision.

    shapes: (H, D, B), W1 stored (H, D) as in the loop, a minibatch (B, D); the
    gradient of ``sum(model.hidden(...))`` with respect to W1, jitted, best of
    ``REPEATS`` after a warm-up (which also compiles). Returns
    {"float32": s, "bfloat16": s}.
    """
    H, D, B = shapes
    device = default_device(device)
    k1, k2 = jax.random.split(jax.random.key(0))
    W1 = jax.device_put(jax.random.normal(k1, (H, D), jnp.float32), device)
    X = jax.device_put(jax.random.normal(k2, (B, D), jnp.float32), device)
    seconds = {}
    for dtype in ("float32", "bfloat16"):
        rows = X.astype(jnp.bfloat16) if dtype == "bfloat16" else X
        grad = jax.jit(jax.grad(lambda W, X, dtype=dtype: jnp.sum(
            model.hidden({"W1": W, "b1": jnp.zeros(H, W.dtype)}, X, True, dtype))))
        grad(W1, rows).block_until_ready()
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            grad(W1, rows).block_until_ready()
            times.append(time.perf_counter() - start)
        seconds[dtype] = min(times)
    return seconds


def compare(seconds: dict) -> Choice:
    """The choice between measured ``seconds`` {"float32": s, "bfloat16": s}."""
    ratio = seconds["bfloat16"] / seconds["float32"]
    dtype = "bfloat16" if ratio <= MARGIN else "float32"
    return Choice(dtype, f"bfloat16 products took {ratio:.2f}x the time of float32 ones "
                         f"(bfloat16 needs <= {MARGIN}x)", dict(seconds))


def choose(shapes: tuple, device=None, timer: Callable | None = None,
           cache: Path | None = None) -> Choice:
    """The faster precision for a network of shapes (H, D, B) on ``device`` (see the module
    docstring); ``timer(shapes, device)`` measures (default ``time_products``), ``cache``
    keeps its answers (default ``cache_path()``)."""
    device = default_device(device)
    if device.platform == "cpu":
        rule = cpu_rule(cpu_info()[1])
        if rule:
            return Choice("float32", rule, {})
    cache = cache or cache_path()
    key = machine_key(shapes, device)
    seconds = _read_cache(cache).get(key)
    if (isinstance(seconds, dict) and set(seconds) == {"float32", "bfloat16"}
            and all(isinstance(v, (int, float)) and v > 0 for v in seconds.values())):
        choice = compare(seconds)
        return choice._replace(reason=choice.reason + ", measured earlier on this machine")
    seconds = (timer or time_products)(shapes, device)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # Read again: another process may have added its own calibration meanwhile.
        text = json.dumps({**_read_cache(cache), key: seconds}, indent=1).encode()
        atomic_write(cache, lambda f: f.write(text))
    except OSError:
        pass   # an unwritable cache costs a calibration next time, nothing else
    return compare(seconds)


def resolve(config: TrainConfig, input_size: int, device=None,
            say: Callable[[str], None] = lambda message: None, **options) -> TrainConfig:
    """``config`` with ``compute_dtype="auto"`` replaced by ``choose``'s answer for its
    shapes (hidden_size, input_size, batch_size); any other config as it is.

    float64 runs (exact checks) take float32 products, the only ones they allow.
    ``say`` gets one line naming the choice and why; ``options`` go to ``choose``.
    """
    if config.compute_dtype != "auto":
        return config
    if config.dtype != "float32":
        return dataclasses.replace(config, compute_dtype="float32")
    choice = choose((config.hidden_size, input_size, config.batch_size), device, **options)
    say(f"compute dtype auto for hidden {config.hidden_size}, batch {config.batch_size}: "
        f"{choice.dtype} ({choice.reason})")
    return dataclasses.replace(config, compute_dtype=choice.dtype)


def resolve_all(configs: list, input_size: int, device=None,
                say: Callable[[str], None] = lambda message: None, **options) -> list:
    """``resolve`` for each config, deciding once per distinct shape (a sweep's group).

    In a multi-process job every process takes process 0's choices (timings differ
    between processes; the configs must not).
    """
    auto = [c.compute_dtype == "auto" and c.dtype == "float32" for c in configs]
    shapes = list(dict.fromkeys((c.hidden_size, c.batch_size)
                                for c, decide in zip(configs, auto) if decide))
    decided = [resolve(dataclasses.replace(TrainConfig(), hidden_size=h, batch_size=b,
                                           compute_dtype="auto"),
                       input_size, device, say, **options).compute_dtype == "bfloat16"
               for h, b in shapes]
    if shapes and jax.process_count() > 1:
        decided = multihost_utils.broadcast_one_to_all(np.array(decided)).tolist()
    choice = {shape: "bfloat16" if bf16 else "float32" for shape, bf16 in zip(shapes, decided)}
    return [dataclasses.replace(c, compute_dtype=choice[(c.hidden_size, c.batch_size)])
            if decide else resolve(c, input_size, device, say, **options)
            for c, decide in zip(configs, auto)]
