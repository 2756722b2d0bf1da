"""Compare autodiff, hand-written and numeric gradients of the two-layer net.

The console command jaxnet-gradcheck is the same as python scripts/gradcheck.py.

For each parameter it prints the max relative error between jaxnet's autodiff
gradient, the hand-written numpy backward pass and centered finite
differences, all in float64, for two cases:

  toy    the notebook's toy model (D=4, H=10, C=3, N=5, reg=0.05)
  cifar  a CIFAR-shaped random case (D=3072, H=50, C=10, N=20, reg=0.1);
         the numeric gradient is taken at --num-checks random entries per
         parameter, as the notebook's sparse check does

Exits with status 1, naming the failing entries, if any error exceeds its
tolerance: --tol (1e-7) for the toy case, --tol-cifar (1e-6) for the cifar
case, whose small gradient entries on a 3072-wide layer leave centered
differences with h=1e-5 a relative error of about 1e-8 to 1e-7.
"""
import sys
from argparse import ArgumentTypeError

import numpy as np

from jaxnet import TwoLayerNet, compare_gradients
from jaxnet.commands.cli import Parser, nonnegative_float, positive_int, run, seed

COLUMNS = ("autodiff_vs_handwritten", "autodiff_vs_numeric", "handwritten_vs_numeric")
# Each entry costs two loss evaluations; W1's 153,600 entries would take minutes.
MAX_CHECKS = 10000


def check_count(text: str) -> int:
    """argparse type of --num-checks: an integer in [1, MAX_CHECKS]."""
    value = positive_int(text)
    if value > MAX_CHECKS:
        raise ArgumentTypeError(f"must be at most {MAX_CHECKS}, got {value}")
    return value


def toy_case():
    """The notebook's toy model and data: params, X (5, 4), y (5,), reg."""
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1)
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    return net.params, X, np.array([0, 1, 2, 2, 1]), 0.05


def cifar_case(seed: int):
    """Random CIFAR-shaped case: params for D=3072, H=50, C=10; X (20, 3072); reg 0.1."""
    rng = np.random.RandomState(seed)
    params = {"W1": 1e-2 * rng.randn(3072, 50), "b1": 1e-2 * rng.randn(50),
              "W2": 1e-1 * rng.randn(50, 10), "b2": 1e-2 * rng.randn(10)}
    X = 10 * rng.randn(20, 3072)
    return params, X, rng.randint(0, 10, 20), 0.1


def command():
    """Print the gradient comparison; 1 when an error exceeds its tolerance, else 0."""
    parser = Parser(description=__doc__)
    parser.add_argument("--tol", type=nonnegative_float, default=1e-7,
                        help="fail if any toy-case relative error exceeds this")
    parser.add_argument("--tol-cifar", type=nonnegative_float, default=1e-6,
                        help="fail if any cifar-case relative error exceeds this")
    parser.add_argument("--num-checks", type=check_count, default=200,
                        help=f"numeric-gradient entries per parameter in the cifar case "
                             f"(at most {MAX_CHECKS})")
    parser.add_argument("--seed", type=seed, default=0, help="seed of the cifar case")
    parser.add_argument("--case", choices=["toy", "cifar", "both"], default="both",
                        help="which case to check")
    args = parser.parse_args()

    cases = {"toy": (toy_case(), None, args.tol),
             "cifar": (cifar_case(args.seed), args.num_checks, args.tol_cifar)}
    failures = []
    print(f"{'case':<6} {'param':<5} " + " ".join(f"{c:>24}" for c in COLUMNS))
    for case, ((params, X, y, reg), num_checks, tol) in cases.items():
        if args.case not in (case, "both"):
            continue
        report = compare_gradients(params, X, y, reg, num_checks=num_checks)
        for name, errors in report.items():
            print(f"{case:<6} {name:<5} " + " ".join(f"{errors[c]:>24.3e}" for c in COLUMNS))
            failures += [f"{case} {name} {c} = {errors[c]:.3e}"
                         for c in COLUMNS if not errors[c] <= tol]
    if failures:
        print(f"FAILED: {len(failures)} errors above tolerance: " + "; ".join(failures),
              file=sys.stderr)
        return 1
    print(f"all relative errors within tolerance (toy {args.tol:g}, cifar {args.tol_cifar:g})")
    return 0


def main() -> None:
    """Run the command; an error a user can cause ends it with one line and status 2."""
    run(command)
