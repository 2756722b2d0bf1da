"""jaxnet is an installed package: pyproject.toml and requirements.txt agree, every console
command is installed and answers --help from any folder, and nothing puts the repository on
sys.path."""
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SCRIPTS = PROJECT["scripts"]
COMMANDS = ("jaxnet-train", "jaxnet-sweep", "jaxnet-search", "jaxnet-gradcheck",
            "jaxnet-predict", "jaxnet-get-cifar10")
BIN = os.path.dirname(sys.executable)
# The installed package, not a checkout that PYTHONPATH happens to name.
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
REINSTALL = "install the package: pip install --no-deps -e ."


def test_requirements_txt_lists_the_dependencies_of_pyproject():
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"] == requirements


def test_every_console_command_is_declared_and_installed():
    assert sorted(SCRIPTS) == sorted(COMMANDS)
    try:
        installed = importlib.metadata.distribution("jaxnet").entry_points
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"jaxnet is not installed; {REINSTALL}", pytrace=False)
    assert {e.name: e.value for e in installed if e.group == "console_scripts"} == SCRIPTS, \
        f"the installed commands are not pyproject.toml's; {REINSTALL}"
    for name, target in SCRIPTS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function, None)), name


@pytest.mark.parametrize("name", COMMANDS)
def test_console_command_answers_help_outside_the_checkout(name, tmp_path):
    command = os.path.join(BIN, name)
    assert os.path.isfile(command), f"{command} is missing; {REINSTALL}"
    proc = subprocess.run([command, "--help"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name} "), proc.stdout[:200]


def test_jaxnet_imports_outside_the_checkout(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import jaxnet, sys; print(jaxnet.__file__)"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stderr}\n{REINSTALL}"
    assert proc.stdout.strip().endswith(os.path.join("jaxnet", "__init__.py")), proc.stdout


def test_no_file_puts_a_folder_on_sys_path():
    pattern = re.compile(r"sys\.path\.(insert|append)\b")
    files = [path for folder in ("jaxnet", "scripts", "tests")
             for path in sorted((REPO / folder).rglob("*.py"))]
    files.append(REPO / "notebooks" / "two_layer_net.ipynb")
    offenders = [str(path.relative_to(REPO)) for path in files
                 if pattern.search(path.read_text())]
    assert not offenders
