"""A sweep trial's time budget (``trial_seconds``): epochs from the student's measured step time; the best
trial's config keeps a searched list-valued shape."""
import pytest
import torch
import yaml
from optuna.trial import TrialState

from pipeline.cli import main
from pipeline.models import create_student
from pipeline.sweep import Sweep
from pipeline.trial_time import epochs_within, step_seconds

SHAPE = {"channels": [8, 16], "blocks": [1, 1], "kernels": 3, "expand": 1.0, "se": False, "stem": 8}


@pytest.mark.parametrize("seconds,step_s,steps,cap,want", [
    (100.0, 0.5, 20, 50, 10), (100.0, 0.5, 20, 4, 4), (1.0, 0.5, 20, 50, 1), (29.0, 0.1, 10, 50, 29),
    (100.0, 0.0, 20, 7, 7)])
def test_epochs_fill_the_seconds_between_one_and_the_cap(seconds, step_s, steps, cap, want):
    assert epochs_within(seconds, step_s, steps, cap) == want


def test_timing_a_step_leaves_the_student_as_it_was():
    model = create_student("shaped", 3, 16, **SHAPE).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = step_seconds(model, 4, 16)
    assert s > 0 and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.slow
def test_trials_get_the_epochs_their_step_time_buys_and_the_best_config_keeps_the_shape(built, tmp_path, monkeypatch,
                                                                                         capsys):
    # a step costs 1 ms per parameter (deterministic): the wider shape gets fewer epochs in the same seconds
    monkeypatch.setattr("pipeline.trial_time.step_seconds",
                        lambda model, *a, **k: sum(p.numel() for p in model.parameters()) / 1e3)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "objectives": ["val_acc", "train_s"], "pruner": "none", "sampler": "random", "trial_seconds": 6.0,
        "fixed": {"student.epochs": 3, "student.model": "shaped", "student.kwargs": SHAPE},
        "params": {"student.kwargs.channels.1": {"type": "categorical", "choices": [8, 48]}}}))
    code = main(["sweep", "--config", str(built), "--space", str(space), "--trials", "3"])
    assert code == 0, capsys.readouterr().err
    sw = Sweep(str(built), str(space))
    trials = [t for t in sw.study().get_trials() if t.state == TrialState.COMPLETE]
    assert trials
    steps = len(sw.layout.train.labels) // 8
    for t in trials:
        c1 = t.params["student.kwargs.channels.1"]
        n = sum(p.numel() for p in create_student("shaped", sw.num_classes, 16, **{**SHAPE, "channels": [8, c1]})
                .parameters())
        want = epochs_within(6.0, n / 1e3, steps, 3)
        saved = yaml.safe_load((sw.trial_dir(t.number) / "config.yaml").read_text())["student"]
        assert saved["epochs"] == want == t.user_attrs["epochs"] == {8: 3, 48: 2}[c1], (c1, n)
        assert t.values[1] == t.user_attrs["train_s"] >= 0
    capsys.readouterr()
    assert main(["sweep", "--config", str(built), "--space", str(space), "--show"]) == 0
    assert "| epochs | train_s |" in capsys.readouterr().out
    out = tmp_path / "best.yaml"
    assert main(["sweep", "--config", str(built), "--space", str(space), "--best-config", str(out)]) == 0
    best = max(trials, key=lambda t: t.values[0])
    written = yaml.safe_load(out.read_text())["student"]
    assert written["kwargs"]["channels"] == [8, best.params["student.kwargs.channels.1"]]  # the searched shape
    assert written["epochs"] == best.user_attrs["epochs"]


@pytest.mark.parametrize("kwargs,budget", [(SHAPE, 3000), ({"channels": [16, 32, 64], "blocks": [1, 2, 3], "kernels": [3, 5, 5],
                                                       "expand": [1.0, 2.0, 2.0], "se": [False, True, True], "head": 64},
                                                      20_000)])
def test_widest_counted_without_building_agrees_with_building(kwargs, budget):
    from pipeline.models.budget import largest_width, param_count
    from pipeline.models.students import widest

    w, n = widest("shaped", 11, {**kwargs, "width": 0.3}, budget, 32)  # the width given is replaced
    assert n <= budget < param_count(create_student("shaped", 11, 32, **{**kwargs, "width": w + 0.01}), 32).gated
    assert param_count(create_student("shaped", 11, 32, **{**kwargs, "width": w}), 32).gated == n
    assert (w, n) == largest_width(lambda x: create_student("shaped", 11, 32, **{**kwargs, "width": x}), budget, 32)
    assert widest("shaped", 11, kwargs, 10, 32) is None
    with pytest.raises(ValueError, match="no width keyword"):
        widest("tutorial_lightnn", 10, {}, 60_000)


def test_fit_budget_leaves_width_to_the_sweep(tmp_path):
    from pipeline.search_space import SweepError, load_space

    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({"fit_budget": True, "params": {"student.kwargs.width": {
        "type": "float", "low": 0.5, "high": 1.0}}}))
    with pytest.raises(SweepError, match="fit_budget sets student.kwargs.width"):
        load_space(space)


@pytest.mark.slow
def test_fit_budget_scales_every_trial_to_the_budget(built, tmp_path, capsys):
    from pipeline.models import param_count

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "pruner": "none", "sampler": "random", "fit_budget": True,
        "fixed": {"student.epochs": 1, "student.model": "shaped", "student.kwargs": SHAPE, "student.budget": 3000},
        "params": {"student.kwargs.channels.1": {"type": "categorical", "choices": [8, 200]}}}))  # 200: over alone
    code = main(["sweep", "--config", str(built), "--space", str(space), "--trials", "2"])
    assert code == 0, capsys.readouterr().err
    sw = Sweep(str(built), str(space))
    trials = sw.study().get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for t in trials:
        saved = yaml.safe_load((sw.trial_dir(t.number) / "config.yaml").read_text())["student"]
        w = saved["kwargs"]["width"]
        assert f"student.kwargs.width={w}" in t.user_attrs["overrides"]
        assert t.user_attrs["params"] <= 3000
        wider = create_student("shaped", sw.num_classes, 16, **{**saved["kwargs"], "width": w + 0.01})
        assert param_count(wider, 16).gated > 3000  # the largest that fits


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_study_taken_up_again_proposes_new_points(hw13, tmp_path, sampler, monkeypatch):
    # a rerun with more --trials (or a second batch of workers) used to reseed its sampler as the first run had,
    # so its random start-up proposed the first run's points again: the same shapes trained twice
    from tests.conftest import tiny_config

    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path, hw13)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"pruner": "none", "sampler": sampler, "params": {
        "student.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}))
    first = Sweep(str(cfg), str(space)).study()
    asked = []
    for _ in range(3):
        t = first.ask()
        asked.append(t.suggest_float("student.lr", 1e-4, 1e-2, log=True))
        first.tell(t, 0.5)
    again = Sweep(str(cfg), str(space)).study()  # the same study, loaded by a new process
    t = again.ask()
    assert t.suggest_float("student.lr", 1e-4, 1e-2, log=True) not in asked
