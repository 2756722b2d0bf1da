"""Choosing what to keep: best params are the best validated ones, not the last, and a
diverged sweep config is never the best, even when it led before it diverged."""
import numpy as np

from jaxnet import reference, solver, sweep
from jaxnet.config import TrainConfig

C, D = 3, 10


def blobs(n, rng, centers):
    y = rng.randint(0, C, n)
    return centers[y] + 0.5 * rng.randn(n, D), y


def relabelled_problem(seed=0, n=60):
    """X_train holds n rows with true labels, then the same kind of rows with labels
    shifted by one class: training on the first half, then the second, makes validation
    accuracy (true labels) climb, then fall."""
    rng = np.random.RandomState(seed)
    centers = 4 * rng.randn(C, D)
    X_true, y_true = blobs(n, rng, centers)
    X_wrong, y_wrong = blobs(n, rng, centers)
    X_val, y_val = blobs(60, rng, centers)
    X = np.concatenate([X_true, X_wrong])
    y = np.concatenate([y_true, (y_wrong + 1) % C])
    return X, y, X_val, y_val


def test_best_params_are_the_peak_not_the_last():
    X, y, X_val, y_val = relabelled_problem()
    T, B = 80, 12                      # 120 rows, batch 12: epochs end every 10 steps
    rng = np.random.RandomState(1)
    batches = np.concatenate([rng.randint(0, 60, (30, B)), rng.randint(60, 120, (T - 30, B))])
    config = TrainConfig(hidden_size=8, num_iters=T, batch_size=B, learning_rate=0.2,
                         learning_rate_decay=1.0, reg=0.0, std=0.1, dtype="float64")
    result = solver.train(X, y, X_val, y_val, config, batches=batches)
    vals = result.history["val_acc_history"]
    final_acc = np.mean(reference.predict(result.params, X_val) == y_val)
    peak = int(np.argmax(vals))
    assert vals[peak] >= 0.9 and final_acc <= 0.3 and vals[-1] <= 0.3, (vals, final_acc)
    assert result.best_val_acc == vals[peak]
    # The returned best params give the peak's accuracy when measured again ...
    assert np.mean(reference.predict(result.best_params, X_val) == y_val) == vals[peak]
    # ... and they are the params right after the peak's step (epoch end 10 * peak).
    stop = 10 * peak + 1
    prefix = solver.train(X, y, X_val, y_val, TrainConfig(**{**config.__dict__,
                                                             "num_iters": stop}),
                          batches=batches[:stop])
    for name in result.params:
        np.testing.assert_allclose(result.best_params[name], prefix.params[name], rtol=1e-12,
                                   atol=0, err_msg=name)
        assert not np.allclose(result.best_params[name], result.params[name]), name


def test_a_config_that_leads_then_diverges_is_marked_and_never_chosen():
    """Warmup lets a huge learning rate learn first (top validation accuracy) and then
    grow until the loss overflows."""
    rng = np.random.RandomState(0)
    centers = 4 * rng.randn(C, D)
    X, y = blobs(120, rng, centers)
    X_val, y_val = blobs(60, rng, centers)
    base = TrainConfig(hidden_size=8, num_iters=120, batch_size=12, reg=0.0, std=0.1,
                       schedule="cosine", warmup_iters=100, seed=2)
    # 1e4 starts at 100 (one step to 0.73 validation accuracy here) and grows to 1e4.
    configs = sweep.grid(base, learning_rate=[1e-3, 1e4, 2e-3])
    result = sweep.run_sweep(configs, X.astype(np.float32), y, X_val.astype(np.float32),
                             y_val)
    statuses = [r.status for r in result.results]
    assert statuses == ["ok", "diverged", "ok"], statuses
    leader = result.results[1]
    others = max(result.results[0].val_acc, result.results[2].val_acc)
    assert leader.val_acc > others, (leader.val_acc, others)     # it led before diverging
    assert not np.all(np.isfinite(leader.history["loss_history"]))
    assert result.results[2].val_acc > result.results[0].val_acc
    assert result.best_index == 2
    assert result.best_params is not None and np.all(np.isfinite(result.best_params["W1"]))
    rows = sweep.results_table(result)
    assert [row["index"] for row in rows][-1] == 1 and rows[-1]["status"] == "diverged"
    assert rows[0]["index"] == result.best_index


def test_early_stopping_freezes_the_params_at_the_stop():
    """After the stop, the steps left change nothing: the final params are those of a run
    that ends at the stop (the same minibatches and learning rates up to there)."""
    rng = np.random.RandomState(3)
    centers = 4 * rng.randn(C, D)
    X, y = blobs(100, rng, centers)
    X_val, y_val = blobs(60, rng, centers)
    config = TrainConfig(hidden_size=8, num_iters=300, batch_size=20, learning_rate=0.1,
                         reg=1e-3, std=0.01, patience=2, seed=1, dtype="float64")
    stopped = solver.train(X, y, X_val, y_val, config)
    stop = len(stopped.history["loss_history"])
    assert 1 < stop < 300
    ended = solver.train(X, y, X_val, y_val, TrainConfig(**{**config.__dict__,
                                                           "num_iters": stop, "patience": 0}))
    assert ended.history["loss_history"] == stopped.history["loss_history"]
    for name in ended.params:
        np.testing.assert_array_equal(stopped.params[name], ended.params[name], err_msg=name)
