"""Shared plumbing of the commands (``jaxnet-<name>``, ``scripts/<name>.py``): one-line
errors, exit status 2, and the flags several commands share.

A user who passes a bad flag, a missing dataset or an invalid value gets one
line on stderr saying what is wrong and what to do, never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import shlex
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable

from jaxnet import distributed, job_end, resume
from jaxnet.files import atomic_write
from jaxnet.saved_model import PROGRESS_FOLDER
from jaxnet.search import CHOICES

# Mistakes in flags and inputs, and file-system failures (a full disk, a read-only
# folder, a missing file): each ends the command with one line and status 2.
USER_ERRORS = (ValueError, OSError, KeyError)
# What to do about a file-system failure, by errno.
OS_ERROR_ADVICE = {
    **dict.fromkeys((errno.ENOSPC, errno.EDQUOT),
                    "free space there, then run the command again (a run whose progress "
                    "was saved continues with --resume)"),
    errno.EROFS: "the file system is read-only; give a folder on a writable one",
    errno.EACCES: "this user may not write there; give another folder or change its "
                  "permissions",
}


def describe_error(exc: BaseException) -> str:
    """The one line of ``error: ...`` for an error of ``USER_ERRORS``."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        advice = OS_ERROR_ADVICE.get(exc.errno)
        return f"{where}{exc.strerror}" + (f"; {advice}" if advice else "")
    return str(exc)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and shows each option's default, when it has one
    that the help text does not already state."""

    def _get_help_string(self, action):
        text = action.help or ""
        # Identity, not equality: a default of 0 or 0.0 is worth showing (0 == False).
        if (action.default is None or action.default is False
                or action.default is argparse.SUPPRESS or "default" in text):
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``prog: error: ... (see --help)``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main: Callable[[], object], extra_errors: tuple = ()) -> None:
    """Run ``main()``; turn the errors a user can cause into one line and exit status 2.

    SIGINT and SIGTERM stop training at its next chunk boundary, after saving its
    progress (``resume.stop_on_signals``); the process then exits with 128 + the
    signal's number (130, 143) and one line saying how to continue. When another
    process of a multi-process job is lost, the process exits with status 3
    (``distributed.PeerLost``). In a multi-process job an error ends every process
    of the job with its status, each with one line (``job_end``).
    """
    try:
        with resume.stop_on_signals():
            status = main()
            late = resume.stop_requested()
    except resume.Interrupted as exc:
        if exc.saved is None:
            print(f"error: {exc}", file=sys.stderr)
        else:
            # A console command (jaxnet-train) runs as it is, a script with python.
            program = ["python", sys.argv[0]] if sys.argv[0].endswith(".py") else [sys.argv[0]]
            command = shlex.join([*program, "--resume", str(exc.saved.parent)])
            if job_end.watched():
                command = (f"every process of the job started again with --resume "
                           f"{exc.saved.parent} (under SLURM: srun {command})")
            print(f"error: {exc}; continue with: {command}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except distributed.PeerLost as exc:
        # At once: JAX's shutdown at exit would wait for the lost process, then abort.
        job_end.lost(f"error: {exc}")
    except USER_ERRORS + tuple(extra_errors) as exc:
        message = describe_error(exc)
        if job_end.watched():
            job_end.stop_job(2, f"error: {message}")
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if not job_end.watched():
            raise
        # A defect, not a user's error: its trace, and the other processes stop too.
        traceback.print_exc()
        job_end.stop_job(1, f"error: {type(exc).__name__}: {exc}")
    if late is not None:
        print(f"error: {signal.Signals(late).name} arrived as the run ended; its results are "
              f"complete", file=sys.stderr)
        sys.exit(128 + late)
    sys.exit(status or 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def seed(text: str) -> int:
    """argparse type: an integer seed in [0, 2**32), the range numpy's RandomState takes."""
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {value}")
    return value


def memory_mb(text: str) -> float | None:
    """argparse type of --max-memory: megabytes > 0, or inf for no limit (None)."""
    value = float(text)
    if not value > 0:      # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number of MB > 0 (inf: no limit), got {text}")
    return None if math.isinf(value) else value


# Help text of each TrainConfig field, shared by the train (one value) and sweep (lists)
# commands.
CONFIG_HELP = {
    "hidden_size": "hidden units H",
    "num_iters": "training iterations (minibatch steps)",
    "batch_size": "minibatch size (drawn with replacement)",
    "learning_rate": "initial learning rate",
    "learning_rate_decay": "multiply the learning rate by this once per epoch (schedule step)",
    "reg": "L2 strength: loss += reg * (sum(W1**2) + sum(W2**2))",
    "std": "initial weights are std * N(0, 1)",
    "optimizer": "sgd, momentum, nesterov, adam or adamw",
    "momentum": "momentum of momentum/nesterov, b1 of adam/adamw",
    "weight_decay": "decoupled weight decay of adamw",
    "schedule": "step (the notebook's per-epoch decay) or cosine (to 0 over the run)",
    "warmup_iters": "linear warmup iterations before the cosine decay",
    "dropout": "probability of dropping a hidden unit in training (0 = off)",
    "patience": "stop after this many validations without a new best (0 = never)",
    "flip": "random horizontal flips of training images (1 = on)",
    "translate": "random shifts of training images by up to this many pixels",
    "mixup": "mixup's alpha: each training row blended with another, weight ~ Beta(alpha, "
             "alpha), and the loss with it (0 = off)",
    "label_smoothing": "share of each target's probability spread over all classes (0 = off)",
    "ema": "decay per step of a moving average of the weights, which is then the model "
           "validated and saved (0 = off; 0.999 averages about the last 1000 steps)",
    "seed": "seed of the initial weights, the minibatches, dropout and augmentation",
    "dtype": "float32 or float64",
    "compute_dtype": "bfloat16: the first layer's products on bfloat16 inputs, accumulated "
                     "in float32; weights, loss and accuracies stay float32 (needs dtype "
                     "float32). float32: products in dtype. auto: bfloat16 where it is "
                     "faster on this machine (timed once per shape, cached), else float32",
}


def flag(field: str) -> str:
    """The command-line flag of a TrainConfig field: hidden_size -> --hidden-size."""
    return "--" + field.replace("_", "-")


def parse_bool(text: str) -> bool:
    """argparse type for on/off flags: 1/0, true/false, yes/no, on/off."""
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off; got {text!r}")


def field_type(field) -> Callable[[str], object]:
    """The argparse type that parses one value of a TrainConfig field (a dataclasses.Field)."""
    if field.name == "seed":
        return seed
    if isinstance(field.default, bool):
        return parse_bool
    return type(field.default)


def add_data_arguments(parser: argparse.ArgumentParser, eval_test: bool = True) -> None:
    """--data-dir / --data / split sizes / --eval-test (unless ``eval_test`` is False, for
    commands that always evaluate on the test split) / --device."""
    group = parser.add_argument_group("data and output")
    group.add_argument("--data-dir", help="folder holding cifar-10-batches-py (or that folder); "
                       "downloaded there if missing (default: $JAXNET_DATA_DIR or data/)")
    group.add_argument("--data", help="an .npz with X_train, y_train, X_val, y_val "
                       "[, X_test, y_test] (rows of features) instead of CIFAR-10")
    group.add_argument("--num-training", type=positive_int, default=49000,
                       help="CIFAR-10 training images (validation: the next --num-validation)")
    group.add_argument("--num-validation", type=positive_int, default=1000)
    group.add_argument("--num-test", type=positive_int,
                       help="test images of test_acc, the notebook's subset (default: 1000, or "
                            "all of a smaller test split; test_acc_full uses the whole split)")
    if eval_test:
        group.add_argument("--eval-test", action="store_true",
                           help="evaluate the chosen params on the test split")
    group.add_argument("--device", choices=["cpu", "gpu"], default=None,
                       help="where to train (default: JAX's default device)")


def add_preprocess_arguments(parser, kinds_help: str, default: str | None = None) -> None:
    """--preprocess KIND[,KIND...], --pca-components, --whiten-eps (as the train command's)."""
    group = parser.add_argument_group("preprocessing (fitted on the training split)")
    group.add_argument("--preprocess", metavar="KIND[,KIND...]", default=default,
                       help=f"{kinds_help}; kinds: {', '.join(CHOICES)}")
    group.add_argument("--pca-components", type=positive_int, default=400,
                       help="dimensions kept by pca")
    group.add_argument("--whiten-eps", type=nonnegative_float,
                       help="zca: eps relative to the mean variance (default 0.01); "
                            "pca: whiten with this eps (default: no whitening)")


def parse_kinds(text: str) -> list[str]:
    """'none,zca' -> ['none', 'zca']: preprocessing kinds, each one of ``CHOICES``, once."""
    kinds = list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    unknown = [kind for kind in kinds if kind not in CHOICES]
    if unknown or not kinds:
        raise ValueError(f"--preprocess takes a comma-separated list of {', '.join(CHOICES)}; "
                         f"got {text!r}")
    return kinds


def parse_range(name: str, text: str, default_kind: str) -> tuple:
    """'1e-4:1e-2[:log|uniform|int]' -> ('log', 0.0001, 0.01), the range of field ``name``."""
    parts = text.split(":")
    kind = parts[2] if len(parts) == 3 else default_kind
    try:
        low, high = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise ValueError(f"{flag(name)}-range must be LOW:HIGH[:KIND]; got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{flag(name)}-range {text!r}: LOW and HIGH must be finite numbers")
    if kind not in ("log", "uniform", "int") or not low <= high or (kind == "log" and low <= 0):
        raise ValueError(f"{flag(name)}-range {text!r}: need LOW <= HIGH (> 0 for log) "
                         "and KIND log, uniform or int")
    return (kind, int(low), int(high)) if kind == "int" else (kind, low, high)


class ProgressBar:
    """One line on stderr, redrawn in place: ``label [#####     ]  45.0% suffix``.

    Drawn only when stderr is a terminal, so logs and pipes stay clean.
    """

    def __init__(self, label: str = "", stream=sys.stderr, width: int = 30):
        self.label, self.stream, self.width = label, stream, width
        self.enabled = stream.isatty()
        self.drawn = False

    def update(self, done: int, total: int | None, suffix: str = "") -> None:
        if not self.enabled:
            return
        if total:
            filled = self.width * done // total
            bar = f"[{'#' * filled:<{self.width}}] {100 * done / total:5.1f}%"
        else:
            bar = ""
        self.stream.write(f"\r{self.label} {bar} {suffix}".rstrip() + "\033[K")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        """End the bar's line so that what follows starts on a line of its own."""
        if self.drawn:
            self.stream.write("\n")
            self.drawn = False


# Flags that may be given anew when a run is resumed: where the data are, where to run (the
# processes of a job too), how often to save and what to print. Every other flag belongs to the run and comes from its
# folder (checkpoint/args.json), and one given with --resume must agree with it.
RESUME_FREE = ("resume", "checkpoint_every", "data_dir", "data", "device", "verbose",
               "coordinator", "num_processes", "process_id", "join_timeout", "heartbeat_timeout")
SAVED_ARGS = Path(PROGRESS_FOLDER) / "args.json"


def add_out_arguments(parser: argparse.ArgumentParser, what: str, folder: str) -> None:
    """--out (a new or empty folder, default FOLDER/<date-time>) and --overwrite."""
    parser.add_argument("--out", help=f"output folder, new or empty (default: "
                                      f"{folder}/<date-time>)")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"let --out be a folder of an earlier {what}, and clear it first")


def add_max_memory_argument(parser: argparse.ArgumentParser) -> None:
    """--max-memory MB of the sweeps."""
    parser.add_argument("--max-memory", type=memory_mb, metavar="MB",
                        help="memory budget in MB (inf: none); larger groups train in chunks "
                             "that fit")


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """--checkpoint-every SECONDS and --resume RUN_DIR."""
    group = parser.add_argument_group("interruption and resume")
    group.add_argument("--checkpoint-every", type=nonnegative_float, default=60.0,
                       metavar="SECONDS",
                       help="save progress into RUN_DIR/checkpoint/ at most this often (0: only "
                            "when stopped by SIGINT/SIGTERM, which save, then exit 130/143)")
    group.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the interrupted run in RUN_DIR with its own settings; "
                            "the result equals an uninterrupted run's")


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options present on the command line ``argv``."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default


def resolve_resume(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   argv: list[str] | None = None) -> argparse.Namespace:
    """``args`` for a new run; for ``--resume RUN_DIR``, the run's saved arguments with
    ``out`` = RUN_DIR. A flag given now that would change the run is refused."""
    if not args.resume:
        return args
    run_dir = Path(args.resume)
    saved_path = run_dir / SAVED_ARGS
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir} is a file; give the run's folder")
    if not run_dir.is_dir():
        raise ValueError(f"--resume {run_dir}: no such folder")
    if not saved_path.is_file():
        raise ValueError(f"--resume {run_dir}: nothing to resume ({SAVED_ARGS} is missing: the "
                         f"run finished, or this is not a run folder)")
    try:
        saved = json.loads(saved_path.read_text())
        if not isinstance(saved, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        raise ValueError(f"--resume {run_dir}: {saved_path} is unreadable ({exc})") from None
    current, given = vars(args), given_flags(parser, sys.argv[1:] if argv is None else argv)
    for name in sorted(given - set(RESUME_FREE)):
        if name in saved and json.loads(json.dumps(current[name])) != saved[name]:
            raise ValueError(f"{flag(name)} {current[name]} differs from the run's "
                             f"{saved[name]}: --resume continues a run with its own settings "
                             f"(start a new run to change them)")
    # The run's own settings, except the free flags given now (e.g. data moved elsewhere).
    merged = {**current, **saved, **{name: current[name] for name in given & set(RESUME_FREE)}}
    merged.update(resume=args.resume, out=str(run_dir))
    return argparse.Namespace(**merged)


def open_checkpoint(args: argparse.Namespace, out: Path, say=lambda message: None
                    ) -> resume.Checkpoint:
    """The checkpoint of the run in ``out``: a new run first saves its arguments there
    (``--resume`` reads them back). In a multi-process job process 0 writes the
    checkpoint and every process reads it on resume (``resume.Checkpoint``)."""
    folder = Path(out) / SAVED_ARGS.parent
    if not args.resume and distributed.is_writer():
        folder.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in vars(args).items() if k != "resume"}
        atomic_write(folder / SAVED_ARGS.name,
                     lambda f: f.write(json.dumps(saved, indent=2).encode() + b"\n"))
    return resume.Checkpoint(folder, args.checkpoint_every, bool(args.resume), say=say)
