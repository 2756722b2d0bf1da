"""Train many two-layer networks at once and pick the best by validation accuracy.

The console command jaxnet-sweep is the same as python scripts/sweep.py.

With no arguments this is the notebook's sweep on CIFAR-10: learning rate in
{5e-4, 1e-3, 2.5e-3} x reg in {0.25, 0.5} x batch size in {100, 200},
hidden 50, 2000 iterations, decay 0.95.

Grid: give any hyperparameter a comma-separated list, e.g.
  --learning-rate 5e-4,1e-3 --reg 0.1,0.25 --hidden-size 50,100
Random search: --random N draws N configs; --NAME-range LOW:HIGH[:KIND] sets
a field's range, KIND being log (default for learning rate, reg, weight
decay, std), uniform or int; fields without a range keep their (single) value.
  --random 40 --learning-rate-range 1e-4:1e-2 --reg-range 1e-3:1
Preprocessing: --preprocess none,standardize,zca is one more grid dimension;
with --random each config draws its kind from the list. Each kind is fitted
once on the training split (--pca-components, --whiten-eps as in train.py).
Configs that share hidden size, batch size, iterations, optimizer, schedule,
seed, precision (--dtype, --compute-dtype; float32,bfloat16 sweeps both), which of
dropout, mixup, label smoothing and ema are on (not their values), and
preprocessing train together in one compiled program (a group), with the same
minibatches; the sweep's result for a config equals `scripts/train.py` with
the same flags, up to float rounding.

Writes to --out (default sweeps/<date-time>; an earlier sweep's folder only
with --overwrite): results.csv and results.json (every config, sorted by
validation accuracy), heatmap.png (validation accuracy over the two most
varied hyperparameters), best/, a run folder like train.py's for the best
config (params.npz with the mean image and the fitted preprocessing, so
scripts/predict.py can use it; plots, metrics.json), and last COMPLETE.
With --preprocess the tables have a preprocess column.

Progress (finished configs and the group in training) is saved in
OUT/checkpoint/ at most every --checkpoint-every seconds; Ctrl-C or SIGTERM
saves and stops, and --resume OUT continues the sweep with the same results
as one never interrupted.

Many processes (hosts) run one sweep together under srun or mpirun, or with
--coordinator HOST:PORT --num-processes N --process-id I given to each: the
configs are spread over every process's devices, every process prints the
same results, and process 0 writes OUT (see docs/distributed.md).
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxnet import distributed, precision, runs, search, sweep
from jaxnet.saved_model import mark_complete
from jaxnet.commands import cli
from jaxnet.download import DownloadError
from jaxnet.plots import plot_heatmap
from jaxnet.config import STATIC, TRACED, TrainConfig

NOTEBOOK_GRID = {"learning_rate": "5e-4,1e-3,2.5e-3", "reg": "0.25,0.5", "batch_size": "100,200"}
NOTEBOOK_BASE = TrainConfig(hidden_size=50, num_iters=2000, learning_rate_decay=0.95)
LOG_FIELDS = ("learning_rate", "reg", "weight_decay", "std")
ALIASES = {"learning_rate": ["--lr"]}


def parse_list(field: dataclasses.Field, text: str) -> list:
    """'1e-3,5e-4' -> [0.001, 0.0005], parsed with the field's type."""
    parse = cli.field_type(field)
    try:
        values = [parse(item) for item in text.split(",") if item.strip()]
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise ValueError(f"{cli.flag(field.name)}: cannot parse {text!r} ({exc})") from None
    if not values:
        raise ValueError(f"{cli.flag(field.name)}: no values in {text!r}; give V[,V...]")
    return values


def parse_range(field: dataclasses.Field, text: str) -> tuple:
    """'1e-4:1e-2[:log|uniform|int]' -> ('log', 0.0001, 0.01); KIND defaults by field."""
    default_kind = ("log" if field.name in LOG_FIELDS else
                    "int" if isinstance(field.default, int) else "uniform")
    return cli.parse_range(field.name, text, default_kind)


def parse_args():
    parser = cli.Parser(description=__doc__)
    fields = dataclasses.fields(TrainConfig)
    group = parser.add_argument_group("hyperparameters (comma-separated lists form a grid)")
    for field in fields:
        group.add_argument(cli.flag(field.name), *ALIASES.get(field.name, []),
                           dest=field.name, metavar="V[,V...]",
                           help=f"{cli.CONFIG_HELP[field.name]} (default: "
                                f"{NOTEBOOK_GRID.get(field.name, getattr(NOTEBOOK_BASE, field.name))})")
    group = parser.add_argument_group("random search")
    group.add_argument("--random", type=cli.positive_int, metavar="N",
                       help="draw N random configs from the --NAME-range flags")
    group.add_argument("--search-seed", type=cli.seed, default=0, help="seed of the random draws")
    for field in fields:
        if field.name not in ("optimizer", "schedule", "dtype", "compute_dtype", "flip"):
            group.add_argument(cli.flag(field.name) + "-range",
                               *[alias + "-range" for alias in ALIASES.get(field.name, [])],
                               dest=field.name + "_range",
                               metavar="LOW:HIGH[:KIND]", help=f"range of {field.name}")
    cli.add_preprocess_arguments(
        parser, "comma-separated preprocessing kinds: a grid dimension, or with --random "
                "drawn per config (default: none, and no preprocess column)")
    cli.add_data_arguments(parser)
    cli.add_out_arguments(parser, "sweep", "sweeps")
    cli.add_max_memory_argument(parser)
    parser.add_argument("--top", type=cli.positive_int, default=10,
                        help="rows of the results table to print")
    cli.add_checkpoint_arguments(parser)
    distributed.add_arguments(parser)
    return cli.resolve_resume(parser, parser.parse_args())


def build_configs(args) -> tuple[list, list]:
    """The configs the flags describe, a grid or --random draws within the ranges, and
    each config's preprocessing kind."""
    kinds = cli.parse_kinds(args.preprocess or "none")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {name: parse_list(fields[name], getattr(args, name))
              for name in fields if getattr(args, name) is not None}
    ranges = {name: parse_range(fields[name], getattr(args, name + "_range"))
              for name in fields if getattr(args, name + "_range", None) is not None}
    if ranges and not args.random:
        raise ValueError("--NAME-range flags need --random N")
    if args.random:
        if not ranges:
            raise ValueError("--random needs at least one --NAME-range (e.g. --learning-rate-range "
                             "1e-4:1e-2)")
        clash = [n for n in ranges if n in values and len(values[n]) > 1]
        if clash:
            raise ValueError(f"{', '.join(clash)}: give either a list or a range, not both")
        base = dataclasses.replace(NOTEBOOK_BASE, **{n: v[0] for n, v in values.items()})
        # The kinds are drawn last, so --preprocess leaves the drawn configs as they were.
        return search.random_preprocessed(args.random, {**ranges, "preprocess": kinds}, base,
                                          args.search_seed)
    lists = {**{n: parse_list(fields[n], t) for n, t in NOTEBOOK_GRID.items()}, **values}
    configs = sweep.grid(NOTEBOOK_BASE, **lists)
    return ([c for _ in kinds for c in configs],
            [kind for kind in kinds for _ in configs])


def command():
    """Train the configs the flags describe, write the results and the best run."""
    args = parse_args()
    configs, kinds = build_configs(args)
    configs = [c.validate() for c in configs]
    distributed.join(args)
    device = runs.select_device(args.device)
    devices = [d for d in distributed.devices() if d.platform == device.platform]
    dataset = runs.load_dataset(args)
    out = Path(args.out or Path("sweeps") / time.strftime("%Y%m%d-%H%M%S"))
    # Everything that would fail after training fails now, before minutes are spent.
    num_test = runs.check_test_split(dataset, args.eval_test, args.num_test)
    for kind, indices in search.by_kind(kinds).items():
        for group in sweep.group_configs([configs[i] for i in indices]):
            runs.check_memory(configs[indices[group[0]]], len(group), dataset, device,
                              input_size=args.pca_components if kind == "pca" else None,
                              max_memory=args.max_memory and args.max_memory * 2**20)
    transforms = search.fit_transforms(kinds, dataset["X_train"], args.pca_components,
                                       args.whiten_eps)
    if distributed.is_writer():
        runs.claim_out(out, args.overwrite, resuming=bool(args.resume))
    checkpoint = cli.open_checkpoint(args, out, say=lambda message: print(message,
                                                                           file=sys.stderr))
    checkpoint.stop_if_requested()
    # compute_dtype "auto", decided and said once per group (run_sweep keeps the choice).
    for kind, indices in search.by_kind(kinds).items():
        matrix = None if transforms[kind] is None else transforms[kind].matrix
        size = np.shape(dataset["X_train"] if matrix is None else matrix)[-1]
        decided = precision.resolve_all([configs[i] for i in indices], size, device,
                                        say=lambda message: print(message, file=sys.stderr))
        for i, config in zip(indices, decided):
            configs[i] = config
    num_groups = sum(search.count_groups(configs, kinds).values())
    processes = f" of {jax.process_count()} processes" if distributed.is_multiprocess() else ""
    print(f"{len(configs)} configs in {num_groups} groups on {len(devices)} "
          f"{device.platform} device(s){processes}", file=sys.stderr)

    bar = cli.ProgressBar("sweep")
    start = time.perf_counter()
    with jax.default_device(device), distributed.output_folder(out) as folder:
        result = search.sweep_preprocessed(
            configs, kinds, dataset, transforms,
            max_memory=None if args.max_memory is None else args.max_memory * 2**20,
            devices=devices, checkpoint=checkpoint,
            progress=lambda g, n, done, total: bar.update(done, total,
                                                          f"group {g + 1}/{n} iteration {done}"))
        bar.finish()
        wall_s = time.perf_counter() - start
        rows = sweep.results_table(result, kinds if args.preprocess else None)
        search.write_results(folder, rows, wall_s=wall_s)
        plot_heatmap(rows, folder / "heatmap.png")
        if result.best_index is None:
            raise ValueError(f"every config diverged; results in {out}")
        best, kind = result.results[result.best_index], kinds[result.best_index]
        metrics = runs.save_run(folder / "best", best.config, kind, transforms[kind],
                                  result.best_params, best.history, dataset, args.eval_test,
                                  num_test, best_val_acc=best.val_acc,
                                  sweep_wall_s=wall_s, device=str(device))
        checkpoint.remove()
        mark_complete(folder)

    best_row = next(row for row in rows if row["index"] == result.best_index)
    varied = [n for n in TRACED + STATIC + ("preprocess",)
              if n in best_row and len({row[n] for row in rows}) > 1]
    columns = varied + ["status", "val_acc", "train_acc", "final_loss"]
    print("  ".join(f"{c:>13}" for c in columns))
    for row in rows[:args.top]:
        print("  ".join(f"{row[c]:>13.4g}" if isinstance(row[c], float) else f"{row[c]!s:>13}"
                        for c in columns))
    print(f"best: {', '.join(f'{n}={best_row[n]}' for n in varied)}: "
          + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_acc" in k)
          + f"  ({len(configs)} configs in {wall_s:.1f} s)")
    print(f"results in {out}/ (results.csv, results.json, heatmap.png, best/)")


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    cli.run(command, extra_errors=(DownloadError,))
