"""Nothing stale, nothing silent: each case here is a way a run could go wrong quietly or loudly
without help; each gets a named refusal with the command that recovers, and the recovery works."""
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.config import REPO_ROOT, ConfigError, load_config
from tests.conftest import tiny_config


def run(cfg, *args):
    return main([args[0], "--config", str(cfg), *args[1:]])


def hint(err: str, after: str) -> list[str]:
    """The command a message gives (after ``after``), as argv for ``main``."""
    import shlex

    words = shlex.split(err.split(after)[1].strip().splitlines()[0])
    for prog in ("distil", "pipeline"):  # `.venv/bin/distil stage` or `python -m pipeline stage`
        if prog in words:
            return words[words.index(prog) + 1:]
    return words[1:]


@pytest.mark.slow
def test_data_changed_after_training_is_refused_then_rerun(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13)
    for stage in ("teacher", "cache", "student", "submit"):
        assert run(cfg, stage) == 0, capsys.readouterr().err
    capsys.readouterr()
    # relabel one training image: every stage that read it is stale
    (hw13 / "training" / "0_0.jpg").rename(hw13 / "training" / "1_99.jpg")
    assert run(cfg, "teacher") == 2
    err = capsys.readouterr().err
    assert "trained on other inputs: train images changed" in err and "--force" in err
    assert main(hint(err, "start this stage over with:")) == 0  # the command it gives re-runs the teacher
    assert run(cfg, "student") == 2  # the cache of the old teacher is refused
    assert "stale" in capsys.readouterr().err
    assert run(cfg, "cache") == 0
    assert run(cfg, "student") == 2  # the old student: other images, other teacher
    err = capsys.readouterr().err
    assert "teacher, train images changed" in err
    assert run(cfg, "student", "--force") == 0
    # a new evaluation image: submit predicts it (it never reuses an old CSV)
    Image.open(hw13 / "evaluation" / "0000.jpg").save(hw13 / "evaluation" / "0006.jpg")
    with open(hw13 / "sample_submission.csv", "a") as fh:
        fh.write("0006,0\n")
    assert run(cfg, "submit") == 0
    assert (tmp_path / "subs" / "tiny.csv").read_text().splitlines()[-1].startswith("0006,")


@pytest.mark.parametrize("override,key", [
    ("student.kwargs={widht: 0.5}", "widht"),
    ("cache.feature_layer=99", "cache.feature_layer 99"),
    ("student.losses=[{name: fitnet}]", "cache.feature_layer is not set"),
    ("seed=-1", "seed"),
    ("student.losses=[]", "student.losses"),
    ("student.losses=[{name: kd, kwargs: {temperature: abc}}]", "temperature"),
    ("student.losses=[{name: kd, kwargs: {temperature: -1}}]", "temperature"),
    ("student.losses=[{name: ce, kwargs: {label_smoothing: 2.0}}]", "label_smoothing"),
    ("student.label_smoothing=0.1", "student.label_smoothing: unknown key"),
    ("student.model=resnet", "unknown student 'resnet'"),
    ("name=../../x", "name"),
])
def test_bad_values_fail_at_load_before_any_training(tmp_path, hw13, capsys, override, key):
    cfg = tiny_config(tmp_path, hw13)
    assert run(cfg, "teacher", override) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("data: {root: x}\nstudent:\n  epochs: 3\nteacher: {epochs: 1}\nstudent:\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'student' \(first on line 2, again on line 5\)"):
        load_config(p)


def test_compile_acts(tmp_path, hw13, monkeypatch, capsys):
    import torch

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(type(m).__name__) or m)
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1, "compile": True})
    assert run(cfg, "student") == 0, capsys.readouterr().err
    assert compiled == ["Distiller"]


@pytest.fixture
def cached(built):
    return built


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["views.npy", "logits.npy", "manifest.json"])
def test_empty_cache_files_are_named_and_the_rebuild_command_works(cached, capsys, damage):
    p = load_config(cached).run_dir / "cache" / damage
    p.write_text("[]" if damage == "manifest.json" else "")
    assert run(cached, "student") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and damage.split(".")[0] in err and "distil cache --config" in err
    after = "Rebuild it with:" if "Rebuild it with:" in err else "run the cache stage:"  # manifest: its record differs
    assert main(hint(err, after)) == 0
    assert run(cached, "student") == 0


def test_a_truncated_teacher_is_named_and_rewritten_by_the_teacher_stage(cached, capsys):
    art = load_config(cached).run_dir / "teacher" / "teacher.safetensors"
    good = art.read_bytes()
    art.write_bytes(good[: len(good) // 2])
    assert run(cached, "cache", "cache.views=3") == 2
    err = capsys.readouterr().err
    assert "teacher.safetensors" in err and "distil teacher --config" in err and "Traceback" not in err
    assert main(hint(err, "run the teacher stage:")) == 0  # resumes the finished teacher: rewrites its model
    assert art.read_bytes() == good
    assert run(cached, "cache", "cache.views=3") == 0


@pytest.mark.slow
def test_a_deleted_student_is_written_again_by_rerunning_the_stage(cached, capsys):
    assert run(cached, "student") == 0
    folder = load_config(cached).run_dir / "student"
    good = (folder / "student.safetensors").read_bytes()
    (folder / "student.safetensors").unlink()
    assert run(cached, "submit") == 2
    err = capsys.readouterr().err
    assert "student.safetensors is missing" in err and "distil student --config" in err
    assert run(cached, "student") == 0
    assert (folder / "student.safetensors").read_bytes() == good
    assert run(cached, "submit") == 0


def test_a_full_disk_is_named_before_the_memmap_and_leaves_no_temp(tmp_path, hw13, monkeypatch, capsys):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    cfg = tiny_config(tmp_path, hw13)
    assert run(cfg, "teacher") == 2
    err = capsys.readouterr().err
    assert "no space left on" in err and "pixel cache" in err and "MB" in err
    assert not list((tmp_path / "runs").rglob("*.tmp"))


def test_enospc_in_a_checkpoint_write_is_named(tmp_path, monkeypatch):
    import errno

    import torch

    from pipeline.atomic import DiskFullError, save_torch

    def full(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / "last.pt").write_bytes(b"old")
    with pytest.raises(DiskFullError, match=f"no space left on {tmp_path} while writing last.pt"):
        save_torch(tmp_path / "last.pt", {})
    assert (tmp_path / "last.pt").read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))


def test_a_killed_checkpoint_write_leaves_no_temp_after_the_next_run(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
    folder = tmp_path / "runs" / "tiny" / "student"
    folder.mkdir(parents=True)
    (folder / ".last.pt.x1y2.tmp").write_bytes(b"half")
    assert run(cfg, "student") == 0, capsys.readouterr().err
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_a_second_run_waits_for_the_first_and_says_who_holds_it(cached, capsys):
    from pipeline.locks import held

    folder = load_config(cached).run_dir / "cache"
    with held(folder / ".lock", "test"):
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "cache", "--config", str(cached)],
                                stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = ""
        while "in use by" not in line and proc.poll() is None:
            line = proc.stderr.readline()
        assert "is in use by pid" in line and str(os.getpid()) in line
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert '"reused": true' in out


def test_ctrl_c_exits_130_with_one_line(tmp_path, hw13, monkeypatch, capsys):
    import pipeline.cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.cli, "run_stage", interrupted)
    assert main(["cache", "--config", str(tiny_config(tmp_path, hw13))]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: interrupted (Ctrl-C) during cache") and "\n" not in err


def test_rerun_commands_keep_the_users_overrides(tmp_path, hw13):
    from pipeline.rundir import RunDir

    cfg_path = tiny_config(tmp_path, hw13)
    rd = RunDir(load_config(cfg_path, ["student.epochs=3"]), str(cfg_path), ["student.epochs=3", "name=a b"])
    assert rd.command("student", force=True).endswith(f"student --config {cfg_path} --force student.epochs=3 'name=a b'")


def test_compare_skips_a_malformed_summary(tmp_path, capsys, caplog):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text('{"teacher": [1, 2]}')
    assert main(["compare", str(tmp_path / "bad")]) == 0
    assert "(malformed summary.json)" in capsys.readouterr().out and "skipping" in caplog.text


def test_outputs_follow_the_users_umask(tmp_path, hw13, capsys):
    old = os.umask(0o022)
    try:
        cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
        assert run(cfg, "student") == 0 and run(cfg, "submit") == 0, capsys.readouterr().err
    finally:
        os.umask(old)
    for p in [tmp_path / "subs" / "tiny.csv", *(tmp_path / "runs" / "tiny" / "student").glob("student.*")]:
        assert p.stat().st_mode & 0o777 == 0o644, p


@pytest.mark.slow
def test_upload_without_credentials_stops_before_predicting(tmp_path, hw13, monkeypatch, capsys):
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
    assert run(cfg, "student") == 0 and run(cfg, "submit") == 0
    csv = tmp_path / "subs" / "tiny.csv"
    before = (csv.read_bytes(), csv.stat().st_mtime_ns)
    capsys.readouterr()
    assert run(cfg, "submit", "--upload") == 2
    assert "Kaggle credentials not found" in capsys.readouterr().err
    assert (csv.read_bytes(), csv.stat().st_mtime_ns) == before


def test_a_run_meant_for_kaggle_stops_before_training_when_it_could_not_upload(tmp_path, hw13, monkeypatch, capsys):
    """``submit.upload=true`` (what ``make submit KAGGLE=1`` gives every stage): a bad competition slug or missing
    credentials stop the first stage before it trains anything, not the last one after hours."""
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    cfg = tiny_config(tmp_path, hw13)
    capsys.readouterr()
    assert run(cfg, "teacher", "submit.upload=true") == 2
    assert "Kaggle credentials not found" in capsys.readouterr().err
    assert run(cfg, "teacher", "submit.upload=true", "submit.competition=Not A Slug") == 2
    assert "submit.competition" in capsys.readouterr().err  # the schema knows a slug's shape
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_make_kaggle_hands_the_upload_request_to_every_stage():
    """``make -n`` (prints, runs nothing): with KAGGLE=1 each stage's command carries the request, so the check
    above runs at the teacher."""
    out = subprocess.run(["make", "-n", "submit", "KAGGLE=1", "COMPETITION=ml2023spring-hw13",
                          "CONFIG=configs/food10-mini.yaml"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "/distil " in line and "--config" in line]
    assert [line.split("/distil ")[1].split()[0] for line in lines] == ["teacher", "cache", "student", "submit"]
    assert all(line.endswith("submit.upload=true submit.competition=ml2023spring-hw13") for line in lines), lines


def test_setup_on_a_full_disk_says_how_much_it_needs_before_pip(tmp_path):
    """``make setup`` with less free disk than the venv takes stops at once, naming the folder and the fix
    (CI once died half-way through pip with ``[Errno 28]``); nothing is created."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    out = subprocess.run(["make", "setup", "NEED_GIB=1000000000"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert f"free on the disk of {tmp_path}" in out.stderr and "needs about 1000000000 GiB" in out.stderr, out.stderr
    assert not (tmp_path / ".venv").exists()
