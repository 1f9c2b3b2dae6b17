"""``distil sweep``: Optuna trials are student runs on one cached teacher; workers share one study."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from optuna.trial import TrialState

from pipeline.cli import main
from pipeline.sweep import Sweep
from tests.conftest import tiny_config

SPACE = {
    "objectives": ["val_acc"], "pruner": "median", "sampler": "random",
    "fixed": {"student.epochs": 2},
    "params": {"student.losses.1.kwargs.temperature": {"type": "float", "low": 1.0, "high": 6.0, "log": True},
               "student.kwargs.width": {"type": "categorical", "choices": [0.25, 3.0]}},  # 3.0 is over budget
}


def space_file(tmp_path, **change):
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump({**SPACE, **change}))
    return p


@pytest.mark.parametrize("change,match", [
    ({"params": {"student.epochz": {"type": "int", "low": 1, "high": 2}}}, "student.epochz = 1 does not give a valid config"),
    ({"params": {"teacher.lr": {"type": "float", "low": 0.1, "high": 0.2}}}, "only student.\\* keys can vary"),
    ({"params": {"student.losses.1.kwargs.temperature": {"type": "float", "low": -1.0, "high": 2.0}}}, "temperature"),
    ({"params": {"student.lr": {"type": "float", "low": 2.0}}}, "needs low <= high"),
    ({"pruner": "hyperband"}, "pruner"),
    ({"trial_seconds": 5.0}, "set pruner: none"),  # epochs differ per trial: a pruner would compare unlike epochs
])
def test_a_bad_space_fails_before_any_trial(tmp_path, hw13, capsys, change, match):
    cfg = tiny_config(tmp_path, hw13)
    code = main(["sweep", "--config", str(cfg), "--space", str(space_file(tmp_path, **change)), "--trials", "2"])
    assert code == 2
    assert __import__("re").search(match, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_two_workers_share_one_study_without_losing_or_repeating_trials(built, tmp_path, capsys):
    space = space_file(tmp_path)
    code = main(["sweep", "--config", str(built), "--space", str(space), "--trials", "5", "--workers", "2"])
    assert code == 0, capsys.readouterr().err
    sw = Sweep(str(built), str(space))
    trials = sw.study().get_trials()
    assert len(trials) == 5 and sorted(t.number for t in trials) == list(range(5))
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    for t in trials:
        folder = sw.trial_dir(t.number)
        if t.params["student.kwargs.width"] == 3.0:  # over budget: pruned with the reason, never trained
            assert t.state == TrialState.PRUNED and "over the budget" in t.user_attrs["pruned_reason"]
            assert not (folder / "last.pt").exists()
        elif t.state == TrialState.COMPLETE:
            done = json.loads((folder / "done.json").read_text())
            assert done["val_acc"] == t.values[0] and (folder / "student.safetensors").is_file()
            assert yaml.safe_load((folder / "config.yaml").read_text())["student"]["losses"][1]["kwargs"][
                "temperature"] == pytest.approx(t.params["student.losses.1.kwargs.temperature"])
    assert any(t.state == TrialState.COMPLETE for t in trials)
    capsys.readouterr()
    assert main(["sweep", "--config", str(built), "--space", str(space), "--show"]) == 0
    assert "| trial | state | val_acc |" in capsys.readouterr().out
    out = tmp_path / "best.yaml"
    assert main(["sweep", "--config", str(built), "--space", str(space), "--best-config", str(out)]) == 0
    assert main(["submit", "--config", str(out)]) == 0, capsys.readouterr().err  # the best trial's student
    # the run report gets a sweep section
    assert main(["student", "--config", str(built), "student.epochs=1"]) == 0
    assert main(["report", "--config", str(built)]) == 0, capsys.readouterr().err
    text = (tmp_path / "runs" / "tiny" / "report.html").read_text()
    assert "<h2>Sweeps</h2>" in text and "Study <code>space</code> (5 trials)" in text and "over the budget" in text
    assert (tmp_path / "runs" / "tiny" / "report" / "sweep_space.png").is_file()


@pytest.mark.slow
def test_a_killed_worker_leaves_its_trial_marked_failed(built, tmp_path, capsys):
    space = space_file(tmp_path, fixed={"student.epochs": 500},
                       params={"student.lr": {"type": "float", "low": 1e-3, "high": 2e-3}})
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--config", str(built), "--space", str(space), "--trials", "1",
           "--worker"]
    sw = Sweep(str(built), str(space))
    sw.study()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = sw.trial_dir(0) / "metrics.csv"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert metrics.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    study = sw.study()
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]  # what the dead worker left
    assert sw.fail_dead_trials(study, min_age_s=0) == [0]
    t = study.get_trials()[0]
    assert t.state == TrialState.FAIL and "worker died" in t.user_attrs["failed_reason"]
    assert (sw.trial_dir(0) / "last.pt").is_file()  # its run can be resumed by hand


def test_pareto_front_keeps_the_points_nothing_beats():
    from pipeline.report import pareto_front

    assert pareto_front([(10, 0.5), (5, 0.6), (20, 0.7), (6, 0.55)]) == [1, 2]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]  # ties beat nobody


def test_workers_get_different_sampler_seeds(built, tmp_path, monkeypatch):
    sw = Sweep(str(built), str(space_file(tmp_path)))
    monkeypatch.setenv("DISTIL_SWEEP_WORKER", "0")
    a = sw.study().sampler._rng.rng.random()
    monkeypatch.setenv("DISTIL_SWEEP_WORKER", "1")
    b = sw.study().sampler._rng.rng.random()
    monkeypatch.setenv("DISTIL_SWEEP_WORKER", "0")
    assert a != b and sw.study().sampler._rng.rng.random() == a


@pytest.mark.slow
def test_racing_workers_start_exactly_the_trials_asked_for(built, tmp_path):
    """Every trial over budget is pruned at once, so three workers ask for trials as fast as they can: the study
    still ends with exactly --trials trials (Optuna's MaxTrialsCallback let each worker start one more)."""
    space = space_file(tmp_path, params={"student.kwargs.width": {"type": "categorical", "choices": [3.0]},
                                         "student.lr": {"type": "float", "low": 1e-3, "high": 2e-3}})
    assert main(["sweep", "--config", str(built), "--space", str(space), "--trials", "9", "--workers", "3"]) == 0
    trials = Sweep(str(built), str(space)).study().get_trials()
    assert sorted(t.number for t in trials) == list(range(9))
    assert all(t.state == TrialState.PRUNED and "over the budget" in t.user_attrs["pruned_reason"] for t in trials)


def test_a_trial_told_after_the_dead_worker_scan_listed_it_is_left_alone(tmp_path, hw13):
    # the scan lists RUNNING trials, then takes each one's lock; a worker that told its trial and released the
    # lock in between must not have its finished trial marked failed (optuna raised UpdateFinishedTrialError)
    import copy

    sw = Sweep(str(tiny_config(tmp_path, hw13)), str(space_file(tmp_path)))
    study = sw.study()
    trial = study.ask()
    stale = copy.deepcopy(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    study.tell(trial, 0.5)

    class Listed:  # the study as the scan saw it a moment earlier
        _storage = study._storage

        def get_trials(self, deepcopy=False, states=None):
            return stale

    assert sw.fail_dead_trials(Listed(), min_age_s=0.0) == []
    assert study.get_trials()[0].state == TrialState.COMPLETE
