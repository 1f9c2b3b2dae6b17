"""Progress where the user looks: a tqdm.auto bar in a notebook or a terminal, log lines in a log file, nothing
under CI; and the Python API's logging."""
from __future__ import annotations

import logging
import sys
import types

import pytest
from tqdm.auto import tqdm as auto_tqdm

from pipeline import progress as P


@pytest.fixture
def plain(monkeypatch):
    """stderr not a terminal, no CI, no notebook, no DISTIL_PROGRESS: what a log file sees."""
    monkeypatch.delenv("DISTIL_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(P, "in_notebook", lambda: False)
    return monkeypatch


def test_a_notebook_gets_a_tqdm_auto_bar(plain):
    plain.setattr(P, "in_notebook", lambda: True)
    plain.setenv("CI", "true")  # a notebook run by CI (nbconvert) still shows its bar
    assert P.mode() == "bar"
    bar = P.progress(range(3), "epoch 1/2")
    assert isinstance(bar, auto_tqdm)
    assert list(bar) == [0, 1, 2]


def test_a_terminal_gets_a_bar(plain):
    plain.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert P.mode() == "bar"


def test_ci_gets_nothing_and_a_log_file_gets_lines(plain):
    assert P.mode() == "lines"
    plain.setenv("CI", "true")
    assert P.mode() == "off"
    it = [1, 2]
    assert P.progress(it, "x") is it


@pytest.mark.parametrize("want", ["bar", "lines", "off"])
def test_the_environment_variable_chooses(plain, want):
    plain.setenv("DISTIL_PROGRESS", want)
    assert P.mode() == want


def test_an_unknown_mode_warns_once_and_uses_auto(plain, caplog):
    plain.setenv("DISTIL_PROGRESS", "fancy")
    with caplog.at_level(logging.WARNING, logger="pipeline.progress"):
        assert P.mode() == "lines"
        assert P.mode() == "lines"
    assert [r.getMessage() for r in caplog.records].count(
        "DISTIL_PROGRESS='fancy' is not one of auto, bar, lines, off: using auto") == 1


def test_in_notebook_sees_an_ipython_kernel(monkeypatch):
    assert not P.in_notebook()  # pytest is no kernel
    shell = types.SimpleNamespace(get_ipython=lambda: object())
    monkeypatch.setitem(sys.modules, "IPython", shell)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert P.in_notebook()


def test_lines_log_now_and_then_with_the_count_and_time_left(caplog):
    ticks = iter(range(0, 1000, 25))  # each item takes 25 "seconds"
    lines = P._Lines(range(8), "student epoch 3/60", None, every=60, clock=lambda: float(next(ticks)))
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        assert list(lines) == list(range(8))
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["student epoch 3/60: 3/8 (38%), 75 s, ~125 s left", "student epoch 3/60: 6/8 (75%), 150 s, ~50 s left"]


def test_lines_mode_yields_the_items_and_stops_early(plain):
    plain.setenv("DISTIL_PROGRESS", "lines")
    out = []
    for x in P.progress(iter(range(100)), "loop", total=100):
        out.append(x)
        if x == 4:
            break
    assert out == [0, 1, 2, 3, 4]


def test_only_rank_0_shows_progress(plain, monkeypatch):
    from pipeline import distributed

    plain.setenv("DISTIL_PROGRESS", "bar")
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    it = [1, 2]
    assert P.progress(it, "x") is it
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    assert isinstance(P.progress(it, "x"), auto_tqdm)
