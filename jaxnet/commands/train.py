"""Train a two-layer network on CIFAR-10 (or an .npz of row vectors) and save the run.

The console command jaxnet-train is the same as python scripts/train.py.

With no arguments this is the notebook's experiment: hidden 50, 1000
iterations of SGD with batch 200, learning rate 1e-4 decayed by 0.95 per
epoch, reg 0.25, init std 1e-4 (validation accuracy about 0.29).

The run folder (--out, default runs/<time>; an earlier run's folder only with
--overwrite) receives config.json, history.json, metrics.json (train_acc,
val_acc, with --eval-test test_acc on the first --num-test test images and
test_acc_full on all of them, wall_s,
checkpoint_wall_s (of it, the time spent saving progress), device, diverged), params.npz (a
checkpoint that also holds the mean image), loss_acc.png, weights.png and,
last, COMPLETE, the mark of a finished folder. A run whose loss becomes NaN or
infinite is saved (null in the JSON files) and ends with an error. The
reported params are those with the best validation accuracy, checked at every
epoch end and after the last step.

--preset best is the strongest configuration found: the answer of
scripts/search.py (hidden 2000, Adam with cosine decay, dropout, flips,
standardized inputs) with shifts of up to 2 pixels (scripts/ablation.py),
trained for as many steps as fit in its --time-budget of 15 minutes for the
whole command, in the faster precision of this machine (--compute-dtype
auto); both are printed and saved in config.json, whose num_iters and
compute_dtype repeat the run without a budget (its accuracy and time are in
the README's results table). Flags given with a preset override its values.
--preprocess fits per-channel standardization, PCA or ZCA on the training
split (default: the preset's); the transform is applied to every minibatch
after augmentation and saved in params.npz with the mean image, so
scripts/predict.py preprocesses new images the same way.

Progress is saved in the run folder's checkpoint/ at most every
--checkpoint-every seconds. Ctrl-C or SIGTERM saves and stops (exit status
130 / 143); --resume RUN_DIR continues the run, with the same result as a run
never interrupted (bit-identical on the CPU). checkpoint/ is removed when the
run completes.

Examples:
  python scripts/train.py
  python scripts/train.py --preset best --eval-test
  python scripts/train.py --hidden-size 200 --num-iters 4000 --learning-rate 1e-3 \\
      --reg 0.05 --eval-test
  python scripts/train.py --data mydata.npz --device gpu --out runs/mine
  python scripts/train.py --resume runs/mine
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from jaxnet import budget, precision, preprocess, runs
from jaxnet.commands import cli
from jaxnet.download import DownloadError
from jaxnet.saved_model import MARKER
from jaxnet.validate import params_finite
from jaxnet.solver import notebook_printer, train
from jaxnet.config import PRESET_BUDGET, PRESETS, PRESET_PREPROCESS, TrainConfig

# The run's config once its precision and length are fixed: --resume trains it as it is.
FIXED_CONFIG = cli.SAVED_ARGS.parent / "config.json"


def parse_args():
    parser = cli.Parser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="notebook",
                        help="starting hyperparameters; flags below override them")
    group = parser.add_argument_group("hyperparameters (defaults: the notebook preset)")
    for field in dataclasses.fields(TrainConfig):
        group.add_argument(cli.flag(field.name), type=cli.field_type(field),
                           help=f"{cli.CONFIG_HELP[field.name]} (default: {field.default})")
    group = parser.add_argument_group("preprocessing (fitted on the training split)")
    group.add_argument("--preprocess", choices=("none",) + preprocess.KINDS,
                       help="after mean subtraction: per-channel standardization, PCA or ZCA "
                            "(default: the preset's, " + ", ".join(
                                f"{name} {kind}" for name, kind in PRESET_PREPROCESS.items()) + ")")
    group.add_argument("--pca-components", type=cli.positive_int, default=400,
                       help="dimensions kept by --preprocess pca")
    group.add_argument("--whiten-eps", type=cli.nonnegative_float,
                       help="zca: eps relative to the mean variance (default 0.01); "
                            "pca: whiten with this eps (default: no whitening)")
    cli.add_data_arguments(parser)
    cli.add_out_arguments(parser, "run", "runs")
    parser.add_argument("--time-budget", type=cli.nonnegative_float, metavar="MINUTES",
                        help="minutes for the whole command: num_iters becomes the steps that "
                             "fit, timed on this machine, and is saved in config.json (0: off; "
                             "default: the preset's, " + ", ".join(
                                 f"{name} {minutes:g}" for name, minutes in PRESET_BUDGET.items())
                             + "; off when --num-iters is given)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the notebook's 'iteration 100 / 1000: loss ...' lines")
    cli.add_checkpoint_arguments(parser)
    return cli.resolve_resume(parser, parser.parse_args())


def command():
    """Train one network as the flags say and save its run folder."""
    args = parse_args()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    config = dataclasses.replace(PRESETS[args.preset], **given).validate()
    minutes = time_budget(args, given)
    kind = args.preprocess or PRESET_PREPROCESS[args.preset]
    device = runs.select_device(args.device)
    dataset = runs.load_dataset(args)
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"))
    # Everything that would fail after training fails now, before minutes are spent.
    num_test = runs.check_test_split(dataset, args.eval_test, args.num_test)
    runs.check_memory(config, 1, dataset, device,
                      input_size=args.pca_components if kind == "pca" else None)
    runs.claim_out(out, args.overwrite, resuming=bool(args.resume))

    bar = cli.ProgressBar("training")
    printer = notebook_printer() if args.verbose else None

    def progress(done, total, chunk_losses):
        bar.update(done, total, f"iteration {done}/{total} loss {chunk_losses[-1]:.4f}")
        if printer:
            printer(done, total, chunk_losses)

    transform = None
    if kind != "none":
        transform = preprocess.fit(kind, dataset["X_train"],
                                   k=args.pca_components, eps=args.whiten_eps)
    input_transform = None if transform is None else (transform.mean, transform.matrix)
    checkpoint = cli.open_checkpoint(args, out, say=lambda message: print(message,
                                                                           file=sys.stderr))
    checkpoint.stop_if_requested()
    with jax.default_device(device):
        config = run_config(args, config, minutes, out, dataset, input_transform, num_test)
        result = train(dataset["X_train"], dataset["y_train"], dataset["X_val"],
                       dataset["y_val"], config, progress=progress,
                       input_transform=input_transform, checkpoint=checkpoint)
        bar.finish()
        losses = np.asarray(result.history["loss_history"])
        diverged = np.flatnonzero(~np.isfinite(losses))
        # A model with NaN or infinite params is kept as a record, never marked complete.
        usable = params_finite(result.best_params) and params_finite(result.params)
        # The run folder keeps the mean image and the fitted transform with the params,
        # so a loaded model preprocesses new images itself (scripts/predict.py).
        metrics = runs.save_run(out, config, kind, transform, result.best_params,
                                result.history, dataset, args.eval_test, num_test,
                                final_val_acc=result.history["val_acc_history"][-1],
                                wall_s=result.wall_s, checkpoint_wall_s=checkpoint.seconds_saving,
                                device=str(device), diverged=bool(diverged.size) or not usable,
                                complete=usable)
    checkpoint.remove()
    print(" ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_acc" in k) +
          f"  ({metrics['wall_s']:.1f} s on {device})")
    print(f"run saved in {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
    kept = "" if usable else f"; its params are not finite, so {out}/ has no {MARKER} mark"
    if diverged.size:
        raise ValueError(f"training diverged: the loss became {losses[diverged[0]]} at iteration "
                         f"{diverged[0]} (recorded as null in {out}/history.json){kept}; lower "
                         f"--learning-rate or --std")
    if not usable:
        raise ValueError(f"training diverged: the loss stayed finite but the params became NaN "
                         f"or infinite{kept}; lower --learning-rate, or --ema if given")


def time_budget(args, config_flags: dict) -> float:
    """The minutes of --time-budget, else the preset's unless --num-iters is given; 0: none."""
    if args.time_budget is None:
        return 0.0 if "num_iters" in config_flags else PRESET_BUDGET[args.preset]
    if args.time_budget and "num_iters" in config_flags:
        raise ValueError("give --num-iters or --time-budget, not both (--time-budget sets "
                         "num_iters)")
    return args.time_budget


def run_config(args, config: TrainConfig, minutes: float, out: Path, dataset: dict,
               input_transform, num_test: int) -> TrainConfig:
    """The config the run trains: ``config`` with compute_dtype "auto" decided
    (``jaxnet.precision``) and, under a budget of ``minutes``, num_iters fitted
    (``jaxnet.budget``), both printed. Saved in the run's checkpoint folder, so that
    --resume trains the same config, never deciding again."""
    fixed = out / FIXED_CONFIG
    if args.resume and fixed.is_file():
        return TrainConfig(**json.loads(fixed.read_text())).validate()
    input_size = (dataset["X_train"].shape[1] if input_transform is None
                  else np.shape(input_transform[1])[-1])
    config = precision.resolve(config, input_size, say=print)
    if minutes:
        eval_rows = len(dataset["X_train"]) + len(dataset["X_val"]) + (
            num_test + len(dataset["X_test"]) if args.eval_test else 0)
        data = tuple(dataset[k] for k in ("X_train", "y_train", "X_val", "y_val"))
        config = budget.fit_config(config, minutes, data, eval_rows,
                                   input_transform=input_transform, say=print)
    runs.write_json(fixed, dataclasses.asdict(config))
    return config


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    cli.run(command, extra_errors=(DownloadError,))
