"""The Python API: ``pipeline.run(stage, config, overrides)`` returns the stage's summary and sets up logging;
``distil --version``."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import pipeline
from pipeline import api
from pipeline.config import REPO_ROOT, ConfigError


def test_run_returns_the_stages_summary(built):
    summary = pipeline.run("student", str(built), ["student.epochs=1"])
    assert summary["epochs"] == 1 and summary["name"] == "dwsep"
    assert 0.0 <= summary["val_acc"] <= 1.0
    on_disk = json.loads((built.parent / "runs" / "tiny" / "summary.json").read_text())
    assert on_disk["student"]["val_acc"] == summary["val_acc"]
    again = pipeline.run("student", str(built), ["student.epochs=1"])  # finished: reused, same numbers
    assert again["val_acc"] == summary["val_acc"]


def test_run_raises_the_libraries_errors_with_their_message(built):
    with pytest.raises(ConfigError, match="student.epochz"):
        pipeline.run("student", str(built), ["student.epochz=1"])
    with pytest.raises(TypeError, match=r"\['student.epochs=1'\]"):
        pipeline.run("student", str(built), "student.epochs=1")


@pytest.fixture
def no_logging(monkeypatch):
    """The logging of a fresh notebook kernel: no handler anywhere, no level on the pipeline logger. (Called in
    the test's body: pytest adds its capturing handler to the root logger after the fixtures have run.)"""
    def clear() -> logging.Logger:
        root, lib = logging.getLogger(), logging.getLogger("pipeline")
        monkeypatch.setattr(root, "handlers", [])
        monkeypatch.setattr(lib, "handlers", [])
        monkeypatch.setattr(lib, "level", logging.NOTSET)
        return lib
    return clear


def test_the_api_sets_up_logging_once(no_logging, capsys):
    lib = no_logging()
    api.setup_logging()
    api.setup_logging()
    assert len(lib.handlers) == 1 and lib.level == logging.INFO
    logging.getLogger("pipeline.engine").info("epoch 1/2 val_acc=0.5")
    err = capsys.readouterr().err
    assert err.count("INFO pipeline.engine: epoch 1/2 val_acc=0.5") == 1


def test_the_api_leaves_a_callers_logging_alone(no_logging):
    lib = no_logging()
    mine = logging.StreamHandler()
    logging.getLogger().handlers.append(mine)
    lib.setLevel(logging.WARNING)
    api.setup_logging()
    assert lib.handlers == [] and lib.level == logging.WARNING
    assert logging.getLogger().handlers == [mine]


@pytest.mark.slow
def test_version_is_the_packages():
    out = subprocess.run([sys.executable, "-m", "pipeline", "--version"], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == f"distil {pipeline.__version__}"
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'version = "{pipeline.__version__}"' in pyproject
