"""scripts/mutation_check.py stays honest: every planted bug still applies to the source as
it is, and its test selection names files that exist."""
import importlib.util
import subprocess
import sys

from conftest import REPO

# A script, not a module of the package: loaded from its file.
SPEC = importlib.util.spec_from_file_location("mutation_check",
                                              REPO / "scripts" / "mutation_check.py")
mutation_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(mutation_check)


def test_every_mutant_applies_once_and_names_existing_tests():
    names = [m.name for m in mutation_check.MUTANTS]
    assert len(names) == len(set(names))
    for m in mutation_check.MUTANTS:
        assert mutation_check.check_applies(m, REPO) is None
        assert m.old != m.new, m.name
        for test in m.tests:
            assert (REPO / test.split("::")[0]).is_file(), (m.name, test)


def test_a_mutant_whose_string_is_gone_or_repeated_is_refused(tmp_path):
    (tmp_path / "f.py").write_text("a = 1\na = 1\n")
    gone = mutation_check.Mutant("gone", "f.py", "b = 2", "b = 3", ())
    twice = mutation_check.Mutant("twice", "f.py", "a = 1", "a = 2", ())
    assert "occurs 0 times in f.py" in mutation_check.check_applies(gone, tmp_path)
    assert "occurs 2 times in f.py" in mutation_check.check_applies(twice, tmp_path)
    missing = mutation_check.Mutant("missing", "g.py", "x", "y", ())
    assert "g.py does not exist" in mutation_check.check_applies(missing, tmp_path)


def test_list_and_unknown_names():
    script = [sys.executable, str(REPO / "scripts" / "mutation_check.py")]
    listed = subprocess.run(script + ["--list"], capture_output=True, text=True)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == \
        [m.name for m in mutation_check.MUTANTS]
    unknown = subprocess.run(script + ["--only", "no_such_bug"], capture_output=True, text=True)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: unknown mutant no_such_bug; see --list"
