#!/usr/bin/env python3
"""Train many two-layer networks at once and pick the best by validation accuracy.

With no arguments this is the notebook's sweep on CIFAR-10: learning rate in
{5e-4, 1e-3, 2.5e-3} x reg in {0.25, 0.5} x batch size in {100, 200},
hidden 50, 2000 iterations, decay 0.95.

Grid: give any hyperparameter a comma-separated list, e.g.
  --learning-rate 5e-4,1e-3 --reg 0.1,0.25 --hidden-size 50,100
Random search: --random N draws N configs; --NAME-range LOW:HIGH[:KIND] sets
a field's range, KIND being log (default for learning rate, reg, weight
decay, std), uniform or int; fields without a range keep their (single) value.
  --random 40 --learning-rate-range 1e-4:1e-2 --reg-range 1e-3:1
Configs that share hidden size, batch size, iterations, optimizer, schedule
and seed train together in one compiled program (a group), with the same
minibatches; the sweep's result for a config equals `scripts/train.py` with
the same flags.

Writes to --out (default sweeps/<date-time>): results.csv and results.json
(every config, sorted by validation accuracy), heatmap.png (validation
accuracy over the two most varied hyperparameters), and best/, a run folder
like train.py's for the best config (params.npz, plots, metrics.json).
"""
import csv
import dataclasses
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from jaxnet import cli, runs, sweep  # noqa: E402
from jaxnet.data import DownloadError  # noqa: E402
from jaxnet.plots import plot_heatmap  # noqa: E402
from jaxnet.solver import TrainConfig  # noqa: E402

NOTEBOOK_GRID = {"learning_rate": "5e-4,1e-3,2.5e-3", "reg": "0.25,0.5", "batch_size": "100,200"}
NOTEBOOK_BASE = TrainConfig(hidden_size=50, num_iters=2000, learning_rate_decay=0.95)
LOG_FIELDS = ("learning_rate", "reg", "weight_decay", "std")
ALIASES = {"learning_rate": ["--lr"]}


def parse_list(field: dataclasses.Field, text: str) -> list:
    """'1e-3,5e-4' -> [0.001, 0.0005], parsed with the field's type."""
    parse = cli.field_type(field.default)
    try:
        return [parse(item) for item in text.split(",") if item.strip()]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{cli.flag(field.name)}: cannot parse {text!r} ({exc})") from None


def parse_range(field: dataclasses.Field, text: str) -> tuple:
    """'1e-4:1e-2[:log|uniform|int]' -> ('log', 0.0001, 0.01)."""
    parts = text.split(":")
    default_kind = ("log" if field.name in LOG_FIELDS else
                    "int" if isinstance(field.default, int) else "uniform")
    kind = parts[2] if len(parts) == 3 else default_kind
    try:
        low, high = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise ValueError(f"{cli.flag(field.name)}-range must be LOW:HIGH[:KIND]; got {text!r}") \
            from None
    if kind not in ("log", "uniform", "int") or not low <= high or (kind == "log" and low <= 0):
        raise ValueError(f"{cli.flag(field.name)}-range {text!r}: need LOW <= HIGH (> 0 for log) "
                         "and KIND log, uniform or int")
    return (kind, int(low), int(high)) if kind == "int" else (kind, low, high)


def parse_args():
    parser = cli.Parser(description=__doc__)
    fields = dataclasses.fields(TrainConfig)
    group = parser.add_argument_group("hyperparameters (comma-separated lists form a grid)")
    for field in fields:
        group.add_argument(cli.flag(field.name), *ALIASES.get(field.name, []),
                           dest=field.name, metavar="V[,V...]",
                           help=f"{cli.CONFIG_HELP[field.name]} (default: "
                                f"{NOTEBOOK_GRID.get(field.name, getattr(NOTEBOOK_BASE, field.name))})")
    search = parser.add_argument_group("random search")
    search.add_argument("--random", type=cli.positive_int, metavar="N",
                        help="draw N random configs from the --NAME-range flags")
    search.add_argument("--search-seed", type=int, default=0, help="seed of the random draws")
    for field in fields:
        if field.name not in ("optimizer", "schedule", "dtype", "flip"):
            search.add_argument(cli.flag(field.name) + "-range",
                                *[alias + "-range" for alias in ALIASES.get(field.name, [])],
                                dest=field.name + "_range",
                                metavar="LOW:HIGH[:KIND]", help=f"range of {field.name}")
    cli.add_data_arguments(parser)
    parser.add_argument("--out", help="output folder (default: sweeps/<date-time>)")
    parser.add_argument("--max-memory", type=float, metavar="MB",
                        help="memory budget in MB; larger groups train in chunks that fit")
    parser.add_argument("--top", type=cli.positive_int, default=10,
                        help="rows of the results table to print")
    return parser.parse_args()


def build_configs(args) -> list:
    """The configs the flags describe: a grid, or --random draws within the ranges."""
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
        return sweep.random_configs(args.random, ranges, base, args.search_seed)
    lists = {**{n: parse_list(fields[n], t) for n, t in NOTEBOOK_GRID.items()}, **values}
    return sweep.grid(NOTEBOOK_BASE, **lists)


def write_csv(path: Path, rows: list) -> None:
    """The results table as CSV, one row per config, written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    runs.atomic_write(path, lambda f: f.write(text.getvalue().encode()))


def main():
    args = parse_args()
    configs = [c.validate() for c in build_configs(args)]
    device = runs.select_device(args.device)
    devices = [d for d in jax.local_devices() if d.platform == device.platform]
    dataset = runs.load_dataset(args)
    out = Path(args.out or Path("sweeps") / time.strftime("%Y%m%d-%H%M%S"))
    num_groups = len(sweep.group_configs(configs))
    print(f"{len(configs)} configs in {num_groups} groups on {len(devices)} "
          f"{device.platform} device(s)", file=sys.stderr)

    bar = cli.ProgressBar("sweep")
    start = time.perf_counter()
    with jax.default_device(device):
        result = sweep.run_sweep(
            configs, dataset["X_train"], dataset["y_train"], dataset["X_val"], dataset["y_val"],
            max_memory=None if args.max_memory is None else args.max_memory * 2**20,
            devices=devices,
            progress=lambda g, n, done, total: bar.update(done, total,
                                                          f"group {g + 1}/{n} iteration {done}"))
        bar.finish()
        wall_s = time.perf_counter() - start
        rows = sweep.results_table(result)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "results.csv", rows)
        runs.write_json(out / "results.json", {"wall_s": wall_s, "results": rows})
        plot_heatmap(rows, out / "heatmap.png")
        if result.best_index is None:
            raise ValueError(f"every config diverged; results in {out}")
        best = result.results[result.best_index]
        metrics = runs.evaluate(result.best_params, dataset, args.eval_test, args.num_test)
    metrics.update(best_val_acc=best.val_acc, sweep_wall_s=wall_s, device=str(device))
    runs.write_run(out / "best", dataclasses.asdict(best.config), result.best_params,
                   best.history, metrics)

    varied = [n for n in TrainConfig.CONTINUOUS + TrainConfig.STRUCTURE
              if len({row[n] for row in rows}) > 1]
    columns = varied + ["status", "val_acc", "train_acc", "final_loss"]
    print("  ".join(f"{c:>13}" for c in columns))
    for row in rows[:args.top]:
        print("  ".join(f"{row[c]:>13.4g}" if isinstance(row[c], float) else f"{row[c]!s:>13}"
                        for c in columns))
    print(f"best: {', '.join(f'{n}={getattr(best.config, n)}' for n in varied)}: "
          + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.endswith("_acc"))
          + f"  ({len(configs)} configs in {wall_s:.1f} s)")
    print(f"results in {out}/ (results.csv, results.json, heatmap.png, best/)")


if __name__ == "__main__":
    cli.run(main, extra_errors=(DownloadError,))
