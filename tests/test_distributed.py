"""Two processes on the CPU (gloo), launched like a multi-GPU run: the cache they build equals the
one-process cache, and a 2-process student epoch trains and checkpoints."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from distil.cli import main
from tests.conftest import tiny_config

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "distil", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_two_process_cache_equals_one_process_cache_and_student_trains(tmp_path, hw13, capsys):
    one = tiny_config(tmp_path, hw13, runs_dir=str(tmp_path / "one"))
    assert main(["teacher", "--config", str(one)]) == 0, capsys.readouterr().err
    assert main(["cache", "--config", str(one), "cache.store=[feat]"]) == 0, capsys.readouterr().err
    # the same teacher, cached by two processes
    two_dir = tmp_path / "two" / "tiny"
    two_dir.mkdir(parents=True)
    import shutil

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
    ck = torch.load(two_dir / "student" / "last.pt", weights_only=False)
    assert ck["epoch"] == 1 and (two_dir / "student" / "metrics.csv").is_file()
    assert json.loads((two_dir / "summary.json").read_text())["student"]["epochs"] == 1
