"""Hyperparameter search over preprocessing too, and the staged search behind the best preset.

A config of a search comes with a preprocessing kind: "none" (the mean-
subtracted rows as they are) or one of ``preprocess.KINDS``. Each kind is
fitted once on the training rows (``fit_transforms``), and the configs of a
kind train as one ``sweep.run_sweep`` with that transform
(``sweep_preprocessed``); the results come back merged, in input order.

``run_search`` is the staged random search that found the ``best`` preset
(``SearchPlan`` holds its settings; the defaults are that search):

1. coarse: short runs of a 1000-unit net, learning rate, dropout, shifts and
   preprocessing drawn from wide ranges;
2. narrow: ranges around the coarse stage's top configs (``narrow_ranges``),
   a 2000-unit net and longer runs;
3. final: the narrow stage's winner trained for the full budget at a few
   learning-rate scales (a longer run usually prefers a smaller rate); the
   best of these by validation accuracy is the answer.

The draws come from ``SearchPlan.seed`` and training is deterministic, so the
same plan gives the same search. Each stage writes its results as soon as it
ends, so nothing is lost when a later stage fails.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import shlex
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import numpy as np

from . import preprocess, resume, runs, sweep
from .saved_model import mark_complete
from .config import PRESET_BUDGET, PRESET_PREPROCESS, PRESETS, TrainConfig

CHOICES = ("none",) + preprocess.KINDS
BASE = TrainConfig(batch_size=200, reg=0.0, optimizer="adam", schedule="cosine", flip=True)
COARSE_RANGES = {"learning_rate": ("log", 5e-5, 3e-3), "dropout": ("uniform", 0.0, 0.6),
                 "translate": ("int", 0, 2)}
# Ranges a plan may add (scripts/search.py --mixup-range ...); without them those
# fields keep the base config's value.
EXTRA_RANGE_FIELDS = ("mixup", "label_smoothing", "ema")
# Dropout above this leaves too few units of a narrow net; TrainConfig needs < 1.
MAX_DROPOUT = 0.9


def fit_transforms(kinds: Sequence[str], X_train: np.ndarray, k: int | None = None,
                   eps: float | None = None) -> dict:
    """Each distinct kind fitted once on the training rows X_train (N, D): kind -> Transform,
    or None for "none". ``k`` and ``eps`` as in ``preprocess.fit``."""
    return {kind: None if kind == "none" else preprocess.fit(kind, X_train, k, eps)
            for kind in dict.fromkeys(kinds)}


def random_preprocessed(n: int, ranges: dict, base: TrainConfig,
                        seed: int = 0) -> tuple[list[TrainConfig], list[str]]:
    """``n`` configs and their preprocessing kinds, drawn as ``sweep.random_draws`` does.

    ``ranges`` holds TrainConfig fields and ``"preprocess"``, a list of kinds.
    With "preprocess" last, the configs equal ``sweep.random_configs`` over the
    other ranges: adding preprocessing to a search leaves its configs as they were.
    """
    draws = sweep.random_draws(n, ranges, seed)
    kinds = [draw.pop("preprocess") for draw in draws]
    return [dataclasses.replace(base, **draw) for draw in draws], kinds


def by_kind(kinds: Sequence[str]) -> dict[str, list[int]]:
    """The indices of each kind, kinds in order of first appearance."""
    indices: dict = {}
    for i, kind in enumerate(kinds):
        indices.setdefault(kind, []).append(i)
    return indices


def count_groups(configs: Sequence[TrainConfig], kinds: Sequence[str]) -> dict[str, int]:
    """The compiled groups (``sweep.group_configs``) of each kind's configs, by kind."""
    return {kind: len(sweep.group_configs([configs[i] for i in indices]))
            for kind, indices in by_kind(kinds).items()}


def sweep_preprocessed(configs: Sequence[TrainConfig], kinds: Sequence[str], dataset: dict,
                       transforms: dict, progress: Callable | None = None,
                       checkpoint: resume.Checkpoint | None = None,
                       **options) -> sweep.SweepResult:
    """Train ``configs[i]`` on the rows preprocessed by ``transforms[kinds[i]]``.

    dataset: X_train (N, D), y_train (N,), X_val (M, D), y_val (M,), unpreprocessed.
    One ``run_sweep`` per kind (``options`` are its keyword arguments). Returns
    every result in input order and the best over all kinds (on a tie, the kind
    that comes first in ``kinds``). ``progress(group, num_groups, done, total)``
    numbers the groups across all kinds. ``checkpoint``: each kind's sweep saves
    its progress in ``checkpoint.child(kind)`` (see ``sweep.run_sweep``).
    """
    if len(kinds) != len(configs):
        raise ValueError(f"need one preprocessing kind per config; got {len(kinds)} kinds "
                         f"for {len(configs)} configs")
    missing = sorted(set(kinds) - set(transforms))
    if missing:
        raise ValueError(f"no fitted transform for {', '.join(missing)}")
    counts = count_groups(configs, kinds)
    results: list = [None] * len(configs)
    best_index, best_val, best_params = None, -1.0, None
    groups_before = 0
    for kind, indices in by_kind(kinds).items():
        report = None if progress is None else (
            lambda g, n, done, total, offset=groups_before: progress(
                offset + g, sum(counts.values()), done, total))
        transform = transforms[kind]
        result = sweep.run_sweep(
            [configs[i] for i in indices], dataset["X_train"], dataset["y_train"],
            dataset["X_val"], dataset["y_val"], progress=report,
            input_transform=None if transform is None else (transform.mean, transform.matrix),
            checkpoint=None if checkpoint is None else checkpoint.child(kind), **options)
        for i, r in zip(indices, result.results):
            results[i] = r
        if result.best_index is not None and result.results[result.best_index].val_acc > best_val:
            best_index = indices[result.best_index]
            best_val, best_params = results[best_index].val_acc, result.best_params
        groups_before += counts[kind]
    return sweep.SweepResult(results, best_index, best_params)


def write_results(folder: Path, rows: list[dict], **fields) -> None:
    """results.csv (one row per config) and results.json (``fields`` and the rows) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write(folder / "results.csv", lambda f: f.write(text.getvalue().encode()))
    runs.write_json(folder / "results.json", {**fields, "results": rows})


# ----------------------------------------------------------------------------- staged search

@dataclasses.dataclass(frozen=True)
class SearchPlan:
    """The staged search's settings; the defaults are the search behind the ``best`` preset.

    Epochs are passes over the training rows: ``iterations`` turns them into steps.
    """

    base: TrainConfig = BASE
    ranges: dict = dataclasses.field(default_factory=lambda: dict(COARSE_RANGES))
    kinds: tuple = ("none", "standardize", "zca")
    pca_components: int = 400
    whiten_eps: float | None = None
    coarse: int = 16
    coarse_hidden: int = 1000
    coarse_epochs: float = 5
    top: int = 4
    narrow: int = 8
    narrow_hidden: int = 2000
    narrow_epochs: float = 10
    final_hidden: int = 2000
    final_epochs: float = 50
    final_lr_scales: tuple = (1.0, 0.33)
    seed: int = 0


def iterations(epochs: float, num_train: int, batch_size: int) -> int:
    """Steps of ``epochs`` passes, counted as the notebook's ``num_train / batch_size`` per
    epoch, plus one so that the last epoch ends on a validated step (50 epochs of 49,000
    rows in batches of 200: 12251)."""
    return int(epochs * num_train / batch_size) + 1


def narrow_ranges(rows: list[dict], top: int, coarse: dict | None = None) -> dict:
    """The narrow stage's ranges around the ``top`` best rows that trained ("ok").

    rows: a results table with a ``preprocess`` column, best first
    (``sweep.results_table``); ``coarse``: the coarse stage's ranges (default
    ``COARSE_RANGES``), the fields to narrow. Log ranges (learning rate):
    log-uniform over [min / 2, max * 2] of the top rows; uniform ranges: [min -
    margin, max + margin], margin 0.1 for dropout (clipped to [0, MAX_DROPOUT])
    and a quarter of the coarse width for the others (clipped to the coarse
    range); integer ranges (translate) and preprocess: a choice of the values seen.
    """
    best = [row for row in rows if row["status"] == "ok"][:top]
    if not best:
        raise ValueError("every config diverged; there is nothing to narrow the search around")
    ranges = {}
    for name, (kind, low, high) in (COARSE_RANGES if coarse is None else coarse).items():
        seen = [row[name] for row in best]
        if kind == "log":
            ranges[name] = ("log", min(seen) / 2, max(seen) * 2)
        elif kind == "uniform":
            margin, low, high = ((0.1, 0.0, MAX_DROPOUT) if name == "dropout"
                                 else ((high - low) / 4, low, high))
            ranges[name] = ("uniform", max(min(seen) - margin, low),
                            min(max(seen) + margin, high))
        else:
            ranges[name] = sorted(set(seen))
    ranges["preprocess"] = sorted({row["preprocess"] for row in best})
    return ranges


def coarse_stage_ranges(plan: SearchPlan) -> dict:
    """What the coarse stage draws: ``plan.ranges``' COARSE_RANGES fields, the
    preprocessing kind, then any other ranges. Drawn in this order (``random_draws``), a
    plan without extra ranges draws what the search drew before they existed."""
    return {**{k: v for k, v in plan.ranges.items() if k in COARSE_RANGES},
            "preprocess": list(plan.kinds),
            **{k: v for k, v in plan.ranges.items() if k not in COARSE_RANGES}}


def describe_ranges(ranges: dict) -> dict:
    """Ranges as JSON: ``{"dropout": {"uniform": [0, 0.6]}, "translate": {"choice": [0, 1]}}``."""
    return {name: {spec[0]: list(spec[1:])} if isinstance(spec, tuple) else {"choice": spec}
            for name, spec in ranges.items()}


def train_command(config: TrainConfig, kind: str, plan: SearchPlan,
                  data_flags: Sequence[str] = ()) -> str:
    """The scripts/train.py command line that trains ``config`` with preprocessing ``kind``:
    ``--preset best`` and the fields that differ from it (and num_iters, which would
    otherwise be the preset's time budget's), then ``data_flags``."""
    flags = ["--preset", "best"]
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value != getattr(PRESETS["best"], field.name) or (
                field.name == "num_iters" and PRESET_BUDGET["best"]):
            # The field's flag, as the train command spells it: hidden_size -> --hidden-size.
            flag = "--" + field.name.replace("_", "-")
            flags += [flag, str(int(value) if isinstance(value, bool) else value)]
    if kind != PRESET_PREPROCESS["best"]:
        flags += ["--preprocess", kind]
        if kind == "pca":
            flags += ["--pca-components", str(plan.pca_components)]
        if kind in ("pca", "zca") and plan.whiten_eps is not None:
            flags += ["--whiten-eps", str(plan.whiten_eps)]
    return shlex.join(["python", "scripts/train.py", *flags, "--eval-test", *data_flags])


def stage_base(plan: SearchPlan, hidden: int, epochs: float, num_train: int) -> TrainConfig:
    """``plan.base`` with a stage's hidden size and ``epochs`` over ``num_train`` rows."""
    return dataclasses.replace(plan.base, hidden_size=hidden,
                               num_iters=iterations(epochs, num_train, plan.base.batch_size))


def final_configs(winner: TrainConfig, plan: SearchPlan, num_train: int) -> list[TrainConfig]:
    """The final stage: ``winner`` with the final size and length, its learning rate times
    each of ``plan.final_lr_scales``."""
    final = stage_base(plan, plan.final_hidden, plan.final_epochs, num_train)
    return [dataclasses.replace(winner, hidden_size=final.hidden_size, num_iters=final.num_iters,
                                learning_rate=winner.learning_rate * scale)
            for scale in plan.final_lr_scales]


def check_plan(plan: SearchPlan, dataset: dict, device: jax.Device | None = None,
               max_memory: float | None = None) -> dict[str, TrainConfig]:
    """Each stage's base config (by stage name), checked before any stage trains: valid,
    and, given ``device``, one run of it fits in its memory (or ``max_memory`` bytes)."""
    num_train = len(dataset["X_train"])
    bases = {}
    for name in ("coarse", "narrow", "final"):
        epochs = getattr(plan, f"{name}_epochs")
        if not (0 < epochs and math.isfinite(epochs)):
            raise ValueError(f"{name}_epochs must be a finite number > 0; got {epochs}")
        bases[name] = stage_base(plan, getattr(plan, f"{name}_hidden"), epochs, num_train)
        try:
            bases[name].validate()
            if device is not None:
                runs.check_memory(bases[name], 1, dataset, device, max_memory=max_memory)
        except ValueError as exc:
            raise ValueError(f"the {name} stage ({epochs:g} epochs of {num_train} rows, hidden "
                             f"{bases[name].hidden_size}): {exc}") from None
    return bases


class Stage(NamedTuple):
    """A finished stage: its configs' kinds, the sweep's result and the results table."""

    kinds: list
    result: sweep.SweepResult
    rows: list
    wall_s: float


def run_stage(name: str, configs: list[TrainConfig], kinds: list[str], dataset: dict,
              transforms: dict, folder: Path, progress: Callable | None = None,
              checkpoint: resume.Checkpoint | None = None, **options) -> Stage:
    """Train one stage (``sweep_preprocessed``) and write folder/results.csv and .json.

    ``progress(stage, group, num_groups, done, total)``. ``checkpoint``: the
    stage saves its progress in ``checkpoint.child(name)``. Raises ValueError
    (after writing the results) when every config diverged.
    """
    report = None if progress is None else (
        lambda g, n, done, total: progress(name, g, n, done, total))
    start = time.perf_counter()
    result = sweep_preprocessed(configs, kinds, dataset, transforms, report,
                                None if checkpoint is None else checkpoint.child(name), **options)
    wall_s = time.perf_counter() - start
    rows = sweep.results_table(result, kinds)
    write_results(folder, rows, stage=name, wall_s=wall_s)
    if result.best_index is None:
        raise ValueError(f"every config of the {name} stage diverged; results in {folder}")
    return Stage(kinds, result, rows, wall_s)


def run_search(plan: SearchPlan, dataset: dict, out: Path, progress: Callable | None = None,
               say: Callable[[str], None] = lambda message: None, num_test: int = 1000,
               data_flags: Sequence[str] = (), device: str | None = None,
               checkpoint: resume.Checkpoint | None = None, **options) -> dict:
    """Run the coarse, narrow and final stages; return the summary written to out/summary.json.

    dataset: as ``runs.load_dataset`` gives it (X_train (N, D), ..., X_test,
    mean_image). The coarse stage draws with ``plan.seed``, the narrow one with
    ``plan.seed + 1``. Writes out/<stage>/results.csv and results.json as each
    stage ends, out/summary.json (the plan; each stage's ranges, top rows and
    wall time) after each stage, out/best/, the final winner's run folder
    (with test accuracies on the first ``num_test`` and on all test images),
    and last out/COMPLETE.
    ``progress(stage, group, num_groups, done, total)``; ``say`` gets one line
    per stage; ``data_flags`` end the scripts/train.py command in the summary;
    ``device`` (a name) is recorded in best/metrics.json; ``checkpoint``: each
    stage saves its progress there, and with ``checkpoint.resume`` a finished
    stage is read back, not trained again, and an unfinished one continues where
    it stopped; ``options`` go to ``sweep.run_sweep``.
    """
    if "X_test" not in dataset:
        raise ValueError("the search evaluates its answer on a test split; the dataset has no "
                         "X_test")
    start = time.perf_counter()
    num_train = len(dataset["X_train"])
    stage_bases = check_plan(plan, dataset)   # a stage that cannot train fails before any trains
    transforms = fit_transforms(plan.kinds, dataset["X_train"], plan.pca_components,
                                plan.whiten_eps)
    summary: dict = {"plan": dataclasses.asdict(plan), "stages": []}

    def stage(name, ranges, configs, kinds):
        say(f"{name}: {len(configs)} configs, hidden {configs[0].hidden_size}, "
            f"{configs[0].num_iters} iterations")
        done = run_stage(name, configs, kinds, dataset, transforms, out / name, progress,
                         checkpoint, **options)
        summary["stages"].append({
            "name": name, "configs": len(configs), "hidden_size": configs[0].hidden_size,
            "num_iters": configs[0].num_iters, "ranges": describe_ranges(ranges),
            "top": done.rows[:plan.top], "wall_s": done.wall_s})
        runs.write_json(out / "summary.json", summary)
        return done

    def random_stage(name, n, ranges, seed):
        return stage(name, ranges, *random_preprocessed(n, ranges, stage_bases[name], seed))

    coarse = random_stage("coarse", plan.coarse, coarse_stage_ranges(plan), plan.seed)
    narrow = random_stage("narrow", plan.narrow,
                          narrow_ranges(coarse.rows, plan.top, plan.ranges), plan.seed + 1)

    winner = narrow.result.results[narrow.result.best_index].config
    kind = narrow.kinds[narrow.result.best_index]
    configs = final_configs(winner, plan, num_train)
    final = stage("final", {"learning_rate": [c.learning_rate for c in configs]}, configs,
                  [kind] * len(configs))

    best = final.result.results[final.result.best_index]
    summary["wall_s"] = time.perf_counter() - start
    metrics = runs.save_run(out / "best", best.config, kind, transforms[kind],
                       final.result.best_params, best.history, dataset, True, num_test,
                       best_val_acc=best.val_acc, final_val_acc=best.final_val_acc,
                       search_wall_s=summary["wall_s"],
                       **({} if device is None else {"device": device}))
    summary["best"] = {"config": dataclasses.asdict(best.config), "preprocess": kind,
                       "metrics": metrics,
                       "command": train_command(best.config, kind, plan, data_flags)}
    runs.write_json(out / "summary.json", summary)
    mark_complete(out)
    return summary
