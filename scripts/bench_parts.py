#!/usr/bin/env python3
"""Time the pieces of one training step alone: jaxnet's compiled code against numpy's.

scripts/bench.py times whole runs; this says where a step's time goes, piece
by piece, in the notebook's shapes (N = 49000 rows of D = 3072, hidden H = 50,
batch B = 200):

  gather    the minibatch X[idx]: B random rows of the (N, D) training set
  forward   the first-layer product: jaxnet's W1 (H, D) . X_b^T, the layout of
            its training loop; numpy's X_b @ W1, the notebook's
  backward  the first-layer weight gradient: jaxnet's dH (H, B) @ X_b; numpy's
            X_b^T @ dh

then the forward product alone for batch sizes around B. A matrix kernel that
splits the product's columns (the batch) between threads in fixed tiles shows
a staircase there: equal times for batch sizes that need as many tiles per
thread.

Everything runs on the CPU: that is where the pieces' balance matters (on a
GPU they are bound by kernel launches; scripts/bench.py has the GPU rows).
Each timed call runs the piece for --steps steps (a compiled loop for jaxnet,
whose buffers are reused from step to step as in training; a Python loop for
numpy); a row is the median over --repeats calls divided by --steps, in
milliseconds. jaxnet's forward steps also rescale W1 by the loop's carry, so
that XLA cannot hoist the product out of the loop; that rescaling is timed
alone and subtracted (the backward steps rescale dH, 15 times fewer numbers,
and keep it). The inputs are random numbers of CIFAR-10's shape.

Examples:
  python scripts/bench_parts.py
  python scripts/bench_parts.py --json parts.json --repeats 15
  python scripts/bench_parts.py --quick          # harness check, seconds
"""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench import QUICK, Sizes, bench_peak, machine_info, median, timed
from jaxnet import runs
from jaxnet.arrays import aligned_empty
from jaxnet.commands import cli

SHAPES = {"N": 49000, "D": 3072, "H": 50, "B": 200}
QUICK_SHAPES = {"N": 600, "D": 96, "H": 8, "B": 20}
# Batch sizes for the forward product's staircase: multiples of 64 and the notebook's 200.
STAIRCASE = (64, 128, 192, 200, 256)
QUICK_STAIRCASE = (8, 20)


def dot_nt(a, b):
    """a (m, k) . b (n, k)^T -> (m, n), without materializing b^T."""
    return jax.lax.dot_general(a, b, (((1,), (1,)), ((), ())))


def time_steps(fn, repeats: int, steps: int) -> float:
    """ms per step of ``fn()``, which runs ``steps`` steps: median over ``repeats`` calls."""
    jax.block_until_ready(fn())
    times = [timed(lambda: jax.block_until_ready(fn()))[0] for _ in range(repeats)]
    return 1e3 * median(times) / steps


def scanned(piece, steps: int):
    """A compiled loop of ``steps`` steps of ``piece(c) -> array``, c a scalar carry.

    Each step's operands depend on the carry through ``c`` (always 1.0), so XLA
    cannot hoist the piece out of the loop, and the carry depends on the
    piece's result, so XLA cannot drop it. Buffers are reused from step to
    step, as in the training loop.
    """
    def body(c, _):
        out = piece(c)
        return c + 0 * out.ravel()[0], None

    return jax.jit(lambda: jax.lax.scan(body, jnp.float32(1), None, length=steps)[0])


def jaxnet_forward(W1_t, X_b, steps: int):
    """The loop of forward products W1_t (H, D) . X_b^T and the same loop doing only the
    carry's scaling of W1_t, whose time is subtracted."""
    return (scanned(lambda c: dot_nt(W1_t * c, X_b), steps),
            scanned(lambda c: W1_t * c, steps))


def numpy_loop(piece, steps: int):
    """``piece(t)`` for t < steps, each result dropped before the next (as in the
    notebook's loop, which keeps no step's arrays)."""
    def run():
        for t in range(steps):
            piece(t)
    return run


def bench_pieces(shapes: dict, device, repeats: int, steps: int) -> dict:
    """ms per gather, forward and backward, jaxnet and numpy, at the notebook's batch."""
    N, D, H, B = (shapes[k] for k in "NDHB")
    rng = np.random.default_rng(0)
    X = rng.standard_normal(dtype=np.float32, out=aligned_empty((N, D), np.float32))
    W1 = rng.standard_normal((D, H), dtype=np.float32)
    idx = rng.integers(0, N, (steps, B)).astype(np.int32)
    X_b = X[idx[0]]
    dh = rng.standard_normal((B, H), dtype=np.float32)
    with jax.default_device(device):
        X_jax, idx_jax = jax.device_put(X, may_alias=True), jax.device_put(idx)
        W1_t, X_b_jax = jax.device_put(np.ascontiguousarray(W1.T)), jax.device_put(X_b)
        dh_t = jax.device_put(np.ascontiguousarray(dh.T))
        # The gather's indices change every step, so it needs no carry.
        gather = jax.jit(lambda X, idx: jax.lax.scan(lambda _, i: (X[i], None),
                                                     X[idx[0]], idx)[0])
        forward, scaling = jaxnet_forward(W1_t, X_b_jax, steps)
        jaxnet = {
            "gather": time_steps(lambda: gather(X_jax, idx_jax), repeats, steps),
            "forward": time_steps(forward, repeats, steps) - time_steps(scaling, repeats,
                                                                        steps),
            "backward": time_steps(scanned(lambda c: (dh_t * c) @ X_b_jax, steps),
                                   repeats, steps),
        }

    numpy = {
        "gather": time_steps(numpy_loop(lambda t: X[idx[t]], steps), repeats, steps),
        "forward": time_steps(numpy_loop(lambda t: X_b @ W1, steps), repeats, steps),
        "backward": time_steps(numpy_loop(lambda t: X_b.T @ dh, steps), repeats, steps),
    }
    return {"jaxnet_ms": jaxnet, "numpy_ms": numpy}


def bench_staircase(shapes: dict, batch_sizes, device, repeats: int, steps: int) -> dict:
    """ms of the forward product per batch size: jaxnet's W1 . X_b^T, numpy's X_b @ W1."""
    D, H = shapes["D"], shapes["H"]
    rng = np.random.default_rng(1)
    W1 = rng.standard_normal((D, H), dtype=np.float32)
    rows = {}
    for B in batch_sizes:
        X_b = rng.standard_normal((B, D), dtype=np.float32)
        with jax.default_device(device):
            forward, scaling = jaxnet_forward(jax.device_put(np.ascontiguousarray(W1.T)),
                                              jax.device_put(X_b), steps)
            jaxnet = time_steps(forward, repeats, steps) - time_steps(scaling, repeats, steps)
        numpy = time_steps(numpy_loop(lambda t: X_b @ W1, steps), repeats, steps)
        rows[str(B)] = {"jaxnet_ms": jaxnet, "numpy_ms": numpy}
    return rows


def gflops(flops: int, ms: float) -> float:
    return flops / ms / 1e6


def report(results: dict) -> str:
    m, s, peak = results["machine"], results["shapes"], results["peak_gflops"]
    product_flops = 2 * s["B"] * s["D"] * s["H"]
    lines = [f"machine: {m['cpu']}, {m['usable_cores']} of {m['cores']} cores; numpy "
             f"{m['numpy']}; jax {m['jax']} on {m['device']}",
             f"matrix peak (numpy f32 {results['peak_size']}^2): {peak:.1f} GFLOP/s",
             f"shapes: N={s['N']} D={s['D']} H={s['H']} B={s['B']}; ms per step, median of "
             f"{results['repeats']} calls of {results['steps']} steps", "",
             f"{'piece':10} {'jaxnet ms':>10} {'% peak':>7} {'numpy ms':>10} {'% peak':>7} "
             f"{'numpy/jaxnet':>13}"]
    for piece, jaxnet in results["jaxnet_ms"].items():
        numpy = results["numpy_ms"][piece]
        fractions = [f"{100 * gflops(product_flops, ms) / peak:6.0f}%" if piece != "gather"
                     else f"{'':7}" for ms in (jaxnet, numpy)]
        lines.append(f"{piece:10} {jaxnet:10.3f} {fractions[0]} {numpy:10.3f} {fractions[1]} "
                     f"{numpy / jaxnet:12.2f}x")
    lines += ["", "forward product by batch size:",
              f"{'B':>5} {'jaxnet ms':>10} {'% peak':>7} {'numpy ms':>10} {'% peak':>7}"]
    for B, row in results["forward_by_batch"].items():
        flops = 2 * int(B) * s["D"] * s["H"]
        lines.append(f"{B:>5} {row['jaxnet_ms']:10.3f} "
                     f"{100 * gflops(flops, row['jaxnet_ms']) / peak:6.0f}% "
                     f"{row['numpy_ms']:10.3f} {100 * gflops(flops, row['numpy_ms']) / peak:6.0f}%")
    return "\n".join(lines)


def parse_args():
    parser = cli.Parser(description=__doc__)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON here")
    parser.add_argument("--repeats", type=cli.positive_int, default=9,
                        help="timed calls per row (the median is reported)")
    parser.add_argument("--steps", type=cli.positive_int, default=200,
                        help="steps per timed call")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes that run in seconds: checks the harness, not the speed")
    return parser.parse_args()


def main():
    args = parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    device = jax.devices("cpu")[0]
    results = {"machine": machine_info(device), "shapes": shapes, "repeats": args.repeats,
               "steps": args.steps, "data": "random float32 normal"}
    results.update(bench_peak(QUICK if args.quick else Sizes(), args.repeats))
    results.update(bench_pieces(shapes, device, args.repeats, args.steps))
    results["forward_by_batch"] = bench_staircase(
        shapes, QUICK_STAIRCASE if args.quick else STAIRCASE, device, args.repeats,
        args.steps)
    print(report(results))
    if args.json:
        runs.write_json(Path(args.json), results)
        print(f"results in {args.json}")


if __name__ == "__main__":
    cli.run(main)
