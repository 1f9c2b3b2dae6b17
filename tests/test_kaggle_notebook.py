"""docs/kaggle-notebook.md (and the README's notebook section) run as written: every ``python`` cell, in order,
in one namespace, on tiny generated HW13 data. Only the settings cell's REPO, CONFIG, DATA and OUT get the test's values; ``!`` and ``%`` lines (shell
and IPython magics) are skipped, and ``python colab`` cells are Colab's alternatives, not run."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import REPO_ROOT
from tests.conftest import make_hw13, tiny_config

DOC = REPO_ROOT / "docs" / "kaggle-notebook.md"
SETTINGS = ("REPO", "CONFIG", "DATA", "OUT")


def cells(text: str) -> list[str]:
    """The code of the doc's ```python cells (info string exactly ``python``), magics and shell lines dropped."""
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    return ["\n".join(line for line in b.splitlines() if not line.lstrip().startswith(("!", "%"))) for b in blocks]


def substitute(code: str, values: dict[str, str]) -> tuple[str, set[str]]:
    """``NAME = ...  # comment`` lines of the settings get ``NAME = <value>``; returns the code and the names done."""
    done = set()

    def repl(m: re.Match) -> str:
        done.add(m.group(1))
        return f"{m.group(1)} = {values[m.group(1)]!r}"

    return re.sub(rf"^({'|'.join(SETTINGS)}) = .*$", repl, code, flags=re.M), done


@pytest.mark.slow
def test_the_notebook_guide_runs_as_written(tmp_path, monkeypatch, capsys):
    data = make_hw13(tmp_path / "data")
    config = tiny_config(tmp_path, data)
    out = tmp_path / "working"
    values = {"REPO": str(REPO_ROOT), "CONFIG": str(config), "DATA": str(data), "OUT": str(out)}
    code = cells(DOC.read_text(encoding="utf-8"))
    assert len(code) >= 5, "the guide lost its cells"
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__notebook__"}
    substituted: set[str] = set()
    for i, cell in enumerate(code):
        cell, done = substitute(cell, values)
        substituted |= done
        exec(compile(cell, f"{DOC.name} cell {i + 1}", "exec"), ns)
    assert substituted == set(SETTINGS), "the settings cell must define " + ", ".join(SETTINGS)

    # what the guide says it leaves, where it says
    csv = out / "submissions" / "tiny.csv"
    assert tmp_path / ns["submission"]["path"] == csv and csv.is_file()  # relative to the working directory
    assert list(pd.read_csv(csv).columns) == ["Id", "Category"]
    for stage in ("teacher", "student"):
        assert (out / "runs" / "tiny" / stage / "metrics.csv").is_file()
        assert 0.0 <= ns[stage]["val_acc"] <= 1.0
    assert (out / "runs" / "smoke" / "student" / "student.safetensors").is_file()  # the smoke test's own run
    assert ns["budget"]["rows"] and not list((REPO_ROOT / "runs").glob("tiny*"))
    printed = capsys.readouterr().out
    assert "submission: " + str(csv.relative_to(tmp_path)) in printed


@pytest.mark.slow
def test_the_readmes_notebook_section_runs_as_written(tmp_path, monkeypatch):
    data = make_hw13(tmp_path / "data")
    config = tiny_config(tmp_path, data)
    out = tmp_path / "working"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## HW13 on Kaggle or Colab"):]
    section = section[:section.index("\n## ", 1)]
    (code,) = cells(section)
    code, done = substitute(code, {"CONFIG": str(config), "DATA": str(data), "OUT": str(out)})
    assert done == {"CONFIG", "DATA", "OUT"}
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md HW13 section", "exec"), ns)
    assert tmp_path / ns["summary"]["path"] == out / "submissions" / "tiny.csv"  # relative to the working directory
    assert (out / "submissions" / "tiny.csv").is_file()


@pytest.mark.slow
def test_the_readmes_python_section_runs_as_written(built, monkeypatch):
    """Its example trains a student beside the demo's (teacher and cache done, as after ``make``); here on the
    tiny run, whose config takes the place of configs/demo.yaml."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    (code,) = cells(section)
    assert code.count('"configs/demo.yaml"') == 1
    monkeypatch.chdir(built.parent)
    ns: dict = {}
    exec(compile(code.replace('"configs/demo.yaml"', repr(str(built))), "README.md From Python", "exec"), ns)
    assert ns["summary"]["epochs"] == 3 and 0.0 <= ns["summary"]["val_acc"] <= 1.0
    assert (built.parent / "runs" / "tiny" / "student-3" / "student.safetensors").is_file()


def test_cells_skip_magics_and_colab_alternatives():
    text = "```python\n!pip install x\nA = 1\n%load_ext y\n```\n```python colab\nB = 2\n```\n```python\nC = 3\n```\n"
    assert cells(text) == ["A = 1", "C = 3"]
