"""All stages, end to end, on generated images through the CLI entry point."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data import open_data, pixels
from pipeline.data.datasets import Normalize
from pipeline.data.views import render_view
from pipeline.models import load_student
from tests.conftest import tiny_config


@pytest.mark.slow
def test_teacher_cache_student_submit(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13)
    for stage in ("teacher", "cache", "student", "submit"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    sub = pd.read_csv(tmp_path / "subs" / "tiny.csv", dtype=str)
    assert list(sub.columns) == ["Id", "Category"]
    assert sub["Id"].tolist() == [f"{i:04d}" for i in range(6)]
    assert set(sub["Category"]) <= {"0", "1", "2"}
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    run_cfg = load_config(cfg)
    layout = open_data(run_cfg)
    val = pixels(run_cfg, layout, "val")
    labels = np.asarray(val.split.labels)
    # the teacher's accuracy is its saved weights' on the validation images (the cache's val_logits, recomputed here)
    t_logits = np.load(tmp_path / "runs" / "tiny" / "cache" / "val_logits.npy")
    assert s["teacher"]["name"] == "test_efficientnet"
    assert s["teacher"]["val_acc"] == pytest.approx(float((t_logits.argmax(1) == labels).mean()))
    assert s["student"]["params"] < 60_000
    assert s["submission"].endswith("tiny.csv")
    # submit measures its own inference on the validation split: the best checkpoint's accuracy again
    assert s["submit"]["tta"] is False and s["submit"]["val_acc"] == round(s["student"]["val_acc"], 4)
    assert main(["submit", "--config", str(cfg), "submit.tta=true"]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    # TTA's accuracy, by hand: the mean logits of each whole validation image and its mirror
    model, meta = load_student(tmp_path / "runs" / "tiny" / "student", 60_000)
    size = meta["img_size"]
    x = np.stack([render_view(np.asarray(img), np.array([0, 0, img.shape[0], img.shape[0], 0], np.int32), size)
                  for img in val.pixels])
    xt = Normalize(meta["mean"], meta["std"])(torch.from_numpy(x))
    with torch.inference_mode():
        tta = (model.eval()(xt) + model(xt.flip(-1))) / 2
    assert s["submit"]["tta"] is True
    assert s["submit"]["val_acc"] == pytest.approx(round(float((tta.argmax(1).numpy() == labels).mean()), 4))
    assert pd.read_csv(tmp_path / "subs" / "tiny.csv", dtype=str)["Id"].tolist() == sub["Id"].tolist()
    for stage in ("teacher", "cache", "student"):
        assert (tmp_path / "runs" / "tiny" / stage / "config.yaml").is_file()
    # a finished stage run again (the cache: reused, not rebuilt) does no work and keeps the record of what it cost
    for stage, kept in (("cache", "views"), ("teacher", "val_acc"), ("student", "val_acc")):
        before = json.loads((tmp_path / "runs" / "tiny" / stage / "done.json").read_text())
        assert main([stage, "--config", str(cfg)]) == 0
        assert '"reused": true' in capsys.readouterr().out
        after = json.loads((tmp_path / "runs" / "tiny" / stage / "done.json").read_text())
        assert after["wall_s"] == before["wall_s"] and after["reused"] is True
        assert after[kept] == before[kept]


@pytest.mark.slow
def test_feature_losses_and_online_teacher_run(tmp_path, hw13, capsys):
    losses = [{"name": "ce"}, {"name": "kd"}, {"name": "cosine"}, {"name": "fitnet"}, {"name": "rkd"},
              {"name": "dm"}, {"name": "at"}, {"name": "dkd"}, {"name": "dist", "kwargs": {"standardize": True}}]
    cfg = tiny_config(tmp_path, hw13, cache={"feature_layer": 3}, student={"losses": losses, "epochs": 1})
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    man = json.loads((tmp_path / "runs" / "tiny" / "cache" / "manifest.json").read_text())
    assert man["contents"]["stored"] == ["feat", "logits", "map@3"]
    metrics = (tmp_path / "runs" / "tiny" / "student" / "metrics.csv").read_text()
    for name in ("train_cosine", "train_fitnet", "train_rkd", "train_dm", "train_at", "train_dkd", "train_dist"):
        assert name in metrics
    assert main(["student", "--config", str(cfg), "student.teacher_mode=online", "student.resume=never"]) == 0
    assert '"teacher_mode": "online"' in capsys.readouterr().out
    assert main(["student", "--config", str(cfg), "student.teacher_mode=online", "runs_dir=" + str(tmp_path / "r2")]) != 0
    # online mode with its own run dir needs a teacher there: the error says how to get one
    assert "teacher" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_fitnet_hint_at_another_layer_is_one_more_term(tmp_path, hw13, capsys):
    """Two hints are two terms, each with its layer: the cache holds both maps, the student trains both, each with
    its own regressor from its own student stage, and the online teacher gives the same two."""
    losses = [{"name": "ce"}, {"name": "fitnet", "layer": 2, "student_layer": -3}, {"name": "fitnet", "layer": 3}]
    cfg = tiny_config(tmp_path, hw13, student={"losses": losses, "epochs": 1})
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "tiny"
    man = json.loads((run / "cache" / "manifest.json").read_text())
    assert man["contents"]["stored"] == ["logits", "map@2", "map@3"]
    assert man["shapes"]["map@2"][2] != man["shapes"]["map@3"][2]  # two layers: two channel counts
    header = (run / "student" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_fitnet" in header and "train_fitnet_2" in header
    assert main(["student", "--config", str(cfg), "student.teacher_mode=online", "student.resume=never"]) == 0


def test_ce_only_baseline_needs_no_cache(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
    assert main(["student", "--config", str(cfg)]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert s["student"]["teacher_mode"] == "none"


@pytest.mark.slow
def test_submit_refuses_an_over_budget_checkpoint_made_elsewhere(tmp_path, hw13, capsys):
    """A checkpoint trained with a larger budget (or edited by hand) is gated again at submit."""
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1, "kwargs": {"width": 1.5}, "budget": 200_000})
    assert main(["student", "--config", str(cfg)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["submit", "--config", str(cfg), "student.budget=60000"]) == 2
    assert "over the budget of 60,000" in capsys.readouterr().err
    assert not (tmp_path / "subs" / "tiny.csv").exists()


def test_training_refuses_over_budget_before_any_work(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "kwargs": {"width": 2.0}})
    assert main(["student", "--config", str(cfg)]) == 2
    assert "over the budget" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny" / "student" / "last.pt").exists()


def test_config_typo_fails_before_training(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13)
    assert main(["teacher", "--config", str(cfg), "teacher.epochz=3"]) == 2
    assert "teacher.epochz" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_recipe_can_share_another_runs_teacher(tmp_path, built, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: tiny.yaml\nteacher_from: tiny\nstudent: {epochs: 1}\n")
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", str(recipe)]) == 0, capsys.readouterr().err
    assert not (tmp_path / "runs" / "recipe" / "teacher" / "teacher.safetensors").exists()
    assert (tmp_path / "runs" / "recipe" / "cache" / "manifest.json").is_file()
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("base: tiny.yaml\nteacher_from: nobody\n")
    assert main(["teacher", "--config", str(orphan)]) == 2
    assert "make teacher CONFIG=configs/nobody.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_prints_a_table_of_runs(tmp_path, built, capsys):
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", str(built), "student.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "runs" / "tiny"), str(tmp_path / "nothing")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | teacher | teacher acc | student | params")
    assert out[2].startswith("| tiny | test_efficientnet | ") and "| dwsep |" in out[2]
    assert "(no summary.json)" in out[3]
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    for stage in ("teacher", "student"):  # every validation accuracy carries its 95% interval
        s = summary[stage]
        assert s["val_images"] == 9 and s["val_acc_ci95"][0] <= s["val_acc"] <= s["val_acc_ci95"][1], s
        assert s["val_acc_ci95"][1] - s["val_acc_ci95"][0] > 0.2  # 9 images: a wide interval
    lo, hi = summary["student"]["val_acc_ci95"]
    assert f"| [{lo:.4f}, {hi:.4f}] | best |" in out[2]


def test_submit_without_evaluation_folder_says_nothing_to_submit_and_how_to_predict(tmp_path, hw13, capsys):
    import shutil

    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
    assert main(["student", "--config", str(cfg)]) == 0
    shutil.rmtree(hw13 / "evaluation")
    capsys.readouterr()
    # nothing to submit is how a run on one's own photos ends (issue 24): exit 0, saying why and how to predict
    assert main(["submit", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "no evaluation/ (or test/) folder" in out and "nothing to submit" in out and "predict IMAGES_OR_FOLDER" in out


@pytest.mark.slow
def test_a_label_only_loss_needs_no_teacher_and_kd_false_keeps_it(tmp_path, hw13, capsys):
    """Whether a teacher is needed is read off the losses' signatures: focal reads only labels."""
    from pipeline.config import load_config

    cfg = tiny_config(tmp_path, hw13, student={"epochs": 1, "losses": [{"name": "focal", "kwargs": {"gamma": 1.0}}]})
    assert main(["student", "--config", str(cfg)]) == 0, capsys.readouterr().err  # no teacher, no cache
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert s["student"]["teacher_mode"] == "none" and s["student"]["losses"][0]["name"] == "focal"
    mixed = load_config(cfg, ["student.kd=false",
                              "student.losses=[{name: focal, weight: 0.5}, {name: kd}, {name: ce, weight: 0.2}]"])
    assert [(t.name, t.weight) for t in mixed.student.effective_losses()] == [("focal", 0.5), ("ce", 0.2)]
    only_kd = load_config(cfg, ["student.kd=false", "student.losses=[{name: kd}]"])
    assert [(t.name, t.weight) for t in only_kd.student.effective_losses()] == [("ce", 1.0)]
