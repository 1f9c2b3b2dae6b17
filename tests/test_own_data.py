"""``distil predict`` beyond its smoke test (tests/test_own_images.py): the CSV holds the deployable student's own
probabilities (decoded, resized and normalised as the run's images), ``--out``, ONNX gives the same answers, and
bad input is one line; the validation split made for a folder without one does not follow the run's seed."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from conftest import tiny_config
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data.sets import open_data
from test_own_images import make_photos


def test_the_made_split_is_the_same_for_every_run_seed(tmp_path):
    root = make_photos(tmp_path / "p", counts=(20, 10, 2))
    cfg = tiny_config(tmp_path, root)
    a, b = (open_data(load_config(cfg, [f"seed={s}"])) for s in (1, 7))
    assert a.val.files == b.val.files and np.bincount(a.val.labels, minlength=3).tolist() == [2, 1, 1]
    assert not set(a.val.files) & set(a.train.files) and len(a.val) + len(a.train) == 32


@pytest.mark.slow
def test_predict_csv_is_the_students_probabilities_in_every_format(built, tmp_path, capsys, monkeypatch):
    from pipeline.deployment import DeployedStudent

    assert main(["student", "--config", str(built)]) == 0
    monkeypatch.chdir(tmp_path)
    student = tmp_path / "runs" / "tiny" / "student"
    files = sorted((tmp_path / "data" / "evaluation").glob("*.jpg"))
    capsys.readouterr()
    assert main(["predict", "data/evaluation", "data/training/0_0.jpg", "--config", str(built), "--topk", "3"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["file"] for r in rows] == [f"data/evaluation/{f.name}" for f in files] + ["data/training/0_0.jpg"]
    probs = DeployedStudent(student).probabilities(files)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for r, p in zip(rows, probs):
        order = np.argsort(-p, kind="stable")
        assert [r["class"], r["class_2"], r["class_3"]] == [str(i) for i in order]
        assert [float(r[k]) for k in ("probability", "probability_2", "probability_3")] == pytest.approx(
            p[order].tolist(), abs=6e-5)
    # --out writes the same CSV to a file (atomically) and prints where
    assert main(["predict", "data/evaluation", "--student", str(student), "--out", "pred.csv"]) == 0
    assert (tmp_path / "pred.csv").read_text().count("\n") == len(files) + 1
    pytest.importorskip("onnxruntime")
    assert main(["export", "--config", str(built)]) == 0
    capsys.readouterr()
    assert main(["predict", "data/evaluation", "--config", str(built), "--format", "onnx"]) == 0
    onnx_rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["class"] for r in onnx_rows] == [r["class"] for r in rows[:len(files)]]
    np.testing.assert_allclose([float(r["probability"]) for r in onnx_rows], probs.max(1), atol=2e-4)


def test_predict_bad_input_is_one_line(built, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nostudent").mkdir()
    (tmp_path / "noimages").mkdir()
    for args, match in [(["data/evaluation", "--student", "nostudent"], "nostudent"),
                        (["data/evaluation", "--config", "nope.yaml"], "nope.yaml"),
                        (["data/evaluation", "--config", str(built)], "student"),  # not trained yet
                        (["nope.jpg", "--student", "nostudent"], "nostudent")]:
        assert main(["predict", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_the_student_before_the_teacher_says_to_train_the_teacher(tmp_path, capsys, mode):
    cfg = tiny_config(tmp_path, make_photos(tmp_path / "photos", counts=(4, 4)), student={"teacher_mode": mode})
    assert main(["student", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    # one line naming the teacher and the command that makes it (the provenance check, or open_teacher's own)
    assert err.startswith("error: ") and "teacher" in err and "--config" in err and len(err.splitlines()) == 1, err
    assert "Errno" not in err
