"""Hyperparameter sweeps: many networks trained at once in one compiled program.

Configs that share their structure (hidden size, batch size, iterations,
optimizer, schedule, seed, ...; ``config.STATIC``) form a group. A
group trains under ``jit(vmap(chunk))`` with the continuous hyperparameters
as arrays, so every value shares one compilation, and with one minibatch
schedule for all its configs: the K first-layer products then become one
wide product ``(B, D) @ (D, K*H)`` that runs near the machine's matrix peak.

The config axis is sharded over all local devices, or over every device of
every process in a multi-process job (``jaxnet.distributed``: results are
gathered at each chunk end, so every process holds them all); a group larger
than the memory budget is trained in chunks. Each config's result equals training it
alone with ``solver.train`` (same seed, same ``input_transform``), up to float
rounding.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import distributed, model, precision, resume, solver
from .arrays import fingerprint
from .config import TRACED, TrainConfig
from .kernels import device_array, training_rows
from .loop import LoopProgress, Schedule, compiled, compiled_chunk_fn, make_schedule, run_chunks
from .optim import learning_rate_at
from .step import init_state
from .validate import params_finite

# Optimizer state per parameter entry, in units of the parameter's size.
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}


def grid(base: TrainConfig = TrainConfig(), **values: Sequence) -> list[TrainConfig]:
    """The cartesian product of the given field values over ``base``.

    ``grid(learning_rate=[1e-3, 1e-2], reg=[0.1, 0.5])`` gives 4 configs, the
    last field varying fastest.
    """
    names = list(values)
    return [dataclasses.replace(base, **dict(zip(names, combo)))
            for combo in itertools.product(*(values[n] for n in names))]


def random_draws(n: int, ranges: dict, seed: int = 0) -> list[dict]:
    """``n`` dicts of values drawn independently from ``ranges``, one draw per name.

    Each range is ``("log", low, high)`` (log-uniform), ``("uniform", low,
    high)``, ``("int", low, high)`` (inclusive) or a list of choices. Names are
    drawn in the order of ``ranges``, so adding a name at the end leaves the
    earlier names' draws unchanged. The same seed gives the same draws.
    """
    rng = np.random.RandomState(seed)
    columns = {}
    for name, spec in ranges.items():
        kind = spec[0] if isinstance(spec, tuple) else "choice"
        if kind == "log":
            columns[name] = np.exp(rng.uniform(np.log(spec[1]), np.log(spec[2]), n)).tolist()
        elif kind == "uniform":
            columns[name] = rng.uniform(spec[1], spec[2], n).tolist()
        elif kind == "int":
            columns[name] = rng.randint(spec[1], spec[2] + 1, n).tolist()
        elif kind == "choice":
            columns[name] = [spec[i] for i in rng.randint(0, len(spec), n)]
        else:
            raise ValueError(f"unknown range kind {kind!r} for {name}; "
                             "use 'log', 'uniform', 'int' or a list of choices")
    return [{name: values[i] for name, values in columns.items()} for i in range(n)]


def random_configs(n: int, ranges: dict, base: TrainConfig = TrainConfig(),
                   seed: int = 0) -> list[TrainConfig]:
    """``n`` configs with fields drawn independently from ``ranges`` (see ``random_draws``)."""
    return [dataclasses.replace(base, **draw) for draw in random_draws(n, ranges, seed)]


def group_configs(configs: Sequence[TrainConfig]) -> list[list[int]]:
    """Indices of ``configs`` grouped by structure, groups in order of first appearance."""
    groups: dict = {}
    for i, config in enumerate(configs):
        groups.setdefault(config.structure(), []).append(i)
    return list(groups.values())


def estimate_memory(config: TrainConfig, num_configs: int, num_features: int,
                    num_classes: int, data_bytes: int, input_size: int | None = None) -> int:
    """Bytes a group of ``num_configs`` needs: the data plus, per config, params,
    best params, gradients, optimizer state and the weights' moving average, the
    per-step activations and the learning-rate schedule.

    ``input_size``: the network's inputs per row, k, when an input transform maps
    the ``num_features`` of a row to k (W1 is (k, H)); default ``num_features``.
    ``data_bytes`` counts the data as given; with ``compute_dtype`` bfloat16 the
    training rows' bfloat16 copy is passed in too (``_configs_per_chunk``).
    """
    itemsize = np.dtype(config.dtype).itemsize
    H, B = config.hidden_size, config.batch_size
    k = num_features if input_size is None else input_size
    param_count = model.param_count(k, H, num_classes)
    # params, best, grads, optimizer slots and, with ema, the moving average
    copies = 3 + OPTIMIZER_SLOTS[config.optimizer] + (config.ema > 0)
    activations = 4 * B * (H + num_classes)          # forward and backward, with margin
    per_config = itemsize * (copies * param_count + activations + config.num_iters)
    rows_itemsize = itemsize
    if config.compute_dtype == "bfloat16":
        per_config += 2 * k * H  # W1 cast to bfloat16 for the products
        rows_itemsize = 2
    return data_bytes + num_configs * per_config + B * num_features * rows_itemsize


class ConfigResult(NamedTuple):
    """One config's outcome. ``val_acc`` is the best validation accuracy seen."""

    config: TrainConfig
    status: str              # "ok" or "diverged"
    val_acc: float
    final_val_acc: float
    final_train_acc: float
    final_loss: float
    history: dict
    seconds: float           # the group chunk's wall time divided by its size
    params: dict | None      # final params, with run_sweep(keep_params=True)


class SweepResult(NamedTuple):
    """Every config's result, in input order, and the best config's params."""

    results: list
    best_index: int | None   # None when every config diverged
    best_params: dict | None


def _input_size(X: np.ndarray, transform: tuple | None) -> int:
    """The network's inputs per row: D of X (N, D), or k of the transform's matrix."""
    return X.shape[1] if transform is None else transform[1].shape[-1]


def _train_chunk(configs: list[TrainConfig], data: tuple, schedule: Schedule,
                 mesh: Mesh, chunk_size: int, progress: Callable | None,
                 transform: tuple | None, hook=None):
    """Train one chunk of a group (same structure) under vmap, sharded over ``mesh``.

    ``transform`` (mean (D,), matrix (D, k) or (D,)) is applied to each augmented
    minibatch inside the loop, shared by every config (not vmapped). ``hook``: as
    in ``loop.run_chunks``.
    Returns per-config final and best params (numpy, K leading axis), histories
    (K dicts) and best validation accuracies (K,).
    """
    config = configs[0]
    num_devices = mesh.devices.size
    padded = configs + [configs[0]] * (-len(configs) % num_devices)
    dtype = np.dtype(config.dtype)
    by_config = NamedSharding(mesh, PartitionSpec("configs"))
    replicated = NamedSharding(mesh, PartitionSpec())
    # distributed.put makes global arrays when the mesh spans processes (each process
    # places its own shards; X stays aliased); on one process it is device_put.
    hp = {name: distributed.put(np.array([c.hyperparams()[name] for c in padded], dtype),
                                by_config) for name in TRACED}
    # The training rows are cast once, for the whole chunk (kernels.training_rows).
    X = distributed.put(data[0], replicated, lambda a, to: training_rows(
        a, config.dtype, config.compute_dtype, to))
    X_val = distributed.put(data[2], replicated, lambda a, to: device_array(a, dtype, to))
    y, y_val = (distributed.put(a, replicated) for a in (data[1], data[3]))
    if transform is not None:
        transform = tuple(distributed.put(np.asarray(a, dtype), replicated) for a in transform)
    num_classes = int(max(np.max(data[1]), np.max(data[3]))) + 1
    state, lrs = _init_fn(config, _input_size(data[0], transform), num_classes)(
        hp, schedule.decays_before)
    # Leaves that do not depend on hp (zero biases, counters) come out of init
    # replicated, and out of each chunk sharded by config: placed as the chunk
    # returns them, the loop compiles once per group, not twice.
    state = jax.device_put(state, by_config)
    chunk_fn = compiled_chunk_fn(config, vmapped=True)
    state, histories, best_val_acc = run_chunks(
        chunk_fn, state, hp, lrs, (X, y, X_val, y_val), schedule, chunk_size, progress,
        transform, hook, read=distributed.host)
    K = len(configs)
    params, best_params = ({k: distributed.host(v)[:K] for k, v in tree.items()}
                           for tree in (state.params, state.best_params))
    return params, best_params, histories[:K], best_val_acc[:K]


def _init_fn(config: TrainConfig, num_features: int, num_classes: int) -> Callable:
    """``init(hp, decays_before) -> (state, lrs)`` of a group, vmapped over hp and jitted;
    cached like the loop, so a second sweep of the same shapes compiles nothing
    (a fresh closure per call recompiled it: ~1-2 s per group)."""
    def init(hp, decays_before):
        params = model.init_params(jax.random.key(config.seed), num_features,
                                   config.hidden_size, num_classes, hp["std"],
                                   np.dtype(config.dtype))
        steps = jnp.arange(decays_before.shape[0])
        lrs = learning_rate_at(config, hp, steps, decays_before)
        return init_state(config, hp, params, lrs), lrs
    return compiled(("init", config.structure(), num_features, num_classes),
                    lambda: jax.jit(jax.vmap(init, in_axes=(0, None))))


def run_sweep(configs: Sequence[TrainConfig], X, y, X_val, y_val,
              max_memory: float | None = None, devices: Sequence | None = None,
              chunk_size: int = 100, progress: Callable | None = None,
              keep_params: bool = False, input_transform: tuple | None = None,
              checkpoint: resume.Checkpoint | None = None) -> SweepResult:
    """Train every config; return their results and the best config's params.

    X: (N, D), y: (N,); X_val: (M, D), y_val: (M,). ``max_memory`` (bytes)
    splits groups into chunks that fit; ``devices`` defaults to all local
    devices, or every process's in a multi-process job (``jaxnet.distributed``),
    which must then run ``run_sweep`` with the same arguments on every process
    (refused, ValueError, when the data or the configs differ). ``progress(group, num_groups, done, total)`` is called between
    compiled chunks. A config whose loss or best params become NaN or infinite is
    marked "diverged" and never chosen as best; the others are unaffected.
    ``keep_params`` keeps every config's final params in its result.
    ``input_transform`` (mean (D,), matrix (D, k) or (D,)) maps rows to the
    networks' inputs ``(X - mean) @ matrix`` exactly as in ``solver.train``, so
    W1 is (k, H) and the params expect transformed rows.
    ``checkpoint`` saves the finished configs' results and the training chunk's
    progress, at most every ``checkpoint.every`` seconds and when the sweep
    ends, and stops with ``resume.Interrupted`` after a signal; with
    ``checkpoint.resume`` the sweep continues from there (finished configs are
    not trained again) with the same results as a sweep never interrupted.
    """
    configs = [c.validate() for c in configs]
    if not configs:
        raise ValueError("the sweep has no configs")
    num_classes = solver.check_data(X, y, X_val, y_val)
    solver.check_augmentable(any(c.flip or c.translate for c in configs), np.shape(X)[1])
    transform = solver.check_transform(input_transform, np.shape(X)[1])
    # "auto" is decided once per shape, before the configs identify the sweep.
    configs = precision.resolve_all(configs, np.shape(X)[1] if transform is None
                                    else np.shape(transform[1])[-1])
    inputs: dict = {}  # solver.loop_inputs by whether a group augments, each made once
    devices = list(devices or distributed.devices())
    mesh = Mesh(np.array(devices), ("configs",))
    results: list = [None] * len(configs)
    best = (None, -1.0, None)  # index, val_acc, params
    saved, identity = None, None
    if checkpoint is not None or distributed.is_multiprocess():
        identity = {
            "configs": [dataclasses.asdict(c) for c in configs], "chunk_size": chunk_size,
            "devices": len(devices), "max_memory": max_memory, "keep_params": keep_params,
            "data": fingerprint(X, y, X_val, y_val, *(transform or ()))}
        # Before training: processes holding other data or configs would train wrong.
        distributed.check_same(data=identity["data"], configs=fingerprint(
            np.frombuffer(json.dumps(identity["configs"]).encode(), np.uint8)))
    if checkpoint is not None:
        saved = _SweepProgress(checkpoint, identity)
        best = saved.restore(configs, results)
    groups = group_configs(configs)
    for g, indices in enumerate(groups):
        config = configs[indices[0]]
        dtype = np.dtype(config.dtype)
        augments = bool(config.flip or config.translate)
        if augments not in inputs:
            inputs[augments] = solver.loop_inputs(transform, augments, X, X_val)
        X_in, X_val_in, loop_transform = inputs[augments]
        with jax.enable_x64(dtype == np.float64):
            data = (np.asarray(X_in, dtype), np.asarray(y, np.int32),
                    np.asarray(X_val_in, dtype), np.asarray(y_val, np.int32))
            per_chunk = _configs_per_chunk(config, len(indices), data, loop_transform,
                                           num_classes, max_memory, len(devices))
            schedule = make_schedule(len(X), config.batch_size, config.num_iters,
                                     seed=config.seed)
            for start in range(0, len(indices), per_chunk):
                chunk = indices[start:start + per_chunk]
                if all(results[i] is not None for i in chunk):  # finished before a resume
                    continue
                report = None if progress is None else (
                    lambda done, total, _, g=g: progress(g, len(groups), done, total))
                t0 = time.perf_counter()
                params, best_params, histories, best_val = _train_chunk(
                    [configs[i] for i in chunk], data, schedule, mesh, chunk_size, report,
                    loop_transform, saved and saved.loop_hook((g, start), results, best))
                seconds = (time.perf_counter() - t0) / len(chunk)
                for k, (i, history) in enumerate(zip(chunk, histories)):
                    config_best = {n: v[k] for n, v in best_params.items()}
                    # NaN params with a finite loss: e.g. an average that blew up.
                    diverged = not (np.all(np.isfinite(history["loss_history"]))
                                    and params_finite(config_best))
                    results[i] = ConfigResult(
                        configs[i], "diverged" if diverged else "ok", float(best_val[k]),
                        history["val_acc_history"][-1], history["train_acc_history"][-1],
                        history["loss_history"][-1], history, seconds,
                        {n: v[k] for n, v in params.items()} if keep_params else None)
                    if not diverged and best_val[k] > best[1]:
                        best = (i, float(best_val[k]), config_best)
                if saved is not None:
                    saved.chunk_done(results, best)
    if saved is not None:
        saved.finished(results, best)
    return SweepResult(results, best[0], best[2])


class _SweepProgress:
    """A sweep's progress file: each finished config's result, the best so far and its
    params, and the progress of the chunk of configs in training (``position``: its group
    and its first config's place in the group)."""

    RECORD = ("status", "val_acc", "final_val_acc", "final_train_acc", "final_loss",
              "history", "seconds")

    def __init__(self, checkpoint: resume.Checkpoint, identity: dict):
        self.checkpoint, self.identity = checkpoint, identity
        self.position, self.loop = None, None

    def restore(self, configs: list, results: list) -> tuple:
        """Fill ``results`` with the saved finished configs; return the saved best
        (index, val_acc, params), or the empty best when nothing was saved."""
        found = self.checkpoint.load(self.identity, self._check_records)
        if found is None:
            return None, -1.0, None
        arrays, meta = found
        try:
            for key, record in meta["finished"].items():
                i = int(key)
                params = ({n: arrays[f"params/{i}/{n}"] for n in model.PARAM_NAMES}
                          if self.identity["keep_params"] else None)
                results[i] = ConfigResult(configs[i], *(record[f] for f in self.RECORD), params)
            index = meta["best"]
            best = (None, -1.0, None) if index is None else (
                index, results[index].val_acc,
                {n: arrays[f"best/{n}"] for n in model.PARAM_NAMES})
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"cannot resume from {self.checkpoint.path}: its sweep records "
                             f"are inconsistent ({exc!r})") from None
        if meta.get("position") is not None:
            self.position, self.loop = tuple(meta["position"]), (arrays, meta["step"])
        return best

    def _check_records(self, arrays: dict, meta: dict) -> None:
        """Raise ``CorruptCheckpoint`` for finished records that no sweep can write:
        accuracies outside [0, 1], an unknown status, a best that is not a finished,
        non-diverged config (the chunk in training is checked by ``resume.read_loop``)."""
        num_configs = len(self.identity["configs"])
        try:
            finished = {int(i): r for i, r in meta["finished"].items()}
            wrong = [i for i, r in finished.items() if not (
                0 <= i < num_configs and r["status"] in ("ok", "diverged")
                and all(0 <= r[f] <= 1 for f in ("val_acc", "final_val_acc", "final_train_acc")
                        if r[f] == r[f]))]   # r[f] != r[f]: NaN, a diverged config's
            best = meta["best"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise resume.CorruptCheckpoint(f"its sweep records are malformed ({exc!r})") from None
        if wrong:
            raise resume.CorruptCheckpoint(f"the records of configs {wrong[:5]} hold values no "
                                           f"sweep gives")
        if best is not None and finished.get(best, {}).get("status") != "ok":
            raise resume.CorruptCheckpoint(f"its best config {best!r} is not a finished one")
        if best is not None and not params_finite(
                {n: arrays.get(f"best/{n}", np.nan) for n in model.PARAM_NAMES}):
            raise resume.CorruptCheckpoint("its best params are missing or not finite")

    def save(self, results: list, best: tuple, position=None,
             loop: LoopProgress | None = None) -> None:
        finished = {str(i): {f: getattr(r, f) for f in self.RECORD}
                    for i, r in enumerate(results) if r is not None}
        arrays = {} if loop is None else resume.loop_arrays(loop)
        if best[0] is not None:
            arrays.update({f"best/{n}": v for n, v in best[2].items()})
        if self.identity["keep_params"]:
            arrays.update({f"params/{i}/{n}": v for i, r in enumerate(results) if r is not None
                           for n, v in r.params.items()})
        self.checkpoint.save(self.identity, arrays, {
            "finished": finished, "best": best[0], "position": position,
            "step": None if loop is None else loop.step})

    def loop_hook(self, position: tuple, results: list, best: tuple) -> "_ChunkHook":
        return _ChunkHook(self, position, results, best)

    def chunk_done(self, results: list, best: tuple) -> None:
        """After a chunk of configs: save when due, stop when a signal asked to."""
        if self.checkpoint.due():
            self.save(results, best)
        self.checkpoint.stop_if_requested()

    def finished(self, results: list, best: tuple) -> None:
        """At the end of the sweep: save every result (a resumed run then trains nothing)."""
        if self.checkpoint.every > 0:
            self.save(results, best)


class _ChunkHook:
    """``loop.run_chunks``'s hook for one chunk of configs of a sweep."""

    def __init__(self, progress: _SweepProgress, position: tuple, results: list, best: tuple):
        self.progress, self.position, self.results, self.best = progress, position, results, best

    def restore(self, template, schedule: Schedule, num_val: int) -> LoopProgress | None:
        if self.progress.position != self.position:
            return None
        arrays, step = self.progress.loop
        try:
            return resume.read_loop(arrays, step, template, schedule, num_val)
        except resume.CorruptCheckpoint as exc:
            raise ValueError(f"cannot resume from {self.progress.checkpoint.path}: {exc}") \
                from None

    def after_chunk(self, loop: LoopProgress) -> None:
        if self.progress.checkpoint.due():
            self.progress.save(self.results, self.best, self.position, loop)
        self.progress.checkpoint.stop_if_requested()


def _configs_per_chunk(config: TrainConfig, group_size: int, data: tuple,
                       transform: tuple | None, num_classes: int, max_memory: float | None,
                       num_devices: int) -> int:
    """How many configs of a group train together: all, or as many as ``max_memory`` allows
    (rounded down to a multiple of the device count when possible)."""
    if max_memory is None:
        return group_size
    data_bytes = sum(a.nbytes for a in data + tuple(transform or ()))
    if config.compute_dtype == "bfloat16":
        data_bytes += data[0].size * 2  # the training rows' bfloat16 copy
    num_features, input_size = data[0].shape[1], _input_size(data[0], transform)
    one = estimate_memory(config, 1, num_features, num_classes, data_bytes, input_size)
    if one > max_memory:
        raise ValueError(f"one config of hidden size {config.hidden_size} needs about "
                         f"{one / 2**20:.0f} MiB with the data, more than max_memory "
                         f"{max_memory / 2**20:.0f} MiB")
    per_config = estimate_memory(config, 2, num_features, num_classes, data_bytes,
                                 input_size) - one
    fit = int((max_memory - one) // per_config) + 1
    if fit >= num_devices:
        fit -= fit % num_devices
    return max(1, min(group_size, fit))


def results_table(result: SweepResult, preprocess: Sequence[str] | None = None) -> list[dict]:
    """One flat dict per config (hyperparameters and outcome), sorted by val_acc, best first.

    ``preprocess``: each config's preprocessing kind, in input order, shown in a
    ``preprocess`` column after the hyperparameters.
    """
    rows = []
    for index, r in enumerate(result.results):
        kind = {} if preprocess is None else {"preprocess": preprocess[index]}
        rows.append({"index": index, **dataclasses.asdict(r.config), **kind, "status": r.status,
                     "val_acc": r.val_acc, "final_val_acc": r.final_val_acc,
                     "train_acc": r.final_train_acc, "final_loss": r.final_loss,
                     "seconds": r.seconds})
    return sorted(rows, key=lambda row: (row["status"] != "ok", -row["val_acc"]))
