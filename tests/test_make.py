"""The Makefile's own interface: ``make help`` (no venv needed) and the ``clean-<stage>`` targets."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def bare(tmp_path: Path) -> Path:
    """A folder with only the Makefile: no venv, no package, no pyproject.toml."""
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    return tmp_path


def test_help_needs_no_venv_and_lists_every_target_and_variable(bare):
    out = _make(bare, "help")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in bare.iterdir()) == ["Makefile"]  # nothing installed or created
    text = (REPO_ROOT / "Makefile").read_text()
    stages = re.search(r"^STAGES *:= *(.*)$", text, re.M).group(1).split()
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).replace("$(STAGES)", " ".join(stages)).split()
    assert "teacher" in phony and "clean-run" in phony
    listed = re.findall(r"^  (\S+) ", out.stdout, re.M)
    for target in phony:
        assert target in listed, f"make help does not list {target}:\n{out.stdout}"
    assert "clean-<stage>" in listed
    for var in ("CONFIG=configs/demo.yaml", "ARGS", "FORCE", "KAGGLE", "COMPETITION", "PYTHON=python3"):
        assert re.search(rf"^  {re.escape(var)} +\S", out.stdout, re.M), f"{var} missing:\n{out.stdout}"


def test_a_misspelt_clean_target_fails_with_the_valid_ones(bare):
    run = bare / "runs" / "demo"
    for d in ("teacher", "student", "student-40"):
        (run / d).mkdir(parents=True)
    out = _make(bare, "clean-studnet")
    assert out.returncode != 0
    assert "clean-studnet" in out.stderr
    for valid in ("clean-teacher", "clean-cache", "clean-student", "clean-run", "clean-student-40"):
        assert valid in out.stderr, out.stderr
    assert sorted(p.name for p in run.iterdir()) == ["student", "student-40", "teacher"]  # nothing deleted


@pytest.mark.parametrize("folder", ["student", "student-40"])
def test_clean_deletes_a_stage_or_a_folder_of_the_run(bare, folder):
    run = bare / "runs" / "demo"
    for d in ("teacher", "student", "student-40"):
        (run / d).mkdir(parents=True)
    out = _make(bare, f"clean-{folder}")
    assert out.returncode == 0, out.stderr
    assert not (run / folder).exists() and (run / "teacher").is_dir()


def test_clean_of_a_stage_that_has_not_run_is_fine(bare):
    assert _make(bare, "clean-cache").returncode == 0
