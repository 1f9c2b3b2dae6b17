"""Deployable students are safetensors + json; checkpoints are read with weights_only and a pickled
object is refused, never run."""
import json
import os

import pytest
import torch

from pipeline.checkpoint import ResumeError, load_checkpoint
from pipeline.cli import main
from pipeline.models import ArtifactError, load_student
from tests.conftest import tiny_config


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_checkpoint_holding_a_pickled_object_is_refused_not_run(tmp_path, hw13, capsys):
    marker = tmp_path / "PWNED"
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 1})
    last = tmp_path / "runs" / "tiny" / "student" / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"config_hash": "x", "payload": Exploit(marker)}, last)
    with pytest.raises(ResumeError, match="pickled Python objects.*refused and not run"):
        load_checkpoint(last)
    assert main(["student", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "refused and not run" in err and str(last) in err
    assert not marker.exists()
    torch.load(last, weights_only=False)  # what an unsafe load does: the exploit is real
    assert marker.exists()


@pytest.mark.slow
def test_the_deployable_student_is_safetensors_and_json(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 2})
    assert main(["student", "--config", str(cfg)]) == 0, capsys.readouterr().err
    folder = tmp_path / "runs" / "tiny" / "student"
    assert (folder / "student.safetensors").is_file() and not (folder / "best.pt").exists()
    meta = json.loads((folder / "student.json").read_text())
    assert meta["kind"] == "student" and meta["arch"] == "dwsep" and meta["kwargs"] == {"width": 0.25}
    assert meta["num_classes"] == 3 and meta["img_size"] == 16 and meta["mean"] == [0.5] * 3
    model, got = load_student(folder, 60_000)
    assert got["params"] == sum(p.numel() for p in model.parameters()) and not model.training
    # submit reads only these two files: last.pt (training state) may go
    (folder / "last.pt").unlink()
    assert main(["submit", "--config", str(cfg)]) == 0, capsys.readouterr().err
    # a description that does not fit the weights is refused, naming the file
    meta["kwargs"] = {"width": 0.5}
    (folder / "student.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="student.safetensors: weights do not"):
        load_student(folder, 60_000)
    (folder / "student.safetensors").write_bytes(b"not a safetensors file")
    meta["kwargs"] = {"width": 0.25}
    (folder / "student.json").write_text(json.dumps(meta))
    assert main(["submit", "--config", str(cfg)]) == 2
    assert "student.safetensors" in capsys.readouterr().err


@pytest.mark.slow
def test_bf16_autocast_runs_every_stage_on_the_cpu(tmp_path, hw13, capsys, monkeypatch):
    """``amp: bf16`` forces the autocast path this CPU may not pick under ``auto``: the teacher's training, the
    cache's teacher and the student's training really compute in bfloat16 (their outputs' dtype, seen here)."""
    import pipeline.tasks.classification as classification
    import pipeline.tasks.distillation as distillation
    import pipeline.teachers as teachers
    from pipeline.fields import forward_specs

    seen: dict[str, set] = {}

    def spy(where, fn):
        def wrapped(*a, **k):
            out = fn(*a, **k)
            seen.setdefault(where, set()).update(str(v.dtype) for v in (out.values() if isinstance(out, dict) else [out]))
            return out
        return wrapped

    monkeypatch.setattr(classification.Classification, "logits",
                        spy("teacher", classification.Classification.logits))
    monkeypatch.setattr(teachers, "forward_specs", spy("cache", forward_specs))
    monkeypatch.setattr(distillation, "forward_specs", spy("student", forward_specs))
    cfg = tiny_config(tmp_path, hw13, teacher={"amp": "bf16", "epochs": 1}, student={"amp": "bf16", "epochs": 1})
    for stage in ("teacher", "cache", "student", "submit"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    assert seen == {"teacher": {"torch.bfloat16"}, "cache": {"torch.bfloat16"}, "student": {"torch.bfloat16"}}
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert s["teacher"]["precision"] == s["cache"]["precision"] == s["student"]["precision"] == "bf16"
    metrics = (tmp_path / "runs" / "tiny" / "student" / "metrics.csv").read_text()
    assert "nan" not in metrics


@pytest.mark.parametrize("role,on_native", [("teacher", torch.bfloat16), ("cache", torch.bfloat16), ("student", None)])
def test_auto_precision_follows_the_hardware_and_the_role(monkeypatch, role, on_native):
    """``auto`` on a CPU with native bf16: bf16 for the teacher's training and inference (the cache), float32 for
    the student (docs/precision.md); float32 everywhere without native bf16; fp16 + GradScaler on CUDA."""
    import pipeline.precision as precision
    from pipeline.precision import resolve

    cpu = torch.device("cpu")
    for native, want in ((True, on_native), (False, None)):  # both kinds of CPU, whichever this one is
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        p = resolve("auto", cpu, role)
        assert p.dtype == want and not p.scaled
    for forced, want in (("1", on_native), ("0", None)):  # DISTIL_CPU_BF16, as .ci/run uses it
        monkeypatch.undo()
        monkeypatch.setenv("DISTIL_CPU_BF16", forced)
        assert resolve("auto", cpu, role).dtype == want
    assert resolve("off", cpu, role).dtype is None
    assert resolve("bf16", cpu, role).dtype == torch.bfloat16
    assert resolve("fp16", cpu, role).dtype == torch.bfloat16  # no float16 GradScaler path on a CPU
    assert resolve("fp16", torch.device("cuda"), role).scaled and resolve("auto", torch.device("cuda"), role).scaled
    with pytest.raises(ValueError, match="not one of teacher, cache, student"):
        resolve("auto", cpu, "students")


@pytest.mark.slow
@pytest.mark.precision
def test_each_stage_resolves_auto_for_its_role(tmp_path, hw13, capsys, monkeypatch):
    """With bf16 native (forced), ``amp: auto`` runs the teacher and the cache in bf16 and the student in float32."""
    monkeypatch.setenv("DISTIL_CPU_BF16", "1")
    cfg = tiny_config(tmp_path, hw13, teacher={"epochs": 1}, student={"epochs": 1})
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert (s["teacher"]["precision"], s["cache"]["precision"], s["student"]["precision"]) == ("bf16", "bf16", "fp32")
