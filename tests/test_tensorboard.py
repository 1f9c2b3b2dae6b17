"""TensorBoard event files beside metrics.csv, with the CSV's scalars; one switch (``tensorboard``)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline import tensorboard_events as tb
from pipeline.cli import main
from pipeline.config import ConfigError, load_config


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_student_writes_the_csvs_scalars_as_events(built):
    assert main(["student", "--config", str(built)]) == 0
    out = built.parent / "runs" / "tiny" / "student"
    assert list(out.glob(tb.EVENTS_GLOB)), sorted(p.name for p in out.iterdir())
    rows = _csv(out / "metrics.csv")
    events = _scalars(out)
    columns = [k for k in rows[0] if k != "epoch"]
    assert sorted(events) == sorted(columns) and "val_acc" in columns and "train_kd" in columns
    for row in rows:
        for k in columns:
            assert events[k][int(row["epoch"])] == pytest.approx(float(row[k]), rel=1e-6, abs=1e-7), (k, row)


@pytest.mark.slow
def test_the_switch_turns_them_off(built):
    assert main(["student", "--config", str(built), "tensorboard=false"]) == 0
    out = built.parent / "runs" / "tiny" / "student"
    assert (out / "metrics.csv").is_file() and not list(out.glob(tb.EVENTS_GLOB))


def test_true_without_the_package_is_refused_at_load(built, monkeypatch):
    monkeypatch.setattr(tb, "available", lambda: False)
    with pytest.raises(ConfigError, match="tensorboard.*pip install tensorboard"):
        load_config(str(built), ["tensorboard=true"])
    assert load_config(str(built), []).tensorboard == "auto"  # auto stays valid: it writes none
    assert not tb.wanted("auto")


def test_a_resumed_stage_shows_each_epoch_once_and_a_new_one_starts_clean(tmp_path):
    first = tb.EpochScalars(tmp_path, epochs=3)
    for epoch in (1, 2, 3):
        first({"epoch": epoch, "train_loss": 10.0 + epoch, "val_acc": 0.1 * epoch, "note": "x"})
    resumed = tb.EpochScalars(tmp_path, epochs=3)  # last.pt held epoch 1: epochs 2 and 3 run again
    for epoch in (2, 3):
        resumed({"epoch": epoch, "train_loss": 20.0 + epoch, "val_acc": 0.2 * epoch})
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train_loss")] == [(1, 11.0), (2, 22.0), (3, 23.0)]
    again = tb.EpochScalars(tmp_path, epochs=1)  # --force: the stage starts over
    again({"epoch": 1, "train_loss": 5.0, "val_acc": 0.5})
    assert len(list(tmp_path.glob(tb.EVENTS_GLOB))) == 1
    assert _scalars(tmp_path) == {"train_loss": {1: 5.0}, "val_acc": {1: 0.5}}
