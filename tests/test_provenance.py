"""Provenance (pipeline/provenance.py): a stage reads an upstream stage only when it is finished, not being written,
whole and current; otherwise one line names the stage and the command that rebuilds from there down.
Each test is one of the holes of issue 27 (each exited 0 on the code before it)."""
import json
import shlex

import pytest
from filelock import FileLock
from safetensors.torch import load_file, save_file

from pipeline.cli import main


def run(cfg, *args):
    return main([args[0], "--config", str(cfg), *args[1:]])


def relabel(cfg):
    data = cfg.parent / "data" / "training"
    (data / "0_0.jpg").rename(data / "1_99.jpg")


def rebuild_argv(err: str) -> list[str]:
    words = shlex.split(err.split("rebuild from there down with:")[1].strip().splitlines()[0])
    for prog in ("distil", "pipeline"):
        if prog in words:
            return words[words.index(prog) + 1:]
    return words[1:]


def retouch(path):
    """Another model in ``path`` (same format, other weights): what a later run's epoch wrote."""
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = tensors[name] + 1.0
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.slow
def test_cache_refuses_a_teacher_trained_on_old_labels_and_the_hint_rebuilds(built, capsys):
    """Hole 1: relabelled data, then ``cache``: it rebuilt from the teacher of the old labels, exit 0."""
    relabel(built)
    capsys.readouterr()
    assert run(built, "cache") == 2
    err = capsys.readouterr().err
    assert "tiny/teacher is stale: its train images changed" in err and "all --from teacher" in err
    assert len(err.strip().splitlines()) == 1
    assert main(rebuild_argv(err)) == 0  # teacher, cache, student and submit again, on the new labels
    capsys.readouterr()
    assert run(built, "submit") == 0


@pytest.mark.slow
def test_submit_refuses_a_student_of_old_labels(built, capsys):
    """Hole 2: relabelled data, then ``submit``: a CSV from the student of the old labels, exit 0."""
    assert run(built, "student") == 0
    relabel(built)
    capsys.readouterr()
    assert run(built, "submit") == 2
    err = capsys.readouterr().err
    assert "is stale: its train images changed" in err and "all --from teacher" in err
    assert not (built.parent / "subs" / "tiny.csv").exists()


def test_cache_refuses_an_unfinished_teacher(built, capsys):
    """Hole 3: a teacher stopped before its done.json fed the cache, exit 0."""
    (built.parent / "runs" / "tiny" / "teacher" / "done.json").unlink()
    assert run(built, "cache") == 2
    err = capsys.readouterr().err
    assert "tiny/teacher is unfinished (no done.json" in err and "all --from teacher" in err


@pytest.mark.slow
def test_submit_refuses_a_student_being_trained(built, capsys):
    """Hole 4: ``submit`` while ``student --force`` trains the same folder took the epoch-1 student, exit 0."""
    assert run(built, "student") == 0
    capsys.readouterr()
    lock = FileLock(str(built.parent / "runs" / "tiny" / "student" / ".lock"))
    with lock.acquire(timeout=0):  # another process's lock (a new descriptor conflicts as another process would)
        assert run(built, "submit") == 2
    assert "tiny/student is being written now" in capsys.readouterr().err
    assert run(built, "submit") == 0


@pytest.mark.slow
@pytest.mark.parametrize("stage,reader", [("teacher", "cache"), ("student", "submit")])
def test_a_model_file_that_is_not_the_recorded_one_is_refused(built, capsys, stage, reader):
    """Hole 5: a run that wrote the new model file but died before its record: the stage itself said "reused"
    and the next stage read the torn pair."""
    if stage == "student":
        assert run(built, "student") == 0
    retouch(built.parent / "runs" / "tiny" / stage / f"{stage}.safetensors")
    capsys.readouterr()
    assert run(built, reader) == 2
    err = capsys.readouterr().err
    assert f"tiny/{stage} its {stage}.safetensors is not the one its done.json records" in err
    assert f"run the {stage} stage:" in err and f"{stage} --config" in err
    assert run(built, stage) == 2  # not "reused"
    err = capsys.readouterr().err
    assert "not the one its done.json records" in err and f"{stage} --config" in err and "--force" in err
    assert run(built, stage, "--force") == 0
    assert run(built, reader) == 0


@pytest.mark.slow
def test_student_refuses_a_cache_rebuilt_after_it(built, capsys):
    """A student is stale once the cache it was distilled from is rebuilt."""
    assert run(built, "student") == 0
    assert run(built, "cache", "cache.views=3") == 0  # other content (the same content would be the same cache)
    capsys.readouterr()
    assert run(built, "submit") == 2
    err = capsys.readouterr().err
    assert "tiny/student is stale: it was built from a tiny/cache that has been rebuilt" in err
    assert "all --from student" in err


@pytest.mark.slow
def test_export_is_dropped_when_the_student_retrains(built, capsys):
    """Hole 8: ``export`` then retrain: student.onnx and export.json (claiming parity) stayed beside new weights."""
    pytest.importorskip("onnxruntime")
    assert run(built, "student") == 0
    assert run(built, "export") == 0
    folder = built.parent / "runs" / "tiny" / "student"
    rec = json.loads((folder / "export.json").read_text())
    from pipeline.atomic import sha256_file

    assert rec["student_sha256"] == sha256_file(folder / "student.safetensors")
    assert run(built, "student", "--force") == 0
    assert not (folder / "export.json").exists() and not (folder / "student.onnx").exists()


def test_done_json_names_what_it_was_built_from(built):
    assert run(built, "student") == 0
    runs = built.parent / "runs"
    teacher = json.loads((runs / "tiny" / "teacher" / "done.json").read_text())["provenance"]
    cache = json.loads((runs / "tiny" / "cache" / "done.json").read_text())["provenance"]
    student = json.loads((runs / "tiny" / "student" / "done.json").read_text())["provenance"]
    assert teacher["stage"] == "teacher" and set(teacher["inputs"]) == {"train images", "validation images"}
    assert list(cache["upstream"]) == ["tiny/teacher"] and list(student["upstream"]) == ["tiny/cache"]
    assert "provenance" not in json.loads((runs / "tiny" / "summary.json").read_text())["student"]


@pytest.mark.parametrize("override,key", [("student.dir=teacher", "student.dir"), ("student.dir=cache/x", "student.dir"),
                                          ("teacher_from=..", "teacher_from"), ("cache.ensemble=[..]", "cache.ensemble")])
def test_stage_folders_cannot_collide_or_leave_runs(tmp_path, hw13, capsys, override, key):
    """Hole 7: ``student.dir=teacher --force`` overwrote the teacher's last.pt, done.json, config.yaml, metrics.csv;
    ``teacher_from: ..`` read a teacher outside runs/."""
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, hw13)
    assert run(cfg, "student", "--force", override) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
