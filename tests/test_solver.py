"""The training loop: the notebook's toy run, float64 replay of the numpy loop, schedules,
reproducibility, optimizers and augmentation, and the errors bad settings and data raise."""
import jax
import numpy as np
import pytest

from jaxnet import TwoLayerNet, loop, model, optim, reference, solver
from jaxnet.config import TrainConfig
from jaxnet.validate import check_features


def separable(seed=0, N=200, D=20, C=3, num_val=60):
    """Gaussian blobs far apart: every optimizer should fit them quickly."""
    rng = np.random.RandomState(seed)
    centers = 3 * rng.randn(C, D)
    y = rng.randint(0, C, N)
    y_val = rng.randint(0, C, num_val)
    X = (centers[y] + rng.randn(N, D)).astype(np.float32)
    X_val = (centers[y_val] + rng.randn(num_val, D)).astype(np.float32)
    return X, y, X_val, y_val


SMALL = dict(hidden_size=16, num_iters=60, batch_size=32, learning_rate=1e-1, reg=1e-3, std=1e-2)


# ----------------------------------------------------------------------------- TwoLayerNet.train

def test_notebook_toy_training_fits_the_toy_data(capsys):
    np.random.seed(0)
    net = TwoLayerNet(4, 10, 3, std=1e-1)
    np.random.seed(1)
    X = 10 * np.random.randn(5, 4)
    y = np.array([0, 1, 2, 2, 1])
    before = {k: v.copy() for k, v in net.params.items()}
    stats = net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100, batch_size=10,
                      verbose=True)
    assert len(stats["loss_history"]) == 100
    assert capsys.readouterr().out == "iteration 0 / 100: loss %f\n" % stats["loss_history"][0]
    assert stats["loss_history"][-1] < 0.2  # the notebook: "final training loss 0.017..."
    assert stats["loss_history"][0] > 1.0
    # 5 examples, batch 10: iterations_per_epoch clamps to 1, one record per iteration.
    assert len(stats["train_acc_history"]) == len(stats["val_acc_history"]) == 100
    for name, value in net.params.items():
        assert type(value) is np.ndarray, name
        assert value.dtype == np.float64, name
        assert value.shape == before[name].shape
        assert not np.array_equal(value, before[name]), f"{name} did not change"
    np.testing.assert_array_equal(net.predict(X), y)


def float64_problem(seed=5, N=120, D=30, H=16, C=5, num_val=40):
    rng = np.random.RandomState(seed)
    params = {"W1": 0.1 * rng.randn(D, H), "b1": np.zeros(H),
              "W2": 0.1 * rng.randn(H, C), "b2": np.zeros(C)}
    return (params, rng.randn(N, D), rng.randint(0, C, N),
            rng.randn(num_val, D), rng.randint(0, C, num_val))


@pytest.mark.parametrize("batch_size", [32, 40])  # 32 does not divide N = 120, 40 does
def test_float64_training_replays_the_numpy_reference_loop(batch_size):
    params, X, y, X_val, y_val = float64_problem()
    kwargs = dict(learning_rate=0.1, learning_rate_decay=0.9, reg=1e-3, num_iters=300,
                  batch_size=batch_size)

    net = TwoLayerNet(30, 16, 5)
    net.params = {k: v.copy() for k, v in params.items()}
    np.random.seed(7)
    ours = net.train(X, y, X_val, y_val, **kwargs)

    ref_params = {k: v.copy() for k, v in params.items()}
    np.random.seed(7)
    theirs = reference.train(ref_params, X, y, X_val, y_val, **kwargs)

    assert len(ours["loss_history"]) == len(theirs["loss_history"]) == 300
    np.testing.assert_allclose(ours["loss_history"], theirs["loss_history"], rtol=0, atol=1e-10)
    for name in params:
        np.testing.assert_allclose(net.params[name], ref_params[name], rtol=0, atol=1e-9,
                                   err_msg=name)
    assert np.mean(ours["loss_history"][-20:]) < ours["loss_history"][0]  # it did learn
    assert len(ours["val_acc_history"]) == len(theirs["val_acc_history"]) >= 3
    assert len(ours["train_acc_history"]) == len(theirs["train_acc_history"])
    np.testing.assert_allclose(ours["val_acc_history"], theirs["val_acc_history"], atol=1e-12)
    np.testing.assert_allclose(ours["train_acc_history"], theirs["train_acc_history"],
                               atol=1e-12)
    # The same minibatches and params give the same correct counts, so the accuracies
    # (count / size, as numpy's mean computes them) must be the very same floats.
    assert ours["train_acc_history"] == [float(a) for a in theirs["train_acc_history"]]
    assert ours["val_acc_history"] == [float(a) for a in theirs["val_acc_history"]]


# ----------------------------------------------------------------------------- schedules

def notebook_learning_rates(num_train, batch_size, num_iters, lr, decay):
    """The notebook's loop, literally: the lr used at each step and where epochs end."""
    iterations_per_epoch = max(num_train / batch_size, 1)
    used, ends = [], []
    for it in range(num_iters):
        used.append(lr)
        ends.append(it % iterations_per_epoch == 0)
        if it % iterations_per_epoch == 0:
            lr *= decay
    return np.array(used), np.array(ends)


@pytest.mark.parametrize("num_train, batch_size, expected_ends", [
    (1000, 200, [0, 5, 10, 15, 20, 25]),      # integer iterations_per_epoch
    (1000, 300, [0]),                         # 3.33...: it % 3.33 is never 0 again
    (100, 200, list(range(30))),              # clamps to 1: every step ends an epoch
])
def test_step_schedule_matches_the_notebook_loop(num_train, batch_size, expected_ends):
    T, lr0, decay = 30, 0.5, 0.9
    schedule = loop.make_schedule(num_train, batch_size, T)
    ipe = max(num_train / batch_size, 1)
    np.testing.assert_array_equal(schedule.epoch_end, [it % ipe == 0 for it in range(T)])
    notebook_lrs, notebook_ends = notebook_learning_rates(num_train, batch_size, T, lr0, decay)
    np.testing.assert_array_equal(schedule.epoch_end, notebook_ends)
    # A sanity check on the literal loop itself, so both cannot be wrong together.
    assert np.flatnonzero(notebook_ends).tolist() == expected_ends
    np.testing.assert_array_equal(schedule.decays_before,
                                  np.concatenate([[0], np.cumsum(notebook_ends)[:-1]]))

    config = TrainConfig(num_iters=T, batch_size=batch_size, learning_rate=lr0,
                         learning_rate_decay=decay)
    with jax.enable_x64(True):
        lrs = np.asarray(optim.learning_rates(config, config.hyperparams(), schedule.decays_before))
    assert lrs.shape == (T,) and lrs.dtype == np.float64
    np.testing.assert_allclose(lrs, notebook_lrs, rtol=1e-12)
    np.testing.assert_allclose(lrs[0], lr0, rtol=1e-15)
    if num_train < batch_size:
        np.testing.assert_allclose(lrs, lr0 * decay ** np.arange(T), rtol=1e-12)

    assert schedule.batches.shape == (T, batch_size) and schedule.batches.dtype == np.int32
    assert schedule.batches.min() >= 0 and schedule.batches.max() < num_train


def test_batches_are_the_notebooks_draws():
    rng = np.random.RandomState(11)
    expected = np.stack([rng.choice(50, 8) for _ in range(6)])
    np.testing.assert_array_equal(loop.make_schedule(50, 8, 6, seed=11).batches, expected)
    np.random.seed(4)
    drawn = loop.sample_batches(50, 8, 6)
    np.random.seed(4)
    np.testing.assert_array_equal(drawn, [np.random.choice(50, 8) for _ in range(6)])
    given = np.arange(48).reshape(6, 8)
    np.testing.assert_array_equal(loop.make_schedule(50, 8, 6, batches=given).batches, given)


def test_cosine_schedule_with_warmup():
    T, warmup, lr0 = 50, 5, 0.2
    config = TrainConfig(num_iters=T, batch_size=10, learning_rate=lr0, schedule="cosine",
                         warmup_iters=warmup)
    schedule = loop.make_schedule(100, 10, T)
    with jax.enable_x64(True):
        lrs = np.asarray(optim.learning_rates(config, config.hyperparams(), schedule.decays_before))
    t = np.arange(T)
    progress = np.clip((t - warmup) / (T - warmup), 0, 1)
    expected = np.where(t < warmup, lr0 * (t + 1) / warmup, lr0 * 0.5 * (1 + np.cos(np.pi * progress)))
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert lrs[warmup - 1] == pytest.approx(lr0) and lrs[warmup] == pytest.approx(lr0)
    assert np.all(np.diff(lrs[warmup:]) < 0) and lrs[-1] < 0.01 * lr0


# ----------------------------------------------------------------------------- solver.train

def test_same_seed_same_result_and_another_seed_differs():
    X, y, X_val, y_val = separable()
    config = TrainConfig(seed=3, **SMALL)
    first = solver.train(X, y, X_val, y_val, config)
    second = solver.train(X, y, X_val, y_val, config)
    assert first.history == second.history
    assert first.best_val_acc == second.best_val_acc
    for name in ("W1", "b1", "W2", "b2"):
        assert first.params[name].dtype == np.float32
        np.testing.assert_array_equal(first.params[name], second.params[name])
        np.testing.assert_array_equal(first.best_params[name], second.best_params[name])
    other = solver.train(X, y, X_val, y_val, TrainConfig(seed=4, **SMALL))
    assert other.history["loss_history"] != first.history["loss_history"]
    assert not np.array_equal(other.params["W1"], first.params["W1"])


def test_histories_and_best_params():
    X, y, X_val, y_val = separable()
    config = TrainConfig(seed=3, **SMALL)  # N=200, B=32: epochs end at steps 0, 25, 50
    result = solver.train(X, y, X_val, y_val, config)
    ends = loop.make_schedule(200, 32, 60).epoch_end
    assert np.flatnonzero(ends).tolist() == [0, 25, 50]
    assert len(result.history["loss_history"]) == 60
    assert len(result.history["val_acc_history"]) == len(result.history["train_acc_history"]) \
        == int(ends.sum())
    final_acc = np.mean(np.asarray(model.predict(result.params, X_val)) == y_val)
    assert result.best_val_acc == max(result.history["val_acc_history"] + [final_acc])
    best_acc = np.mean(np.asarray(model.predict(result.best_params, X_val)) == y_val)
    assert best_acc == result.best_val_acc


def test_final_params_are_candidates_for_best_when_the_last_step_is_no_epoch_end():
    """With a schedule that decays to the end, the final params are often the best."""
    X, y, X_val, y_val = separable(N=200, num_val=60)
    config = TrainConfig(seed=0, schedule="cosine", **{**SMALL, "num_iters": 24})
    schedule = loop.make_schedule(200, 32, 24)
    assert np.flatnonzero(schedule.epoch_end).tolist() == [0]
    assert np.flatnonzero(schedule.validate).tolist() == [0, 23]
    result = solver.train(X, y, X_val, y_val, config)
    final_acc = np.mean(np.asarray(model.predict(result.params, X_val)) == y_val)
    assert len(result.history["val_acc_history"]) == 1
    assert final_acc > result.history["val_acc_history"][0]  # learning happened after step 0
    assert result.best_val_acc == final_acc
    for name in result.params:
        np.testing.assert_array_equal(result.best_params[name], result.params[name])


def test_progress_hook_prints_the_notebook_lines():
    X, y, X_val, y_val = separable(N=100)
    lines, calls = [], []
    printer = solver.notebook_printer(lines.append, every=10)

    def progress(done, total, losses):
        calls.append((done, total, len(losses)))
        printer(done, total, losses)

    config = TrainConfig(seed=2, hidden_size=8, num_iters=28, batch_size=10, learning_rate=1e-2)
    result = solver.train(X, y, X_val, y_val, config, progress=progress, chunk_size=7)
    assert calls == [(7, 28, 7), (14, 28, 7), (21, 28, 7), (28, 28, 7)]
    losses = result.history["loss_history"]
    assert lines == ["iteration %d / 28: loss %f" % (it, losses[it]) for it in (0, 10, 20)]


@pytest.mark.parametrize("optimizer, schedule", [  # sgd/step: the tests above
    ("momentum", "step"), ("nesterov", "cosine"), ("adam", "step"), ("adamw", "cosine")])
def test_optimizers_and_schedules_fit_a_separable_problem(optimizer, schedule):
    X, y, X_val, y_val = separable()
    lr = 1e-2 if optimizer.startswith("adam") else 1e-1
    config = TrainConfig(**{**SMALL, "learning_rate": lr}, optimizer=optimizer,
                         schedule=schedule, warmup_iters=5 if schedule == "cosine" else 0,
                         weight_decay=1e-2 if optimizer == "adamw" else 0.0)
    result = solver.train(X, y, X_val, y_val, config)
    losses = np.array(result.history["loss_history"])
    assert np.all(np.isfinite(losses))
    assert losses[0] == pytest.approx(np.log(3), abs=0.05)
    assert losses[-10:].mean() < 0.25 * losses[0], losses[-10:]
    assert result.best_val_acc >= 0.9


def test_dropout_runs_and_changes_training():
    X, y, X_val, y_val = separable()
    plain = solver.train(X, y, X_val, y_val, TrainConfig(seed=3, **SMALL))
    dropped = solver.train(X, y, X_val, y_val, TrainConfig(seed=3, dropout=0.5, **SMALL))
    losses = np.array(dropped.history["loss_history"])
    assert np.all(np.isfinite(losses)) and losses[-10:].mean() < 0.5 * losses[0]
    assert dropped.history["loss_history"] != plain.history["loss_history"]
    assert dropped.best_val_acc >= 0.9  # evaluation runs without dropout


def test_flip_and_translate_run_on_image_rows():
    # A left-right gradient image: flips and shifts change what the net sees, so the
    # augmented run's first loss differs from the loss on the images as they are.
    rng = np.random.RandomState(0)
    ramp = np.broadcast_to(np.linspace(-1, 1, 32)[None, :, None], (32, 32, 3)).ravel()
    y = rng.randint(0, 3, 32)
    X = (ramp[None, :] * (1 + y[:, None]) + 0.1 * rng.randn(32, 3072)).astype(np.float32)
    config = TrainConfig(hidden_size=8, num_iters=6, batch_size=16, learning_rate=1e-3,
                         std=1e-2, reg=0.0, flip=True, translate=2)
    result = solver.train(X, y, X[:16], y[:16], config)
    losses = result.history["loss_history"]
    assert len(losses) == 6 and np.all(np.isfinite(losses))
    assert result.params["W1"].shape == (3072, 8)
    batch = loop.make_schedule(32, 16, 6, seed=0).batches[0]
    init = model.init_params(jax.random.key(0), 3072, 8, 3, 1e-2)
    unaugmented = float(model.loss(init, X[batch], y[batch]))
    assert losses[0] != pytest.approx(unaugmented, rel=1e-4)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("field, value", [
    ("batch_size", 0), ("num_iters", 0), ("hidden_size", 0), ("learning_rate", -1.0),
    ("learning_rate", float("nan")), ("reg", -1.0), ("learning_rate_decay", 0.0),
    ("learning_rate_decay", 1.5), ("optimizer", "foo"), ("schedule", "linear"),
    ("momentum", 1.0), ("dropout", 1.0), ("dtype", "float16"), ("translate", 40),
])
def test_bad_settings_raise_a_value_error_naming_the_field(field, value):
    config = TrainConfig(**{"hidden_size": 4, "num_iters": 3, "batch_size": 2, field: value})
    with pytest.raises(ValueError, match=field):
        config.validate()
    X = np.zeros((6, 3), np.float32)
    y = np.zeros(6, int)
    with pytest.raises(ValueError, match=field):
        solver.train(X, y, X, y, config)


def test_two_layer_net_train_rejects_bad_settings():
    net = TwoLayerNet(3, 4, 2)
    X, y = np.zeros((6, 3)), np.zeros(6, int)
    with pytest.raises(ValueError, match="learning_rate"):
        net.train(X, y, X, y, learning_rate=-1)
    with pytest.raises(ValueError, match="batch_size"):
        net.train(X, y, X, y, batch_size=0)
    with pytest.raises(ValueError, match="num_iters"):
        net.train(X, y, X, y, num_iters=0)


def bad_data_cases():
    rng = np.random.RandomState(0)
    X, y = rng.randn(10, 4).astype(np.float32), rng.randint(0, 3, 10)
    X_nan = X.copy()
    X_nan[2, 1] = np.nan
    X_inf = X.copy()
    X_inf[[1, 7], [0, 3]] = [np.inf, -np.inf]
    return [
        ("negative label", (X, np.where(np.arange(10) == 3, -1, y), X, y), None, "y_train"),
        ("label >= C", (X, np.where(np.arange(10) == 3, 3, y), X, y), 3, r"y_train.*\[0, 2\]"),
        ("val label >= C", (X, y, X, np.full(10, 5)), 3, "y_val"),
        ("float labels", (X, y.astype(float), X, y), None, "astype"),
        ("labels too few", (X, y[:9], X, y), None, "y_train has 9 labels"),
        ("NaN in X_train", (X_nan, y, X, y), None, "X_train contains 1 NaN"),
        ("infinities in X_val", (X, y, X_inf, y), None, "X_val contains 2 NaN or infinite"),
        ("X_val wrong D", (X, y, X[:, :3], y), None, "X_val has 3 features"),
        ("3-D X_train", (X.reshape(10, 2, 2), y, X, y), None, "X_train must be 2-D"),
        ("empty X_val", (X, y, X[:0], y[:0]), None, "X_val is empty"),
    ]


@pytest.mark.parametrize("case", bad_data_cases(), ids=lambda case: case[0])
def test_bad_data_raises_a_clear_value_error(case):
    _, (X, y, X_val, y_val), num_classes, message = case
    params = None
    if num_classes is not None:
        params = model.init_params(jax.random.key(0), 4, 5, num_classes)
    config = TrainConfig(hidden_size=5, num_iters=3, batch_size=4)
    with pytest.raises(ValueError, match=message):
        solver.train(X, y, X_val, y_val, config, params=params)


def test_finite_values_whose_sum_overflows_are_accepted():
    big = np.full((4, 3), np.finfo(np.float32).max, np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(big.sum())
    assert check_features(big, "X") is big
    big[1, 2] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN or infinite values"):
        check_features(big, "X")


def test_params_that_do_not_fit_the_data_are_refused():
    X, y = np.zeros((10, 4), np.float32), np.zeros(10, int)
    config = TrainConfig(hidden_size=5, num_iters=3, batch_size=4)
    wrong_d = model.init_params(jax.random.key(0), 6, 5, 3)
    with pytest.raises(ValueError, match="^X_train has 4 features per row but the model expects 6$"):
        solver.train(X, y, X, y, config, params=wrong_d)


def test_batches_of_the_wrong_shape_are_refused():
    X, y = np.zeros((10, 4), np.float32), np.zeros(10, int)
    config = TrainConfig(hidden_size=5, num_iters=3, batch_size=4)
    with pytest.raises(ValueError, match=r"batches must have shape .*\(3, 4\).*\(3, 5\)"):
        solver.train(X, y, X, y, config, batches=np.zeros((3, 5), int))
    with pytest.raises(ValueError, match="batches must have shape"):
        solver.train(X, y, X, y, config, batches=np.zeros(12, int))


def test_batches_indexing_past_the_data_are_refused():
    # JAX clamps out-of-range indices silently (DESIGN.md decision 4): row 10 of a
    # 10-row X would quietly train on row 9.
    X, y = np.zeros((10, 4), np.float32), np.zeros(10, int)
    config = TrainConfig(hidden_size=5, num_iters=3, batch_size=4)
    with pytest.raises(ValueError, match="batches"):
        solver.train(X, y, X, y, config, batches=np.full((3, 4), 10))


def test_augmentation_needs_32x32x3_image_rows():
    X, y = np.zeros((10, 20), np.float32), np.zeros(10, int)
    for setting in ({"flip": True}, {"translate": 2}):
        config = TrainConfig(hidden_size=5, num_iters=3, batch_size=4, **setting)
        with pytest.raises(ValueError, match="3072"):
            solver.train(X, y, X, y, config)


def test_early_stopping_freezes_params_and_matches_in_a_sweep():
    """patience=2: two validations without a new best stop the run at that step."""
    from jaxnet import sweep
    X, y, X_val, y_val = separable(N=100, num_val=60)
    config = TrainConfig(seed=1, patience=2, **{**SMALL, "batch_size": 20, "num_iters": 300})
    result = solver.train(X, y, X_val, y_val, config)
    vals = result.history["val_acc_history"]
    stop = len(result.history["loss_history"])
    assert stop < 300 and stop % 5 == 1  # epochs end every 5 steps; stop right after one
    assert len(vals) == (stop - 1) // 5 + 1
    best_epoch = int(np.argmax(vals))
    assert len(vals) - 1 - best_epoch == 2 and max(vals[best_epoch + 1:]) <= vals[best_epoch]
    assert result.best_val_acc == max(vals)
    never = solver.train(X, y, X_val, y_val, TrainConfig(seed=1, **{**SMALL, "batch_size": 20,
                                                                       "num_iters": 300}))
    np.testing.assert_allclose(never.history["loss_history"][:stop],
                               result.history["loss_history"], atol=1e-6)
    # In a sweep the stopped config is frozen while another keeps going; both match solo.
    configs = [config, TrainConfig(**{**config.__dict__, "learning_rate": 1e-3})]
    swept = sweep.run_sweep(configs, X, y, X_val, y_val, keep_params=True)
    for r in swept.results:
        solo = solver.train(X, y, X_val, y_val, r.config)
        assert len(r.history["loss_history"]) == len(solo.history["loss_history"])
        np.testing.assert_allclose(r.history["loss_history"], solo.history["loss_history"],
                                   atol=1e-5)
        np.testing.assert_allclose(r.params["W1"], solo.params["W1"], atol=1e-5)
    with pytest.raises(ValueError, match="patience must be an integer >= 0"):
        TrainConfig(patience=-1).validate()
