"""notebooks/two_layer_net.ipynb: executed top to bottom on the small fixture, and its
stored outputs, which must be those of a full run on CIFAR-10."""
import re

import nbclient
import nbformat
import pytest

from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "two_layer_net.ipynb"
NUM_ITERS = 30


def tagged(nb, tag) -> str:
    """The text a cell tagged ``tag`` printed."""
    (cell,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def number_after(text: str, label: str) -> float:
    match = re.search(re.escape(label) + r"\s*([-+0-9.eE]+)", text)
    assert match, f"{label!r} not in {text!r}"
    return float(match.group(1))


def gradcheck_rows(text: str) -> dict:
    """{param: [three relative errors]} from the gradient-check table."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("W1", "b1", "W2", "b2"):
            rows[parts[0]] = [float(v) for v in parts[1:]]
    return rows


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)


@pytest.fixture(scope="module")
def executed(cifar_fixture):
    """The notebook run on the 20-images-per-class fixture (200 training images)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = (f"DATA_DIR = {str(cifar_fixture)!r}\n"
                         f"NUM_TRAINING, NUM_VALIDATION, NUM_TEST = 150, 50, 100\n"
                         f"NUM_ITERS = {NUM_ITERS}\nSWEEP_ITERS = 20\nTIMING_REPEATS = 1\n")
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    return nb


def test_toy_checks_meet_the_exercise_thresholds(executed):
    assert number_after(tagged(executed, "toy-scores"), "correct scores:") < 1e-7
    assert number_after(tagged(executed, "toy-loss"), "correct loss:") < 1e-12
    rows = gradcheck_rows(tagged(executed, "gradcheck"))
    assert set(rows) == {"W1", "b1", "W2", "b2"}
    for name, (auto_hand, auto_numeric, hand_numeric) in rows.items():
        assert auto_hand < 1e-12, name
        assert auto_numeric < 1e-8 and hand_numeric < 1e-8, name
    assert number_after(tagged(executed, "toy-train"), "Final training loss:") < 0.2


def test_fixture_run_goes_through_every_section(executed):
    assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    assert "X_train shape: (150, 3072) float32" in tagged(executed, "load")
    run = tagged(executed, "default-run")
    assert f"iteration 0 / {NUM_ITERS}: loss" in run
    assert 0.0 <= number_after(run, "Validation accuracy:") <= 1.0
    assert "the weights stay float64" in run
    sweep = tagged(executed, "sweep").splitlines()
    assert sweep[0].startswith("12 networks trained in")
    assert len([line for line in sweep[3:] if line.strip()]) == 12
    assert 0.0 <= number_after(tagged(executed, "test-acc"), "Test accuracy:") <= 1.0
    assert "ratio" in tagged(executed, "timing")
    # Toy loss, loss and accuracy, two weight grids, heatmap.
    assert images(executed) == 5


def test_stored_outputs_are_a_full_run_on_cifar10():
    """The committed notebook reads without running: its outputs come from one run, top
    to bottom, on the real data (not the fixture), in a file small enough for a web page."""
    assert NOTEBOOK.stat().st_size < 1.5e6
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert "X_train shape: (49000, 3072) float32" in tagged(nb, "load")
    run = tagged(nb, "default-run")
    assert "iteration 900 / 1000: loss" in run
    assert 0.26 < number_after(run, "Validation accuracy:") < 0.32
    assert number_after(tagged(nb, "toy-loss"), "correct loss:") < 1e-12
    assert number_after(tagged(nb, "test-acc"), "Test accuracy:") > 0.4
    assert images(nb) == 5
