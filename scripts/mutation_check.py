#!/usr/bin/env python3
"""Plant one bug at a time in a scratch copy of the repository and check that a test fails.

Each mutant replaces one exact string in one file of a scratch copy (made in a
temporary folder; the working tree is never touched) and runs the tests chosen
for it with ``pytest -x``. The table printed at the end gives, per mutant, the
first test that failed, or NOT CAUGHT. Exit status: 0 when every mutant was
caught, 1 when one survived (or timed out), 2 when a mutant no longer applies
(its search string is not found exactly once: the source changed, so update
the mutant) or the unmutated tests fail.

Before the mutants, the chosen tests run once on the unmutated copy
(--no-baseline skips this): a test that fails anyway would make every mutant
look caught.

Examples:
  python scripts/mutation_check.py          # every mutant: 6 min of CPU (16 min on a busy machine)
  python scripts/mutation_check.py --list            # names, files and test selections
  python scripts/mutation_check.py --only momentum_is_sgd --only same_key_every_step
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]


class Mutant(NamedTuple):
    """One planted bug: in ``path``, the single occurrence of ``old`` becomes ``new``;
    ``tests`` are the pytest arguments (files or node ids) expected to catch it."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


RULES = ("tests/test_update_rules.py",)
STEP_TESTS = ("tests/test_step.py",)
OPTIM, LOOP, STEP, MODEL = "jaxnet/optim.py", "jaxnet/loop.py", "jaxnet/step.py", "jaxnet/model.py"
RESUME = ("tests/test_resume.py::test_train_resumed_at_any_chunk_equals_uninterrupted",
          "tests/test_resume.py::test_train_resume_refuses_other_config_data_or_chunking",
          "tests/test_resume.py::test_inconsistent_progress_is_refused",
          "tests/test_resume.py::test_sweep_resumed_in_its_second_group_equals_uninterrupted")

MUTANTS = (
    # The optimizers and schedules.
    Mutant("momentum_is_sgd", OPTIM,
           'optax.sgd(lr_fn, momentum=hp["momentum"], nesterov=config.optimizer == "nesterov")',
           "optax.sgd(lr_fn)", RULES),
    Mutant("nesterov_is_momentum", OPTIM, 'nesterov=config.optimizer == "nesterov"',
           "nesterov=False", RULES),
    Mutant("adam_ignores_b1", OPTIM, 'optax.adam(lr_fn, b1=hp["momentum"])',
           "optax.adam(lr_fn)", RULES),
    Mutant("adamw_without_weight_decay", OPTIM, 'weight_decay=hp["weight_decay"])',
           "weight_decay=0.0)", RULES),
    Mutant("decay_at_the_epoch_end_step", LOOP,
           "decays_before = np.concatenate([[0], np.cumsum(epoch_end)[:-1]])",
           "decays_before = np.cumsum(epoch_end)", RULES + ("tests/test_solver.py",)),
    Mutant("epochs_of_whole_iterations", LOOP,
           "epoch_end = np.array([it % iterations_per_epoch == 0",
           "epoch_end = np.array([it % int(iterations_per_epoch) == 0",
           ("tests/test_solver.py",)),
    Mutant("warmup_starts_at_zero", OPTIM, 'hp["learning_rate"] * (step + 1) / warmup',
           'hp["learning_rate"] * step / warmup', RULES),
    Mutant("cosine_decays_half_way", OPTIM, "jnp.cos(jnp.pi * progress)",
           "jnp.cos(jnp.pi * progress / 2)", RULES),
    # The loss and its gradient inside the training step.
    Mutant("carried_l2_gradient_halved", MODEL, "return 2 * g * W, None",
           "return g * W, None", RULES + STEP_TESTS),
    Mutant("carried_penalty_without_w1", MODEL, "else _carried_sumsq(params[\"W1\"],",
           "else 0 * _carried_sumsq(params[\"W1\"],", RULES + STEP_TESTS),
    Mutant("carried_penalty_of_stale_w1", STEP,
           'return (state, jnp.sum(state.params["W1"] ** 2)), (loss,) + accs',
           "return (state, w1_sumsq), (loss,) + accs", RULES),
    Mutant("step_without_the_penalty", STEP, 'return model.loss(params, inputs, y, hp["reg"],',
           "return model.loss(params, inputs, y, 0.0,", STEP_TESTS + RULES),
    Mutant("bfloat16_option_ignored", MODEL, 'pre = bfloat16_product(params["W1"], X)',
           'pre = jax.lax.dot_general(params["W1"], X, CONTRACT_D)',
           ("tests/test_mixed_precision.py",)),
    Mutant("transposed_layout_not_transposed_back", MODEL,
           'return jax.nn.relu(pre + params["b1"][:, None]).T',
           'return jax.nn.relu(pre + params["b1"][:, None]).T[::-1]', STEP_TESTS),
    Mutant("eval_step_ignores_the_transform", STEP,
           'X = apply_transform(transform, X).astype(params["W2"].dtype)',
           'X = X.astype(params["W2"].dtype)', STEP_TESTS),
    # Randomness as a function of (seed, global step).
    Mutant("same_key_every_step", STEP,
           "return jax.random.fold_in(jax.random.key(config.seed), t)",
           "return jax.random.key(config.seed)", ("tests/test_step_randomness.py",)),
    Mutant("step_counts_restart_each_chunk", LOOP, "np.arange(done, stop, dtype=np.int32)",
           "np.arange(0, stop - done, dtype=np.int32)", ("tests/test_step_randomness.py",)),
    # Sampling, validation, best params, early stopping.
    Mutant("last_row_never_sampled", LOOP, "rng.randint(0, num_train, size=",
           "rng.randint(0, num_train - 1, size=",
           ("tests/test_solver.py::test_batches_are_the_notebooks_draws",)),
    Mutant("batches_ignore_the_seed", LOOP,
           "sample_batches(num_train, batch_size, num_iters, np.random.RandomState(seed))",
           "sample_batches(num_train, batch_size, num_iters, np.random.RandomState(0))",
           ("tests/test_sweep_reference.py",)),
    Mutant("last_step_not_validated", LOOP, "validate[-1] = True", "validate[-1] = False",
           ("tests/test_solver.py", "tests/test_selection.py")),
    # The levers: mixup, label smoothing, the moving average of the weights.
    Mutant("mixup_loss_ignores_partners", MODEL,
           "cross_entropy(logits, y[partners], label_smoothing)",
           "cross_entropy(logits, y, label_smoothing)", ("tests/test_levers.py",)),
    Mutant("label_smoothing_ignored", MODEL,
           "return (1 - label_smoothing) * ce - label_smoothing * jnp.mean(log_probs)",
           "return ce", ("tests/test_levers.py",)),
    Mutant("moving_average_not_debiased", OPTIM, "weight = 1 - decay ** steps",
           "weight = 1 + 0 * decay ** steps", ("tests/test_levers.py",)),
    Mutant("best_params_are_the_last", STEP,
           "best_params = jax.tree.map(lambda new, old: jnp.where(better, new, old),",
           "best_params = jax.tree.map(lambda new, old: new,",
           ("tests/test_selection.py::test_best_params_are_the_peak_not_the_last",)),
    Mutant("ties_replace_the_best", STEP, "better = val_correct > best_val_correct",
           "better = val_correct >= best_val_correct", ("tests/test_selection.py",)),
    Mutant("patience_one_late", STEP, "(stale >= config.patience)",
           "(stale > config.patience)",
           ("tests/test_solver.py::test_early_stopping_freezes_params_and_matches_in_a_sweep",)),
    Mutant("early_stop_keeps_training", STEP,
           "params = jax.tree.map(keep, params, state.params)", "params = params",
           ("tests/test_selection.py::test_early_stopping_freezes_the_params_at_the_stop",)),
    Mutant("dropout_without_rescaling", MODEL,
           "jnp.where(jax.random.bernoulli(key, keep, h.shape), h / keep, 0.0)",
           "jnp.where(jax.random.bernoulli(key, keep, h.shape), h, 0.0)",
           ("tests/test_augment_dropout.py",)),
    # Sweeps.
    Mutant("diverged_config_can_be_best", "jaxnet/sweep.py",
           "if not diverged and best_val[k] > best[1]:", "if best_val[k] > best[1]:",
           ("tests/test_selection.py",)),
    Mutant("sweep_hyperparameters_misaligned", "jaxnet/sweep.py",
           "np.array([c.hyperparams()[name] for c in padded], dtype)",
           "np.array([c.hyperparams()[name] for c in padded[::-1]], dtype)",
           ("tests/test_sweep_reference.py",)),
    # The model and the hand-written backward pass.
    Mutant("model_l2_without_w2", MODEL,
           'return reg * (w1 + jnp.sum(params["W2"] ** 2))', "return reg * w1",
           ("tests/test_model.py",)),
    Mutant("loss_summed_not_averaged", MODEL,
           "-jnp.mean(jnp.take_along_axis", "-jnp.sum(jnp.take_along_axis",
           ("tests/test_model.py",)),
    Mutant("backward_relu_mask_dropped", "jaxnet/reference.py", "dh[h_pre <= 0] = 0",
           "dh[h_pre < -1e9] = 0", ("tests/test_model.py",)),
    Mutant("backward_l2_gradient_halved", "jaxnet/reference.py",
           "dW1 = X.T @ dh + 2 * reg * W1", "dW1 = X.T @ dh + reg * W1", ("tests/test_model.py",)),
    Mutant("backward_db2_averaged", "jaxnet/reference.py", "db2 = ds.sum(axis=0)",
           "db2 = ds.mean(axis=0)", ("tests/test_model.py",)),
    Mutant("reference_loop_decays_every_step", "jaxnet/reference.py",
           "            learning_rate *= learning_rate_decay\n",
           "        learning_rate *= learning_rate_decay\n",
           ("tests/test_solver.py::test_float64_training_replays_the_numpy_reference_loop",)),
    # Augmentation.
    Mutant("flip_is_vertical", "jaxnet/augment.py", "images[:, :, ::-1, :]",
           "images[:, ::-1, :, :]", ("tests/test_augment_dropout.py",)),
    Mutant("translate_goes_backwards", "jaxnet/augment.py",
           "(pad - shift[0], pad - shift[1], 0)", "(pad + shift[0], pad + shift[1], 0)",
           ("tests/test_augment_dropout.py",)),
    # Files: the unpickler, extraction, checkpoints, labels.
    Mutant("unpickler_allows_anything", "jaxnet/data.py",
           "return self.ALLOWED[module, name]", "return super().find_class(module, name)",
           ("tests/test_data.py",)),
    Mutant("extraction_allows_dotdot", "jaxnet/download.py",
           'if path.is_absolute() or ".." in path.parts:', "if path.is_absolute():",
           ("tests/test_data.py",)),
    Mutant("extraction_allows_hard_links", "jaxnet/download.py",
           "elif member.issym() or member.islnk():", "elif member.issym():",
           ("tests/test_data.py",)),
    Mutant("download_skips_the_checksum", "jaxnet/download.py", "if digest.hexdigest() != md5:",
           "if False:", ("tests/test_data.py",)),
    Mutant("cifar_labels_unchecked", "jaxnet/data.py",
           "labels = check_labels(np.asarray(labels), len(data), NUM_CLASSES, "
           'name=f"{path}: labels")', "labels = np.asarray(labels)", ("tests/test_data.py",)),
    Mutant("mean_image_includes_validation", "jaxnet/data.py",
           "mean_image = X_train.mean(axis=0", "mean_image = X.mean(axis=0",
           ("tests/test_data.py",)),
    Mutant("checkpoint_format_unchecked", "jaxnet/saved_model.py",
           'if not isinstance(meta, dict) or meta.get("format") != FORMAT:',
           "if not isinstance(meta, dict):", ("tests/test_checkpoint_plots.py",)),
    Mutant("checkpoint_input_size_unchecked", "jaxnet/saved_model.py",
           "        check_params(params, input_size)\n    except ValueError",
           "        check_params(params)\n    except ValueError",
           ("tests/test_checkpoint_plots.py",)),
    Mutant("labels_past_the_last_class_accepted", "jaxnet/validate.py",
           "y.max() >= num_classes", "y.max() > num_classes", ("tests/test_solver.py",)),
    # Checkpoints and resume.
    Mutant("resume_restarts_from_step_zero", LOOP,
           "state, done, outputs = restored.state, restored.step, [list(restored.outputs)]",
           "state, outputs = restored.state, [list(restored.outputs)]", RESUME),
    Mutant("progress_hook_never_called", LOOP,
           "hook.after_chunk(LoopProgress(done, state, tuple(outputs[0])))", "pass", RESUME),
    Mutant("resume_ignores_the_config", "jaxnet/resume.py",
           "if difference is not None:", "if False:", RESUME),
    Mutant("resume_trusts_inconsistent_state", "jaxnet/resume.py",
           "if value is None or value.shape != leaf.shape or value.dtype != leaf.dtype:",
           "if value is None:", RESUME),
    Mutant("sweep_resume_retrains_finished_configs", "jaxnet/sweep.py",
           "if all(results[i] is not None for i in chunk):", "if False:", RESUME),
    # Many processes.
    Mutant("processes_share_no_programs", "jaxnet/program_sharing.py",
           'jax.config.update("jax_share_binary_between_hosts", True)', "pass",
           ("tests/test_distributed.py::test_two_process_sweep_equals_one_process",)),
    Mutant("programs_shared_between_other_cpus", "jaxnet/program_sharing.py",
           "hash_obj.update(cpu)", "pass",
           ("tests/test_distributed.py::test_processes_share_programs_only_with_the_same_keys",)),
    Mutant("jax_settings_not_compared", "jaxnet/program_sharing.py",
           'keys[0] if keys else b"", settings.encode(),', 'keys[0] if keys else b"",',
           ("tests/test_distributed.py::test_processes_share_programs_only_with_the_same_keys",)),
    Mutant("handshake_shared_when_asked_for", "jaxnet/distributed.py",
           'jax.config.update("jax_share_binary_between_hosts", False)', "pass",
           ("tests/test_distributed.py::test_processes_share_programs_only_with_the_same_keys",)),
    Mutant("rank_0_waits_for_itself_under_mpirun", "jaxnet/distributed.py",
           "process_id not in (None, 0)", "process_id != 0",
           ("tests/test_distributed.py::test_processes_share_programs_only_with_the_same_keys",)),
    # The command line.
    Mutant("train_script_saves_the_last_params", "jaxnet/commands/train.py",
           "result.best_params,", "result.params,", ("tests/test_train_script.py",)),
)

IGNORED = shutil.ignore_patterns(".git", ".venv", "data", "runs", "__pycache__", "*.pyc",
                                 ".pytest_cache")


class Outcome(NamedTuple):
    name: str
    caught_by: str | None     # the first failing test, None when every test passed
    seconds: float


def check_applies(mutant: Mutant, root: Path) -> str | None:
    """None when ``mutant.old`` occurs exactly once in its file, else why it does not apply."""
    path = root / mutant.path
    if not path.is_file():
        return f"{mutant.name}: {mutant.path} does not exist"
    count = path.read_text().count(mutant.old)
    if count != 1:
        return (f"{mutant.name}: its search string occurs {count} times in {mutant.path}, "
                f"not once (the source changed; update the mutant): {mutant.old!r}")
    return None


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """Run pytest -x on ``tests`` in ``root``; return its exit status and output."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}   # no stale bytecode across mutants
    # The copy's jaxnet, not the installed one, in pytest and in the commands the tests start.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--tb=no",
           "-rfE", *tests]
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s"
    return proc.returncode, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    """The node id of the first FAILED or ERROR line of pytest's short summary."""
    for line in output.splitlines():
        for tag in ("FAILED ", "ERROR "):
            if line.startswith(tag):
                return ("error in " if tag == "ERROR " else "") + \
                    line[len(tag):].split(" - ")[0].strip()
    return "a failure pytest did not name"


def try_mutant(mutant: Mutant, root: Path, timeout: float) -> Outcome:
    """Plant ``mutant`` in the scratch copy ``root``, run its tests, restore the file."""
    path = root / mutant.path
    original = path.read_text()
    path.write_text(original.replace(mutant.old, mutant.new))
    start = time.perf_counter()
    try:
        status, output = run_tests(root, mutant.tests, timeout)
    finally:
        path.write_text(original)
    seconds = time.perf_counter() - start
    if status == 0:
        return Outcome(mutant.name, None, seconds)
    if status == -1:
        return Outcome(mutant.name, "TIMEOUT", seconds)
    if status in (1, 2):     # tests failed, or collection failed on the planted bug
        return Outcome(mutant.name, first_failure(output), seconds)
    raise SystemExit(f"error: pytest exited with status {status} for {mutant.name} "
                     f"(bad test selection {' '.join(mutant.tests)}?):\n{output[-2000:]}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutant (repeatable); see --list")
    parser.add_argument("--list", action="store_true",
                        help="print every mutant's name, file and tests, and exit")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the chosen tests on the unmutated copy first")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds allowed for one mutant's tests (default 600)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mutants = list(MUTANTS)
    if args.only:
        unknown = sorted(set(args.only) - {m.name for m in mutants})
        if unknown:
            print(f"error: unknown mutant {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name:38} {m.path:22} {' '.join(m.tests)}")
        return 0
    problems = [p for p in (check_applies(m, REPO) for m in mutants) if p]
    if problems:
        print("error: " + "\nerror: ".join(problems), file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="jaxnet-mutants-") as scratch:
        root = Path(scratch) / "repo"
        shutil.copytree(REPO, root, ignore=IGNORED, symlinks=True)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
            status, output = run_tests(root, tests, args.timeout * 2)
            if status != 0:
                print(f"error: the chosen tests fail without any mutant "
                      f"({first_failure(output)}); fix them first", file=sys.stderr)
                return 2
            print(f"baseline: {len(tests)} test selections pass unmutated", flush=True)
        outcomes = []
        for m in mutants:
            outcomes.append(try_mutant(m, root, args.timeout))
            caught = outcomes[-1].caught_by or "NOT CAUGHT"
            print(f"  {m.name}: {caught} ({outcomes[-1].seconds:.0f} s)", flush=True)

    width = max(len(o.name) for o in outcomes)
    print(f"\n{'bug':{width}}  caught by")
    for o in outcomes:
        print(f"{o.name:{width}}  {o.caught_by or 'NOT CAUGHT'}")
    survivors = [o.name for o in outcomes if o.caught_by in (None, "TIMEOUT")]
    print(f"\n{len(outcomes) - len(survivors)} of {len(outcomes)} caught" +
          (f"; not caught: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
