"""The frozen online teacher stands beside the trainable module (timm's distillation task): it runs inside
``Distiller.forward`` but is no submodule, so DDP, the EMA, ``last.pt`` and the best state see only the
student and the loss adapters."""
import torch

from pipeline.cli import main


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


def test_the_teacher_runs_in_forward_frozen_and_beside_the_module():
    from pipeline.data.datasets import Normalize
    from pipeline.losses.criterion import Criterion
    from pipeline.tasks import Distiller

    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.bn = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)
            self.calls: list[tuple[bool, bool]] = []

        def forward(self, image: torch.Tensor) -> dict:
            self.calls.append((torch.is_inference_mode_enabled(), self.training))
            with torch.inference_mode():
                return {"logits_t": self.bn(self.lin(image.float().mean((1, 2))))}

    class Student(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward_features(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

        def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
            return x if pre_logits else self.lin(x)

    from types import SimpleNamespace
    terms = [SimpleNamespace(name="kd", weight=1.0, kwargs={})]
    teacher = Teacher()
    d = Distiller(Student(), Criterion(terms, {}, {"logits": 4}), Normalize((0.5,) * 3, (0.5,) * 3), None, teacher)
    assert d.teacher is teacher
    assert not [n for n in d.state_dict() if "teacher" in n]
    assert not [n for n, _ in d.named_modules() if "teacher" in n]
    assert all(not p.requires_grad for p in teacher.parameters())  # frozen by the Distiller too
    d.train()
    stats = teacher.bn.running_mean.clone()
    batch = {"image": torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8), "target": torch.tensor([0, 1, 2, 3]),
             "teacher_image": torch.randint(0, 255, (4, 8, 8, 3), dtype=torch.uint8)}
    out = d(batch)
    out["loss"].backward()
    assert teacher.calls == [(False, False)]  # called from forward, in eval mode (its own inference_mode inside)
    assert torch.equal(teacher.bn.running_mean, stats)
    assert d.student.lin.weight.grad is not None
    d.to(torch.float64)  # device / dtype moves reach the teacher beside it
    assert teacher.lin.weight.dtype == torch.float64


def test_a_checkpoint_that_carries_the_teacher_is_refused_in_one_line(built, tmp_path, capsys):
    args = ["student", "--config", str(built), "student.epochs=1", "student.max_steps_per_epoch=2"]
    assert main(args) == 0, capsys.readouterr().err
    last = tmp_path / "runs" / "tiny" / "student" / "last.pt"
    ck = torch.load(last, weights_only=True)
    ck["trainable"]["teacher.model.conv_stem.weight"] = torch.zeros(2)  # as saved before the teacher stood beside
    ck["epoch"], ck["batch"], ck["history"] = 0, 1, []  # interrupted in its first epoch
    torch.save(ck, last)
    capsys.readouterr()
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "another trainable module" in err and "teacher.model.conv_stem.weight" in err and "Traceback" not in err
