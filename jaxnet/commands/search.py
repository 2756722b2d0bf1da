"""The staged random search behind the `best` preset, as one command, from one seed.

The console command jaxnet-search is the same as python scripts/search.py.

1. coarse: --coarse configs (default 16) of --coarse-hidden units (1000)
   trained for --coarse-epochs (5): learning rate log-uniform in --lr-range,
   dropout uniform in --dropout-range, shifts of up to --translate-range
   pixels, preprocessing drawn from --preprocess.
2. narrow: the --top (4) coarse configs set narrower ranges (learning rate
   [min/2, max*2], dropout [min-0.1, max+0.1] within [0, 0.9], the shifts and
   preprocessing seen among them); --narrow (8) configs of --narrow-hidden
   (2000) units for --narrow-epochs (10).
3. final: the narrow stage's winner with --final-hidden (2000) units for
   --final-epochs (50), at its learning rate times each --final-lr-scales
   (1,0.33), since a longer run usually prefers a smaller rate. The best of
   these by validation accuracy is the answer; it is evaluated on the test
   split (test_acc on the first --num-test images, test_acc_full on all).

Every config uses Adam, a cosine decay to 0, batch 200, reg 0 and random
flips (the base-config flags change them). --mixup-range,
--label-smoothing-range and --ema-range add those fields to the coarse draws
(after the preprocessing kind, so the other draws stay as without them) and
to the narrow ranges (the top configs' span, widened by a quarter of the
coarse range); without them every config takes --mixup, --label-smoothing
and --ema (default 0: off). E epochs are
int(E * N / batch_size) + 1 iterations (50 epochs of 49,000 images: 12251).
Draws come from --seed and training is deterministic, so one command repeats
a search exactly. On CIFAR-10 with a 2-core CPU the three stages took 8 + 14 +
16 minutes (the final stage trains the best preset's network twice).

Writes to --out (default searches/<date-time>; an earlier search's folder
only with --overwrite), each stage's files as soon as it ends: coarse/,
narrow/ and final/ with results.csv and results.json; summary.json (each
stage's ranges, top rows and wall time, then the answer's config, metrics and
the scripts/train.py command that trains it again); best/, the answer's run
folder like train.py's (params.npz holds the mean image and the
preprocessing, so scripts/predict.py can use it); and last COMPLETE.

Progress is saved in OUT/checkpoint/ at most every --checkpoint-every
seconds; Ctrl-C or SIGTERM saves and stops, and --resume OUT continues the
search inside the stage it was in (finished stages are read back, not trained
again), with the same answer as a search never interrupted.

Many processes (hosts) run one search together under srun or mpirun, or with
--coordinator HOST:PORT --num-processes N --process-id I given to each; process
0 writes OUT (see docs/distributed.md).

Examples:
  python scripts/search.py
  python scripts/search.py --seed 1 --out searches/seed1
  python scripts/search.py --resume searches/seed1
"""
import dataclasses
import sys
import time
from pathlib import Path

import jax

from jaxnet import distributed, runs, search
from jaxnet.commands import cli
from jaxnet.download import DownloadError
from jaxnet.search import BASE, COARSE_RANGES, EXTRA_RANGE_FIELDS, SearchPlan
from jaxnet.config import TrainConfig

# Fields the stages set; the other TrainConfig fields form the base config.
STAGED = ("hidden_size", "num_iters", "learning_rate", "dropout", "translate", "seed")
DATA_FLAGS = ("data_dir", "data", "num_training", "num_validation", "num_test", "device")


def scales(text: str) -> tuple:
    """argparse type: '1,0.33' -> (1.0, 0.33), each > 0."""
    return tuple(cli.positive_float(item) for item in text.split(",") if item.strip())


def build_parser() -> cli.Parser:
    plan = SearchPlan()
    parser = cli.Parser(description=__doc__)
    parser.add_argument("--seed", type=cli.seed, default=plan.seed,
                        help="seed of every stage's random draws")
    stages = parser.add_argument_group("stages")
    for name, kind, help_text in [
            ("coarse", cli.positive_int, "configs drawn in the coarse stage"),
            ("coarse_hidden", cli.positive_int, "hidden units in the coarse stage"),
            ("coarse_epochs", cli.positive_float, "epochs of each coarse run"),
            ("top", cli.positive_int, "best coarse configs that set the narrow ranges"),
            ("narrow", cli.positive_int, "configs drawn in the narrow stage"),
            ("narrow_hidden", cli.positive_int, "hidden units in the narrow stage"),
            ("narrow_epochs", cli.positive_float, "epochs of each narrow run"),
            ("final_hidden", cli.positive_int, "hidden units of the final runs"),
            ("final_epochs", cli.positive_float, "epochs of each final run")]:
        stages.add_argument(cli.flag(name), type=kind, default=getattr(plan, name),
                            help=help_text)
    stages.add_argument("--final-lr-scales", type=scales, metavar="S[,S...]",
                        default=plan.final_lr_scales,
                        help="the final runs' learning rates: the winner's times each scale "
                             "(default: 1,0.33)")
    ranges = parser.add_argument_group("coarse ranges (LOW:HIGH[:KIND], KIND log, uniform "
                                       "or int)")
    for name, spec in COARSE_RANGES.items():
        ranges.add_argument(cli.flag(name) + "-range",
                            *(["--lr-range"] if name == "learning_rate" else []),
                            dest=name + "_range", default=f"{spec[1]:g}:{spec[2]:g}:{spec[0]}",
                            help=f"range of {name}")
    for name in EXTRA_RANGE_FIELDS:
        ranges.add_argument(cli.flag(name) + "-range", dest=name + "_range",
                            metavar="LOW:HIGH[:KIND]",
                            help=f"range of {name} (KIND uniform by default), narrowed like "
                                 f"dropout's; without it every config takes --{name.replace('_', '-')}")
    cli.add_preprocess_arguments(parser, "comma-separated kinds the coarse stage draws from",
                                 default=",".join(plan.kinds))
    base = parser.add_argument_group("base config of every stage")
    for field in dataclasses.fields(TrainConfig):
        if field.name not in STAGED:
            base.add_argument(cli.flag(field.name), type=cli.field_type(field),
                              default=getattr(BASE, field.name),
                              help=cli.CONFIG_HELP[field.name])
    base.add_argument("--train-seed", type=cli.seed, default=BASE.seed,
                      help=cli.CONFIG_HELP["seed"])
    cli.add_data_arguments(parser, eval_test=False)  # the answer is always evaluated on test
    cli.add_out_arguments(parser, "search", "searches")
    cli.add_max_memory_argument(parser)
    cli.add_checkpoint_arguments(parser)
    distributed.add_arguments(parser)
    return parser


def make_plan(args) -> SearchPlan:
    """The SearchPlan the flags describe (its stage configs are validated by run_search)."""
    base = dataclasses.replace(BASE, seed=args.train_seed, **{
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
        if f.name not in STAGED})
    ranges = {name: cli.parse_range(name, getattr(args, name + "_range"), spec[0])
              for name, spec in COARSE_RANGES.items()}
    ranges.update({name: cli.parse_range(name, getattr(args, name + "_range"), "uniform")
                   for name in EXTRA_RANGE_FIELDS if getattr(args, name + "_range") is not None})
    if ranges["translate"][0] != "int":
        raise ValueError("--translate-range: translate must be an integer (KIND int)")
    if ranges["dropout"][1] < 0 or ranges["dropout"][2] >= 1:
        raise ValueError("--dropout-range must lie in [0, 1)")
    for name, (kind, low, high) in ranges.items():
        if kind == "int" and name != "translate":
            raise ValueError(f"{cli.flag(name)}-range: {name} takes KIND uniform or log")
        for bound in (low, high):  # the config's own check, e.g. "ema must be in [0, 1)"
            try:
                dataclasses.replace(base, num_iters=base.warmup_iters + 1,
                                    **{name: bound}).validate()
            except ValueError as exc:
                raise ValueError(f"{cli.flag(name)}-range: {exc}") from None
    if not args.final_lr_scales:
        raise ValueError("--final-lr-scales needs at least one scale")
    stage_fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(SearchPlan)
                    if f.name not in ("base", "ranges", "kinds")}
    # Stages set num_iters: here only the rest is checked, run_search checks each stage.
    dataclasses.replace(base, num_iters=base.warmup_iters + 1).validate()
    return SearchPlan(base=base, ranges=ranges,
                      kinds=tuple(cli.parse_kinds(args.preprocess)), **stage_fields)


def data_flags(parser: cli.Parser, args) -> list[str]:
    """The data flags given with other than their defaults, for the train.py command."""
    return [token for name in DATA_FLAGS if getattr(args, name) != parser.get_default(name)
            for token in (cli.flag(name), str(getattr(args, name)))]


def command():
    """Run the staged search the flags describe and write its results."""
    parser = build_parser()
    args = cli.resolve_resume(parser, parser.parse_args())
    plan = make_plan(args)
    distributed.join(args)
    device = runs.select_device(args.device)
    devices = [d for d in distributed.devices() if d.platform == device.platform]
    dataset = runs.load_dataset(args)
    out = Path(args.out or Path("searches") / time.strftime("%Y%m%d-%H%M%S"))
    # The answer is evaluated on test (run_search refuses a dataset without one).
    num_test = runs.check_test_split(dataset, "X_test" in dataset, args.num_test)
    search.check_plan(plan, dataset, device, args.max_memory and args.max_memory * 2**20)
    if distributed.is_writer():
        runs.claim_out(out, args.overwrite, resuming=bool(args.resume))
    bar = cli.ProgressBar("search")

    def say(message):
        bar.finish()
        print(message, file=sys.stderr)

    checkpoint = cli.open_checkpoint(args, out, say)
    checkpoint.stop_if_requested()

    with jax.default_device(device), distributed.output_folder(out) as folder:
        summary = search.run_search(
            plan, dataset, folder, say=say, num_test=num_test,
            data_flags=data_flags(parser, args), device=str(device), devices=devices,
            max_memory=None if args.max_memory is None else args.max_memory * 2**20,
            checkpoint=checkpoint, progress=lambda stage, g, n, done, total: bar.update(
                done, total, f"{stage} group {g + 1}/{n} iteration {done}"))
    bar.finish()
    checkpoint.remove()
    for stage in summary["stages"]:
        top = stage["top"][0]
        extras = "".join(f", {name} {top[name]:.3g}" for name in plan.ranges
                         if name in EXTRA_RANGE_FIELDS)
        print(f"{stage['name']:>6}: {stage['configs']} configs in {stage['wall_s']:.0f} s; best "
              f"val_acc {top['val_acc']:.4f} (learning_rate {top['learning_rate']:.3g}, "
              f"dropout {top['dropout']:.2f}, translate {top['translate']}{extras}, "
              f"{top['preprocess']})")
    metrics = summary["best"]["metrics"]
    print("answer: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_acc" in k)
          + f"  ({summary['wall_s']:.0f} s)")
    print(f"train it again with: {summary['best']['command']}")
    print(f"results in {out}/ (summary.json, coarse/, narrow/, final/, best/)")


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    cli.run(command, extra_errors=(DownloadError,))
