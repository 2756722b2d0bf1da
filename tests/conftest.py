"""Shared fixtures: CIFAR-10 folders in the official format, built in the repository
(synthetic images), and the full real dataset for the tests that need real pictures."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cifar_format import write_cifar10

# The suite runs on the CPU, as CI does: its float32 checks against numpy
# (1e-4 to 1e-6) assume full float32 products, and on NVIDIA GPUs JAX's default
# float32 products use TF32 (about 1e-3 relative). The numerical tests
# (test_model.py, test_augment_dropout.py, test_preprocess.py) also pass on a
# GPU with JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for this session's processes, the scripts the tests
# start included: they compile the same small programs again and again. Programs are
# cached however fast they compile.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    COMPILATION_CACHE = tempfile.mkdtemp(prefix="jaxnet-tests-compilation-cache-")
    atexit.register(shutil.rmtree, COMPILATION_CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
# The tests' programs are small, so compiling them costs more than running them: LLVM's
# optimisation passes are left out (the products, which dominate real runs, are library
# calls either way). With both, the suite took 516 s instead of about 720 s on a 2-core
# AMD EPYC.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JAXNET_SHARED_DATA", REPO.parent / "shared" / "data"))
MAKE_CIFAR10 = SHARED_DATA / "make_cifar10.py"
# The full 50,000-image build, made once (about 10-25 s) and reused across runs.
FULL_CIFAR10 = Path(os.environ.get(
    "JAXNET_FULL_CIFAR10", Path.home() / ".cache" / "jaxnet" / "cifar10-full"))


def make_real_cifar10(out: Path, per_class: int) -> str:
    """Write CIFAR-10's real images (the shared rebuild) into ``out``; return the script's
    stdout. Fails the test, never skips it, when the shared script is absent: a green
    run must mean that every test ran."""
    if not MAKE_CIFAR10.exists():
        pytest.fail(f"this test needs the real CIFAR-10 images, built by {MAKE_CIFAR10}, "
                    "which is missing (set JAXNET_SHARED_DATA to the folder holding "
                    "make_cifar10.py, or JAXNET_FULL_CIFAR10 to a built copy)", pytrace=False)
    cmd = [sys.executable, str(MAKE_CIFAR10), "--out", str(out), "--per-class", str(per_class)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def cifar_fixture(tmp_path_factory) -> Path:
    """A folder holding ``cifar-10-batches-py`` with 20 synthetic images per class and split."""
    root = tmp_path_factory.mktemp("cifar20")
    write_cifar10(root, per_class=20)
    return root


@pytest.fixture(scope="session")
def cifar_full() -> Path:
    """A folder holding the full real ``cifar-10-batches-py`` (built into a cache once)."""
    if not (FULL_CIFAR10 / "cifar-10-batches-py" / "test_batch").exists():
        make_real_cifar10(FULL_CIFAR10, per_class=0)
    return FULL_CIFAR10
