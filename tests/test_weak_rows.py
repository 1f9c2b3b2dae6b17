"""Issue 27's weak rows: each worked, but with a traceback, an unclear message or a silent loss; each is now one
line naming the problem and the fix (exit 2), and nothing is lost."""
import json
import multiprocessing as mp

import pytest
import torch

from pipeline.cli import main
from tests.conftest import tiny_config


def run(cfg, *args):
    return main([args[0], "--config", str(cfg), *args[1:]])


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


class _Evil:
    pass


def test_pickle_as_teacher_weights_is_one_line(tmp_path, hw13, capsys):
    weights = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, weights)
    cfg = tiny_config(tmp_path, hw13, teacher={"pretrained": "file", "weights": str(weights)})
    assert run(cfg, "teacher") == 2
    line = one_line_error(capsys)
    assert "evil.pth is not a file of tensors only" in line and "state_dict" in line


def test_compare_skips_a_summary_with_text_for_a_number(tmp_path, capsys):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d, acc in ((good, 0.5), (bad, "0.5")):
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"name": d.name, "teacher": {"val_acc": acc}, "student": {"val_acc": acc}}))
    assert main(["compare", str(good), str(bad)]) == 0
    out = capsys.readouterr().out
    assert "| good |" in out and "malformed summary.json" in out


def test_config_naming_a_folder(tmp_path, capsys):
    assert main(["teacher", "--config", str(tmp_path)]) == 2
    line = one_line_error(capsys)
    assert "is a folder, not a file" in line


def test_arabic_indic_digits_are_not_labels(tmp_path, hw13, capsys):
    (hw13 / "training" / "0_0.jpg").rename(hw13 / "training" / "\u0661_0.jpg")  # ARABIC-INDIC DIGIT ONE
    cfg = tiny_config(tmp_path, hw13)
    assert run(cfg, "teacher") == 2
    assert "cannot read a label from the name" in one_line_error(capsys)


def _update(args):
    cfg_path, who = args
    from pipeline.config import load_config
    from pipeline.rundir import RunDir

    rd = RunDir(load_config(cfg_path))
    for i in range(40):
        rd.update_summary(f"{who}-{i}", i)


@pytest.mark.slow
def test_summary_updates_from_two_processes_keep_every_section(tmp_path, hw13):
    cfg = tiny_config(tmp_path, hw13)
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_update, [(str(cfg), "a"), (str(cfg), "b")])
    data = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert sum(k.startswith(("a-", "b-")) for k in data) == 80


def test_a_non_finite_teacher_is_refused_at_the_cache(built, capsys):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = built.parent / "runs" / "tiny" / "teacher" / "teacher.safetensors"
    tensors = load_file(str(path))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata()
    save_file(tensors, str(path), metadata=meta)
    done = built.parent / "runs" / "tiny" / "teacher" / "done.json"  # its record agrees: only the weights are bad
    rec = json.loads(done.read_text())
    rec.pop("provenance", None)
    done.write_text(json.dumps(rec))
    assert run(built, "cache", "--force") == 2
    line = one_line_error(capsys)
    assert "teacher.safetensors has non-finite weights" in line and "teacher" in line


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys):
    import pipeline.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_parser", interrupted)
    assert cli.main(["teacher"]) == 130
    assert "interrupted (Ctrl-C) while starting" in one_line_error(capsys)


@pytest.mark.parametrize("text,what", [("Id,Category\n0000,0\n0000,0\n", "repeats Id '0000'"),
                                       ("Id,Category,\n0000,0,\n", "sample submission header"),
                                       ("Id,Category\n0000,0\n".encode("utf-16"), "not a readable CSV")])
def test_a_bad_sample_submission_is_refused_before_training(tmp_path, hw13, capsys, text, what):
    sample = hw13 / "sample_submission.csv"
    sample.write_bytes(text if isinstance(text, bytes) else text.encode())
    cfg = tiny_config(tmp_path, hw13)
    assert run(cfg, "teacher") == 2
    assert what in one_line_error(capsys)
    assert not (tmp_path / "runs" / "tiny" / "teacher" / "last.pt").exists()
