"""The frozen online teacher stands beside the trainable module (timm's distillation task): it runs inside
``Distiller.forward`` but is no submodule, so DDP, the EMA, ``last.pt`` and the best state see only the
student and the loss adapters."""
import pytest
import torch

from pipeline.cli import main


@pytest.mark.slow
def test_the_online_teacher_is_in_neither_the_checkpoint_nor_the_ema(built, tmp_path, capsys):
    args = ["student", "--config", str(built), "student.teacher_mode=online", "student.epochs=1", "student.ema=0.9",
            "student.max_steps_per_epoch=2"]
    assert main(args) == 0, capsys.readouterr().err
    ck = torch.load(tmp_path / "runs" / "tiny" / "student" / "last.pt", weights_only=True)
    for part in ("trainable", "ema", "best_trainable"):
        keys = list(ck[part])
        assert any(k.startswith("student.") for k in keys), part
        assert not [k for k in keys if k.startswith("teacher.")], part
    # the teacher still taught: the KD term was computed from its outputs
    assert ck["history"][0]["train_kd"] > 0

