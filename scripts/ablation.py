#!/usr/bin/env python3
"""The ablation behind the best preset: scripts/train.py --preset best with one lever
changed at a time, on the same seed, one run after another, and the table of what each
gives (validation accuracy, accuracy on all 10,000 test images, training and whole-command
seconds).

Each run is a plain `scripts/train.py --preset best --eval-test ...` command
into OUT/<row>/; a row whose folder is complete is read back, not trained
again, and an interrupted row is resumed (train.py --resume), so an
interrupted ablation continues where it stopped. The rows run
one after another (a run uses every core), so their seconds compare.

Examples:
  python scripts/ablation.py --out runs/ablation              # every row (hours on 2 cores)
  python scripts/ablation.py --out runs/ablation --only bf16,ema -- --data-dir data
  python scripts/ablation.py --list
"""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from jaxnet import saved_model

REPO = Path(__file__).resolve().parents[1]

# The best preset before this ablation (the answer of scripts/search.py), spelled out so
# that the rows stay what they were whatever --preset best becomes.
BEFORE = ["--hidden-size", "2000", "--num-iters", "12251", "--batch-size", "200",
          "--learning-rate", "8.021969575436478e-4", "--reg", "0", "--optimizer", "adam",
          "--schedule", "cosine", "--dropout", "0.22492512060101696", "--flip", "1",
          "--translate", "1", "--preprocess", "standardize", "--compute-dtype", "float32"]
BF16 = BEFORE + ["--compute-dtype", "bfloat16"]   # a later flag overrides an earlier one
EPOCHS_150 = ["--num-iters", "36751"]
# (row, what it changes, train.py flags after --preset best). The baselines first, then
# one lever at a time on the bfloat16 baseline (50 epochs), then the levers that gained,
# at 150 epochs; the last row is --preset best itself.
ROWS = [
    ("before", "the preset before this ablation (float32, 50 epochs)", BEFORE),
    ("bf16", "bfloat16 products", BF16),
    ("width-4000", "hidden 4000", BF16 + ["--hidden-size", "4000"]),
    ("epochs-100", "100 epochs", BF16 + ["--num-iters", "24502"]),
    ("shift-2", "shifts of up to 2 pixels", BF16 + ["--translate", "2"]),
    ("ema", "moving average of the weights, decay 0.999", BF16 + ["--ema", "0.999"]),
    ("label-smoothing", "label smoothing 0.1", BF16 + ["--label-smoothing", "0.1"]),
    ("mixup", "mixup, alpha 0.2", BF16 + ["--mixup", "0.2"]),
    ("epochs-150", "150 epochs", BF16 + EPOCHS_150),
    ("epochs-150-shift-2", "150 epochs, shifts of up to 2 pixels",
     BF16 + EPOCHS_150 + ["--translate", "2"]),
    ("epochs-150-ls-mixup", "150 epochs, label smoothing 0.1, mixup 0.2",
     BF16 + EPOCHS_150 + ["--label-smoothing", "0.1", "--mixup", "0.2"]),
    ("epochs-150-shift-2-ls-mixup", "150 epochs, shifts of up to 2 pixels, label smoothing "
     "0.1, mixup 0.2", BF16 + EPOCHS_150 + ["--translate", "2", "--label-smoothing", "0.1",
                                            "--mixup", "0.2"]),
    ("best", "--preset best", []),
]


def run_row(name: str, flags: list, out: Path, train_args: list) -> dict:
    """Train one row (unless its folder is complete) and return its measurements."""
    folder = out / name
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--preset", "best",
               "--eval-test", *flags, *train_args, "--out", str(folder)]
    command_s = None
    if not (folder / saved_model.MARKER).exists():
        resumed = (folder / "checkpoint").is_dir()
        if resumed:   # an interrupted row continues; its command time is then partial
            command = command[:2] + ["--resume", str(folder)]
        elif folder.exists():
            command.append("--overwrite")
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        command_s = time.perf_counter() - start
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1:] or [""]
            sys.exit(f"error: row {name} failed (status {done.returncode}): {last[0]}")
        if resumed:
            command_s = None
        else:
            (folder / "command_s.json").write_text(json.dumps({"command_s": command_s}) + "\n")
    elif (folder / "command_s.json").exists():
        command_s = json.loads((folder / "command_s.json").read_text())["command_s"]
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"row": name, "val_acc": metrics["val_acc"], "test_acc_full": metrics["test_acc_full"],
            "train_s": metrics["wall_s"], "command_s": command_s}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ablation", help="folder of the rows' run folders")
    parser.add_argument("--only", help="comma-separated rows to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the rows and exit")
    parser.add_argument("train_args", nargs="*",
                        help="more scripts/train.py flags for every row, after -- (a quick "
                             "check: -- --num-iters 100)")
    args = parser.parse_args()
    if args.list:
        for name, what, flags in ROWS:
            print(f"{name}: {what}\n    scripts/train.py --preset best --eval-test "
                  f"{shlex.join(flags)}")
        return
    names = [name for name, _, _ in ROWS]
    chosen = names if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        parser.error(f"--only takes rows among {', '.join(names)}; got {args.only!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| row | lever | val | test (10,000) | training s | command s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, what, flags in ROWS:
        if name in chosen:
            r = run_row(name, flags, out, args.train_args)
            command_s = "" if r["command_s"] is None else f"{r['command_s']:.0f}"
            print(f"| {name} | {what} | {r['val_acc']:.3f} | {r['test_acc_full']:.4f} | "
                  f"{r['train_s']:.0f} | {command_s} |", flush=True)


if __name__ == "__main__":
    main()
