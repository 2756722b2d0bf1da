"""What defines a training run: ``TrainConfig``, its field kinds, and the presets.

Each field of ``TrainConfig`` says in its metadata how the compiled loop sees it:

- static: changes array shapes or the program's structure (hidden size, batch
  size, optimizer, ...); configs that differ in one cannot share a program;
- traced: a continuous hyperparameter passed as an array, so changing it never
  recompiles (learning rate, reg, ...);
- switch: traced, but 0 switches its part of the loop off, a structural choice
  (dropout, mixup, label smoothing, the moving average).

``STATIC``, ``TRACED`` and ``SWITCHES`` list the fields of each kind.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("step", "cosine")
# "float32": every product in the params' dtype (float64 too, with dtype float64); "auto":
# whichever of float32 and bfloat16 is faster on the device (jaxnet.precision), decided
# before training.
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")


def static(default):
    """A field that shapes the compiled program."""
    return dataclasses.field(default=default, metadata={"kind": "static"})


def traced(default):
    """A continuous hyperparameter, traced in the compiled program."""
    return dataclasses.field(default=default, metadata={"kind": "traced"})


def switch(default):
    """A traced hyperparameter whose 0 switches its part of the loop off."""
    return dataclasses.field(default=default, metadata={"kind": "traced", "switch": True})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; defaults are the notebook's CIFAR-10 run.

    ``schedule="step"`` is the notebook's: the learning rate is multiplied by
    ``learning_rate_decay`` at iteration 0 and at every multiple of
    ``iterations_per_epoch = max(N / batch_size, 1)``. ``"cosine"`` decays
    from ``learning_rate`` to 0 over the run after ``warmup_iters`` of linear
    warmup. ``momentum`` is the momentum of momentum/nesterov and Adam's b1.
    ``patience`` > 0 stops training (freezes the params) once that many
    validations in a row bring no new best validation accuracy.
    ``mixup`` > 0 blends each training row with another of its minibatch,
    weight ``lam ~ Beta(mixup, mixup)`` per step, and the loss with the same
    weight; ``label_smoothing`` moves that much of each target's probability
    onto the uniform distribution; ``ema`` > 0 keeps an exponential moving
    average of the params with that decay per step, and that average (not the
    last step's params) is validated, chosen as best and saved (see
    ``averaged_params``).
    ``compute_dtype="bfloat16"`` (with ``dtype="float32"``) stores the
    training rows in bfloat16 and runs the first layer's products, forward and
    backward, on bfloat16 operands with float32 accumulation
    (``model.hidden``); the params, the optimizer's state, the loss, the softmax and
    the validation pass stay float32. ``compute_dtype="auto"`` is decided
    before training (``precision.resolve``): the run then holds the choice.
    """

    hidden_size: int = static(50)
    num_iters: int = static(1000)
    batch_size: int = static(200)
    learning_rate: float = traced(1e-4)
    learning_rate_decay: float = traced(0.95)
    reg: float = traced(0.25)
    std: float = traced(1e-4)
    optimizer: str = static("sgd")
    momentum: float = traced(0.9)
    weight_decay: float = traced(0.0)
    schedule: str = static("step")
    warmup_iters: int = static(0)
    dropout: float = switch(0.0)
    patience: int = static(0)
    flip: bool = static(False)
    translate: int = static(0)
    mixup: float = switch(0.0)
    label_smoothing: float = switch(0.0)
    ema: float = switch(0.0)
    seed: int = static(0)
    dtype: str = static("float32")
    compute_dtype: str = static("float32")

    def structure(self) -> tuple:
        """The values of the static fields plus which switches are on: configs that
        share it share one compiled program."""
        return (tuple(getattr(self, f) for f in STATIC)
                + tuple(getattr(self, f) > 0 for f in SWITCHES))

    def hyperparams(self) -> dict:
        """The traced hyperparameters as floats."""
        return {f: float(getattr(self, f)) for f in TRACED}

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the first setting that makes no sense."""
        def need(ok, message):
            if not ok:
                raise ValueError(message)
        need(isinstance(self.patience, (int, np.integer)) and self.patience >= 0,
             f"patience must be an integer >= 0; got {self.patience!r}")
        for name in ("warmup_iters", "translate"):
            value = getattr(self, name)
            need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
                 f"{name} must be an integer; got {value!r}")
        for name in ("hidden_size", "num_iters", "batch_size"):
            value = getattr(self, name)
            # Steps and row indices are int32 in compiled code.
            need(isinstance(value, (int, np.integer)) and 1 <= value < 2**31,
                 f"{name} must be an integer in [1, 2**31); got {value!r}")
        for name in TRACED:
            value = getattr(self, name)
            need(isinstance(value, (int, float, np.integer, np.floating))
                 and not isinstance(value, bool), f"{name} must be a number; got {value!r}")
        need(self.dtype in ("float32", "float64"),
             f"dtype must be float32 or float64; got {self.dtype!r}")
        _check_ranges({name: getattr(self, name) for name in TRACED}, need)
        # The loop computes with the values rounded to the run's dtype: 0.99999999 is a
        # valid ema, but 1.0 in float32, and a debiased average then divides by zero.
        with np.errstate(over="ignore"):
            rounded = {name: float(np.asarray(getattr(self, name), self.dtype)) for name in TRACED}
        _check_ranges(rounded, need, lambda name, value: f"got {getattr(self, name)!r}, which "
                                                         f"is {value!r} in {self.dtype}")
        need(isinstance(self.seed, (int, np.integer)) and 0 <= self.seed < 2**32,
             f"seed must be an integer in [0, 2**32); got {self.seed!r}")
        need(self.optimizer in OPTIMIZERS,
             f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {self.optimizer!r}")
        need(self.schedule in SCHEDULES,
             f"schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        need(0 <= self.warmup_iters < self.num_iters,
             f"warmup_iters must be in [0, num_iters); got {self.warmup_iters}")
        need(0 <= self.translate < 32, f"translate must be in [0, 31] pixels; got {self.translate}")
        need(self.compute_dtype in COMPUTE_DTYPES,
             f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}; got "
             f"{self.compute_dtype!r}")
        need(self.compute_dtype != "bfloat16" or self.dtype == "float32",
             f"compute_dtype {self.compute_dtype} needs dtype float32 (float64 runs are for "
             f"exact checks); got dtype {self.dtype}")
        return self


def _check_ranges(values: dict, need: Callable,
                  got: Callable = lambda name, value: f"got {value}") -> None:
    """Check the traced hyperparameters ``values`` (name -> number) against their ranges;
    ``need(ok, message)`` raises, ``got(name, value)`` says what was found."""
    def check(name, ok, what):
        value = values[name]
        need(math.isfinite(value) and ok(value), f"{name} must be {what}; {got(name, value)}")
    for name in ("learning_rate", "reg", "std", "weight_decay", "mixup"):
        check(name, lambda v: v >= 0, "finite and >= 0")
    check("learning_rate_decay", lambda v: 0 < v <= 1, "in (0, 1]")
    for name in ("momentum", "dropout", "label_smoothing", "ema"):
        check(name, lambda v: 0 <= v < 1, "in [0, 1)")


def _fields(kind: str) -> tuple:
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["kind"] == kind)


STATIC = _fields("static")
TRACED = _fields("traced")
SWITCHES = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("switch"))


PRESETS = {
    # The notebook's CIFAR-10 experiment (validation accuracy about 0.29).
    "notebook": TrainConfig(),
    # The answer of scripts/search.py (seed 0: Adam with cosine decay, dropout, flips on
    # standardized inputs, PRESET_PREPROCESS) with what scripts/ablation.py found to gain
    # within 15 minutes on 2 CPU cores: longer training, shifts of up to 2 pixels
    # (docs/best_network.md). Its length comes from PRESET_BUDGET (150 epochs without one);
    # its precision is the faster on the machine at hand.
    "best": TrainConfig(hidden_size=2000, num_iters=36751, batch_size=200,
                        learning_rate=8.021969575436478e-4, reg=0.0, optimizer="adam",
                        schedule="cosine", dropout=0.22492512060101696, flip=True, translate=2,
                        compute_dtype="auto"),
}
# The preprocessing (a jaxnet.preprocess kind, or "none") each preset was found with.
PRESET_PREPROCESS = {"notebook": "none", "best": "standardize"}
# Minutes the whole train command may take with each preset (jaxnet.budget sets num_iters
# to fit them); 0: num_iters as given.
PRESET_BUDGET = {"notebook": 0.0, "best": 15.0}
