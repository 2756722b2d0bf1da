"""Dependencies point one way: the core and the training loop import no infrastructure
(progress files, the multi-process runtime, signals, argparse), and the library's
experiments import no command-line code."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import jaxnet

PACKAGE = Path(jaxnet.__file__).parent
CORE = ("model", "kernels", "augment", "optim", "config", "step", "loop", "solver", "compat",
        "arrays", "validate", "reference", "gradcheck")
INFRASTRUCTURE = ("jaxnet.resume", "jaxnet.distributed", "jaxnet.program_sharing",
                  "jaxnet.runs", "jaxnet.commands", "argparse", "signal")
EXPERIMENTS = ("sweep", "search")


def imported_modules(name: str) -> set[str]:
    """Every module ``jaxnet/<name>.py`` imports, as absolute names."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ("jaxnet." * (node.level > 0)) + (node.module or "")
            found.add(base.rstrip("."))
            found.update(f"{base.rstrip('.')}.{alias.name}" for alias in node.names)
    return found


def forbidden(modules: set[str], prefixes) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("name", CORE)
def test_core_and_training_import_no_infrastructure(name):
    assert forbidden(imported_modules(name), INFRASTRUCTURE) == []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_import_no_command_line_code(name):
    assert forbidden(imported_modules(name), ("jaxnet.commands", "argparse")) == []


def test_training_a_network_loads_no_infrastructure():
    """What a notebook user runs leaves the progress, multi-process and command-line
    modules unloaded."""
    code = """
import sys
import numpy as np
from jaxnet import TwoLayerNet
rng = np.random.RandomState(0)
X, y = rng.randn(40, 6).astype(np.float32), rng.randint(0, 3, 40)
net = TwoLayerNet(6, 5, 3)
stats = net.train(X, y, X, y, num_iters=20, batch_size=8)
assert len(stats["loss_history"]) == 20
print(" ".join(sorted(m for m in sys.modules if m.startswith("jaxnet"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert "jaxnet.solver" in out and "jaxnet.step" in out  # it did train
    assert forbidden(set(out), INFRASTRUCTURE) == []
