"""Two processes on the CPU (gloo), launched like a multi-GPU run: DDP training equals one process at
the same global batch, the cache they build equals the one-process cache, and a 2-process student
epoch trains and checkpoints."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from tests.conftest import tiny_config

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, module: str = "pipeline") -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", module, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_ddp_on_two_processes_equals_one_process_at_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    res = subprocess.run([sys.executable, "-m", "tests.ddp_worker", str(one), "8"], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "WORLD_SIZE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    res = torchrun(str(two), "8", module="tests.ddp_worker")
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    moved = max(float((w - torch.zeros_like(w)).abs().max()) for w in a["weights"].values())
    assert moved > 0
    for k, w in a["weights"].items():
        torch.testing.assert_close(b["weights"][k], w, rtol=1e-5, atol=1e-6, msg=k)  # gradients averaged, not summed
    # validation is sharded (7 + 6 images) and reduced to the same accuracy; train losses are averaged
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]
    for ra, rb in zip(a["history"], b["history"]):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_two_process_cache_equals_one_process_cache_and_student_trains(tmp_path, built, capsys):
    import shutil

    shutil.move(tmp_path / "runs", tmp_path / "one")  # the trained teacher, in a runs folder of its own
    one = tiny_config(tmp_path, tmp_path / "data", runs_dir=str(tmp_path / "one"))
    assert main(["cache", "--config", str(one), "cache.store=[feat]"]) == 0, capsys.readouterr().err
    # the same teacher, cached by two processes
    two_dir = tmp_path / "two" / "tiny"
    two_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "one" / "tiny" / "teacher", two_dir / "teacher")
    res = torchrun("cache", "--config", str(one), f"runs_dir={tmp_path / 'two'}", "cache.store=[feat]")
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = tmp_path / "one" / "tiny" / "cache", two_dir / "cache"
    for name in ("logits", "feat", "views", "val_logits"):
        np.testing.assert_allclose(np.load(b / f"{name}.npy"), np.load(a / f"{name}.npy"), atol=2e-3, err_msg=name)
    man_a, man_b = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert man_a["key"] == man_b["key"] and man_a["shapes"] == man_b["shapes"]
    assert not list(b.glob(".shard*")) and json.loads((b / "done.json").read_text())["processes"] == 2

    res = torchrun("student", "--config", str(one), f"runs_dir={tmp_path / 'two'}", "student.epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    ck = torch.load(two_dir / "student" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and (two_dir / "student" / "metrics.csv").is_file()
    assert json.loads((two_dir / "summary.json").read_text())["student"]["epochs"] == 1
