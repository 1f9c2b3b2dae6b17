"""GPU checks, run with ``pytest -m cuda`` on any machine with CUDA (skipped elsewhere): every stage on
the GPU with ``amp: auto`` (float16 + GradScaler), data-loader workers and pinned memory."""
import json

import pytest
import torch

from pipeline.cli import main
from tests.conftest import tiny_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_every_stage_on_the_gpu_with_amp_and_workers(tmp_path, hw13, capsys):
    cfg = tiny_config(tmp_path, hw13, data={"workers": 2}, cache={"feature_layer": 3},
                      student={"losses": [{"name": "ce"}, {"name": "kd"}, {"name": "fitnet"}]})
    for stage in ("teacher", "cache", "student", "submit", "export", "report"):
        assert main([stage, "--config", str(cfg)]) == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert s["teacher"]["precision"] == s["student"]["precision"] == "fp16"
    assert 0 <= s["student"]["val_acc"] <= 1
    assert main(["student", "--config", str(cfg), "student.teacher_mode=online", "student.dir=online"]) == 0


def test_pinned_loader_on_the_gpu(hw13):
    from pipeline.data.datasets import PlainImages, loader

    import numpy as np

    dl = loader(PlainImages(np.zeros((8, 12, 12, 3), np.uint8), None, 8), 4, shuffle=False, workers=2)
    batch = next(iter(dl))
    assert dl.pin_memory and batch["image"].is_pinned()
