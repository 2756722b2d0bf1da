"""Shared plumbing for the command lines in ``scripts/``: one-line errors, exit status 2.

A user who passes a bad flag, a missing dataset or an invalid value gets one
line on stderr saying what is wrong and what to do, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, KeyError)


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
    """Run ``main()``; turn the errors a user can cause into one line and exit status 2."""
    try:
        status = main()
    except USER_ERRORS + tuple(extra_errors) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# Help text of each TrainConfig field, shared by train.py (one value) and sweep.py (lists).
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
    "seed": "seed of the initial weights, the minibatches, dropout and augmentation",
    "dtype": "float32 or float64",
    "compute_dtype": "bfloat16: the first layer's products on bfloat16 inputs, accumulated "
                     "in float32; weights, loss and accuracies stay float32 (needs dtype "
                     "float32). float32: products in dtype",
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


def field_type(default) -> Callable[[str], object]:
    """The argparse type that parses one value of a field with this default."""
    if isinstance(default, bool):
        return parse_bool
    return type(default)


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
    group.add_argument("--num-test", type=positive_int, default=1000,
                       help="test images of test_acc, the notebook's subset (test_acc_full "
                            "uses the whole test split)")
    if eval_test:
        group.add_argument("--eval-test", action="store_true",
                           help="evaluate the chosen params on the test split")
    group.add_argument("--device", choices=["cpu", "gpu"], default=None,
                       help="where to train (default: JAX's default device)")


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
