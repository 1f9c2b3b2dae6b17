"""Issue 27, round three: the rows the first two rounds left open. Each failed on the code before its fix
(a traceback, an error only after training, a silent loss, or a torn pair after a failed retrain)."""
import builtins
import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import tiny_config


from tests.test_weak_rows import one_line_error, run  # the same one-line checks as round two


# ---- (a) a config file name that is not a run name -----------------------------------------------------------

def test_a_file_name_that_is_not_a_run_name_says_where_the_name_comes_from(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13)
    spaced = cfg.rename(cfg.with_name("my run.yaml"))
    assert run(spaced, "teacher") == 2
    line = one_line_error(capsys)
    assert "my run.yaml" in line and "file name" in line and "rename the file" in line and "name:" in line
    text = yaml.safe_load(spaced.read_text())
    spaced.write_text(yaml.safe_dump({**text, "name": "my-run"}))  # the fix it gives works
    from pipeline.config import load_config

    assert load_config(spaced).name == "my-run"


# ---- (b) the evaluation folder is checked before training ------------------------------------------------------

def _no_evaluation(hw13):
    shutil.rmtree(hw13 / "evaluation")


def _bad_evaluation_image(hw13):
    (hw13 / "evaluation" / "0003.jpg").write_bytes(b"<html>not found</html>")


def _sample_lists_more(hw13):
    with open(hw13 / "sample_submission.csv", "a") as fh:
        fh.write("0099,0\n")


@pytest.mark.parametrize("damage,what", [(_no_evaluation, "no evaluation/"), (_bad_evaluation_image, "0003.jpg"),
                                         (_sample_lists_more, "0099")])
@pytest.mark.parametrize("stage", ["teacher", "student"])
def test_the_evaluation_folder_is_checked_before_training(tmp_path, hw13, capsys, damage, what, stage):
    damage(hw13)
    cfg = tiny_config(tmp_path, hw13, student={"kd": False})
    assert run(cfg, stage) == 2
    line = one_line_error(capsys)
    assert what in line and "evaluation" in line
    assert not (tmp_path / "runs" / "tiny" / stage / "last.pt").exists()


@pytest.mark.slow
def test_without_a_sample_nor_evaluation_the_run_trains(tmp_path, hw13):
    """Own photos (no sample submission, no evaluation/): nothing to submit, nothing refused."""
    _no_evaluation(hw13)
    (hw13 / "sample_submission.csv").unlink()
    cfg = tiny_config(tmp_path, hw13, teacher={"epochs": 1})
    assert run(cfg, "teacher") == 0


# ---- (c) a read-only runs folder ------------------------------------------------------------------------------

@contextmanager
def read_only(root: Path, code: int):
    """Every write under ``root`` fails with ``code`` (EROFS: a read-only mount; EACCES: no permission), as it
    would for a user who may only read it (simulated: the tests may run as root, whom chmod does not stop)."""
    root_s = str(Path(root).resolve())
    real_open, real_mkdir, real_bopen = os.open, os.mkdir, builtins.open
    real_replace, real_unlink = os.replace, os.unlink

    def inside(p) -> bool:
        try:
            return os.path.abspath(os.fspath(p)).startswith(root_s)
        except TypeError:
            return False

    def deny(p):
        raise (PermissionError if code == errno.EACCES else OSError)(code, os.strerror(code), os.fspath(p))

    def os_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            deny(path)
        return real_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        if inside(path):
            if os.path.exists(path):
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
            deny(path)
        return real_mkdir(path, *a, **k)

    def bopen(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            deny(file)
        return real_bopen(file, mode, *a, **k)

    def replace(src, dst, *a, **k):
        if inside(dst) or inside(src):
            deny(dst)
        return real_replace(src, dst, *a, **k)

    def unlink(path, *a, **k):
        if inside(path):
            deny(path)
        return real_unlink(path, *a, **k)

    mp = pytest.MonkeyPatch()
    for obj, name, fn in ((os, "open", os_open), (os, "mkdir", mkdir), (builtins, "open", bopen),
                          (os, "replace", replace), (os, "unlink", unlink), (os, "remove", unlink)):
        mp.setattr(obj, name, fn)
    try:
        yield
    finally:
        mp.undo()


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_runs_folder_is_one_line_for_a_writer(built, capsys, code):
    runs = built.parent / "runs"
    with read_only(runs, code):
        assert run(built, "teacher", "--force") == 2
    line = one_line_error(capsys)
    assert "tiny/teacher" in line and "not writable" in line and "runs_dir" in line


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_submit_reads_a_read_only_runs_folder(built, capsys, caplog, code):
    assert run(built, "student") == 0
    assert run(built, "submit") == 0
    csv = built.parent / "subs" / "tiny.csv"
    before = csv.read_text()
    csv.unlink()
    for p in (built.parent / "runs" / "_pixels").glob("*/test.*"):  # not decoded yet: decoded in memory, not cached
        p.unlink()
    capsys.readouterr()
    with read_only(built.parent / "runs", code):
        assert run(built, "submit") == 0, capsys.readouterr().err
    assert csv.read_text() == before
    assert "Traceback" not in capsys.readouterr().err
    assert "decoding the 6 test images in memory" in caplog.text and "summary.json" in caplog.text


def test_a_reader_probe_needs_no_write_access(built):
    """The probe for a writer opens the lock read-only: it works in a read-only folder and still sees a writer."""
    from filelock import FileLock

    from pipeline.provenance import being_written

    folder = built.parent / "runs" / "tiny" / "teacher"
    (folder / ".lock").touch()
    with read_only(built.parent / "runs", errno.EROFS):
        assert not being_written(folder)
    with FileLock(str(folder / ".lock")).acquire(timeout=0):
        with read_only(built.parent / "runs", errno.EROFS):
            assert being_written(folder)


# ---- (d) export: its lock and its temps ------------------------------------------------------------------------

@pytest.mark.slow
def test_export_holds_the_student_lock_and_cleans_what_a_killed_export_left(built, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    import pipeline.stages.export as export_stage
    from pipeline.provenance import being_written

    assert run(built, "student") == 0
    folder = built.parent / "runs" / "tiny" / "student"
    left = [folder / ".student.onnx.k1ll3d.tmp", folder / ".export.json.k1ll3d.tmp", folder / "student.int8.tmp.onnx",
            folder / ".student.int8.onnx.k1ll3d.tmp"]
    for p in left:
        p.write_bytes(b"\0" * 64)
    seen = []
    real = export_stage.export_onnx

    def export_onnx(*a, **k):
        seen.append(being_written(folder))  # another descriptor's probe: the export's own lock is held
        return real(*a, **k)

    monkeypatch.setattr(export_stage, "export_onnx", export_onnx)
    assert run(built, "export") == 0
    assert seen == [True]
    assert not [p for p in left if p.exists()]
    assert not list(folder.glob("*.tmp*")) and not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_export_checks_the_student_again_under_its_lock(built, capsys, monkeypatch):
    """A retrain that starts between export's first checks and its lock (here: its record gone, as a student
    stopped before finishing leaves it) is seen under the lock: nothing is exported from it."""
    import pipeline.rundir as rundir

    assert run(built, "student") == 0
    folder = built.parent / "runs" / "tiny" / "student"
    real = rundir.RunDir.stage

    def stage(self, name, *a, **k):
        if name == "student":
            (folder / "done.json").unlink(missing_ok=True)
        return real(self, name, *a, **k)

    monkeypatch.setattr(rundir.RunDir, "stage", stage)
    capsys.readouterr()
    assert run(built, "export") == 2
    assert "tiny/student is unfinished" in one_line_error(capsys)
    assert not (folder / "student.onnx").exists()


# ---- (e) tampered safetensors ---------------------------------------------------------------------------------

def tamper_dtype(path: Path) -> str:
    """Rewrite the header of ``path``: the first 1-D float32 tensor is declared int32 (same bytes, same shape:
    the file still parses, and loading used to cast it silently)."""
    import struct

    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32" and len(v["shape"]) == 1)
    header[name]["dtype"] = "I32"
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return name


def test_a_tampered_teacher_in_a_run_is_refused_naming_the_file(built, capsys):
    folder = built.parent / "runs" / "tiny" / "teacher"
    name = tamper_dtype(folder / "teacher.safetensors")
    rec = json.loads((folder / "done.json").read_text())  # its record agrees: only the file's header is bad
    rec.pop("provenance", None)
    (folder / "done.json").write_text(json.dumps(rec))
    assert run(built, "cache", "--force") == 2
    line = one_line_error(capsys)
    assert "teacher.safetensors" in line and name in line and "int32" in line


@pytest.mark.parametrize("source", ["finetuned", "file"])
def test_a_tampered_teacher_weights_file_is_refused_naming_the_file(tmp_path, hw13, capsys, source):
    from safetensors.torch import save_file

    from pipeline.models.teacher import build_model

    weights = tmp_path / "mine.safetensors"
    model = build_model("test_efficientnet", 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    name = tamper_dtype(weights)
    cfg = tiny_config(tmp_path, hw13, teacher={"pretrained": source, "weights": str(weights), "epochs": 1})
    assert run(cfg, "teacher") == 2
    line = one_line_error(capsys)
    assert "mine.safetensors" in line and name in line and "int32" in line


# ---- (f) skip_bad: every image bad, a whole class bad ----------------------------------------------------------

def _spoil(files):
    for f in files:
        f.write_bytes(b"\xff\xd8\xff garbage")


def test_skip_bad_with_every_image_bad_is_one_line(tmp_path, hw13, capsys):
    _spoil((hw13 / "training").glob("*.jpg"))
    cfg = tiny_config(tmp_path, hw13, data={"skip_bad": True})
    assert run(cfg, "teacher") == 2
    line = one_line_error(capsys)
    assert "every" in line and "training" in line and "skip_bad" in line


def test_skip_bad_with_a_whole_class_bad_names_the_class(tmp_path, hw13, capsys):
    _spoil((hw13 / "training").glob("1_*.jpg"))
    cfg = tiny_config(tmp_path, hw13, data={"skip_bad": True})
    assert run(cfg, "teacher") == 2
    line = one_line_error(capsys)
    assert "class 1" in line and "skip_bad" in line and "1_0.jpg" in line
    assert not (tmp_path / "runs" / "tiny" / "teacher" / "last.pt").exists()


# ---- (g) limit_per_split too small to keep every class ---------------------------------------------------------

@pytest.mark.parametrize("limit", [1, 2])
def test_a_limit_that_drops_a_class_is_refused(tmp_path, hw13, capsys, limit):
    cfg = tiny_config(tmp_path, hw13, data={"limit_per_split": limit})
    assert run(cfg, "teacher") == 2
    line = one_line_error(capsys)
    assert f"data.limit_per_split={limit}" in line and "class" in line and "at least" in line


def test_a_limit_that_keeps_every_class_trains(tmp_path, hw13):
    cfg = tiny_config(tmp_path, hw13, data={"limit_per_split": 6}, teacher={"epochs": 1})
    assert run(cfg, "teacher") == 0


# ---- (h) model kwargs typos fail at load -----------------------------------------------------------------------

def test_a_teacher_kwargs_typo_fails_at_load_naming_the_key(tmp_path, hw13, capsys):
    from pipeline.config import ConfigError, load_config

    cfg = tiny_config(tmp_path, hw13, teacher={"kwargs": {"drop_rate_typo": 0.1}})
    with pytest.raises(ConfigError, match=r"teacher\.kwargs.*drop_rate_typo"):
        load_config(cfg)
    assert run(cfg, "student") == 2  # any stage: refused before anything is trained
    err = capsys.readouterr().err
    assert "teacher.kwargs: 'test_efficientnet' takes no argument 'drop_rate_typo'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_teacher_kwargs_that_the_model_takes_still_load(tmp_path, hw13):
    from pipeline.config import load_config

    assert load_config(tiny_config(tmp_path, hw13, teacher={"kwargs": {"drop_path_rate": 0.1}})).teacher.kwargs


# ---- (i) write both, then switch -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("stage,reader", [("teacher", "cache"), ("student", "submit")])
def test_a_retrain_that_fails_leaves_the_old_pair_whole_and_usable(built, capsys, monkeypatch, stage, reader):
    """Hole 5 done properly: a retrain (``--force``) that fails mid-way (a full disk at its second epoch's
    checkpoint) leaves the finished run's model and record as they were, and the next stage takes them."""
    import pipeline.checkpoint as checkpoint
    from pipeline.atomic import write_with

    if stage == "student":
        assert run(built, "student") == 0
    folder = built.parent / "runs" / "tiny" / stage
    # the model, its record, and the config and metrics that describe it
    pair = {p: p.read_bytes() for p in (folder / f"{stage}.safetensors", folder / f"{stage}.json", folder / "done.json",
                                        folder / "config.yaml", folder / "metrics.csv")}
    calls = []
    real = checkpoint.save_torch

    def save_torch(path, obj):
        calls.append(path)
        if len(calls) == 2:
            def full(tmp):
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
            return write_with(path, full)
        return real(path, obj)

    monkeypatch.setattr(checkpoint, "save_torch", save_torch)
    capsys.readouterr()
    assert run(built, stage, "--force", f"{stage}.lr=0.01") == 2
    assert "no space left" in one_line_error(capsys)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in pair} == pair  # the old pair, byte for byte
    assert run(built, reader) == 0  # ... and accepted
    # the stage run again finishes the retrain (resumed from its epoch 1) and switches to the new pair
    assert run(built, stage, f"{stage}.lr=0.01") == 0
    assert (folder / f"{stage}.safetensors").read_bytes() != pair[folder / f"{stage}.safetensors"]
    assert not (folder / "pending").exists()
    assert yaml.safe_load((folder / "config.yaml").read_text())[stage]["lr"] == 0.01  # switched in with the model
    assert (folder / "metrics.csv").read_bytes() != pair[folder / "metrics.csv"]
    kept = [p for p in pair if p.name != "done.json"]  # (done.json notes the reuse)
    now = {p: p.read_bytes() for p in kept}
    assert run(built, stage, f"{stage}.lr=0.01") == 0  # finished: run again, reused; nothing rewritten or left behind
    assert {p: p.read_bytes() for p in kept} == now and not (folder / "pending").exists()
    assert run(built, reader, "--force" if reader == "cache" else "submit.tta=false") == 0


@pytest.mark.slow
def test_a_retrain_killed_before_its_switch_is_switched_by_the_next_run(built, capsys, monkeypatch):
    """Killed after the last epoch's checkpoint but before the switch: the rerun switches (it does not say
    "reused" with the old model beside the new last.pt)."""
    import pipeline.rundir as rundir

    folder = built.parent / "runs" / "tiny" / "teacher"
    old = (folder / "teacher.safetensors").read_bytes()

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir.RunDir, "_switch", killed)
    assert run(built, "teacher", "--force", "teacher.lr=0.01") == 130
    monkeypatch.undo()
    assert (folder / "teacher.safetensors").read_bytes() == old
    assert run(built, "cache") == 0  # the old pair is still whole
    assert run(built, "teacher", "teacher.lr=0.01") == 0
    rec = json.loads((folder / "done.json").read_text())
    assert not rec.get("reused") and (folder / "teacher.safetensors").read_bytes() != old
    assert run(built, "cache") == 0


@pytest.mark.slow
def test_a_switch_killed_between_its_moves_is_completed_by_the_stages_next_run(built, capsys, monkeypatch):
    """Killed after the new weights moved in but before the rest (the record among them): readers refuse the torn
    folder, naming the teacher; the teacher's next run completes the decided switch (pending/done.json) and trains
    nothing, and the folder is whole: the new weights, their record, config and metrics."""
    import pipeline.atomic as atomic

    folder = built.parent / "runs" / "tiny" / "teacher"
    old = (folder / "teacher.safetensors").read_bytes()
    real, moved = atomic._move, []

    def killed_after_one(src, dst):
        if moved:
            raise KeyboardInterrupt
        moved.append(src)
        real(src, dst)

    monkeypatch.setattr(atomic, "_move", killed_after_one)
    assert run(built, "teacher", "--force", "teacher.lr=0.01") == 130
    monkeypatch.undo()
    new = (folder / "teacher.safetensors").read_bytes()
    assert new != old and (folder / "pending" / "done.json").is_file()  # torn: new weights beside the old record
    capsys.readouterr()
    assert run(built, "cache") == 2
    err = one_line_error(capsys)
    assert "teacher" in err and "Traceback" not in err
    assert run(built, "teacher", "teacher.lr=0.01") == 0
    assert (folder / "teacher.safetensors").read_bytes() == new and not (folder / "pending").exists()
    assert yaml.safe_load((folder / "config.yaml").read_text())["teacher"]["lr"] == 0.01
    assert run(built, "cache") == 0
