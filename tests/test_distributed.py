"""Two processes on the CPU (gloo), launched like a multi-GPU run: DDP training equals one process at
the same global batch, the cache they build equals the one-process cache, and a 2-process student
epoch trains and checkpoints."""
import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cli import main
from tests.conftest import built_once, tiny_config

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


KINDS = ("plain", "bn", "unused")


def launch_worker_runs(root: Path) -> None:
    """``tests.ddp_worker`` alone (standing in for 2 ranks) into ``root/one`` and under torchrun into ``root/two``,
    every kind in one launch each (a process start costs seconds of imports)."""
    one, two = root / "one", root / "two"
    one.mkdir()
    two.mkdir()
    res = subprocess.run([sys.executable, "-m", "tests.ddp_worker", str(one), "8", ",".join(KINDS), "2"],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    res = torchrun(str(two), "8", ",".join(KINDS), module="tests.ddp_worker")
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="session")
def worker_runs(tmp_path_factory) -> dict[str, tuple[dict, list[dict]]]:
    """Per kind, the one-process state and each rank's: launched once for the tests here, whichever xdist worker
    runs them."""
    root = built_once(tmp_path_factory, "ddp_worker", launch_worker_runs)
    load = lambda p: torch.load(p, weights_only=True)  # noqa: E731
    return {k: (load(root / "one" / f"{k}.pt"), [load(root / "two" / f"{k}.pt"), load(root / "two" / f"{k}.pt.rank1")])
            for k in KINDS}


def run_worker(runs: dict[str, tuple[dict, list[dict]]], kind: str) -> tuple[dict, list[dict]]:
    """The one-process state of ``kind`` and each rank's (copies: a test may not change what another reads)."""
    import copy

    return copy.deepcopy(runs[kind])


def assert_same_state(ref: dict, got: dict, what: str) -> None:
    assert ref.keys() == got.keys()
    for k, w in ref.items():
        torch.testing.assert_close(got[k], w, rtol=1e-5, atol=1e-6, msg=lambda m, k=k: f"{what}: {k}: {m}")


@pytest.mark.slow
def test_ddp_on_two_processes_equals_one_process_at_the_same_global_batch(worker_runs):
    a, ranks = run_worker(worker_runs, "plain")
    moved = max(float((w - a["initial"][k]).abs().max()) for k, w in a["weights"].items() if w.is_floating_point())
    assert moved > 1e-3  # trained away from the initial weights
    for b in ranks:
        assert_same_state(a["weights"], b["weights"], "weights")  # gradients averaged, not summed
    b = ranks[0]
    # validation is sharded (7 + 6 images) and reduced to the same accuracy; train losses are averaged
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in b["history"]]
    assert not b["find_unused"]  # every parameter reaches the loss: DDP does not search the graph each step
    for ra, rb in zip(a["history"], b["history"]):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_batchnorm_statistics_are_averaged_over_ranks_before_validation_and_checkpoint(worker_runs):
    """Without SyncBatchNorm each rank normalises by its own share of the batch (the one-process run does the same per
    share); every rank's running statistics, live and in the EMA, must end as their mean over ranks, the same on
    both ranks, not rank 0's own."""
    a, ranks = run_worker(worker_runs, "bn")
    stats = [k for k in a["weights"] if k.endswith(("running_mean", "running_var"))]
    assert stats and all(float((a["weights"][k] - a["initial"][k]).abs().max()) > 1e-3 for k in stats)
    for r, b in enumerate(ranks):
        assert_same_state(a["weights"], b["weights"], f"rank {r} weights and buffers")
        assert_same_state(a["ema"], b["ema"], f"rank {r} EMA")
    assert [r["val_acc"] for r in a["history"]] == [r["val_acc"] for r in ranks[0]["history"]]


@pytest.mark.slow
def test_a_layer_no_loss_reaches_does_not_stop_ddp(worker_runs):
    a, ranks = run_worker(worker_runs, "unused")
    for b in ranks:
        assert_same_state(a["weights"], b["weights"], "weights")
        torch.testing.assert_close(b["weights"]["aux.weight"], a["initial"]["aux.weight"])  # untouched
        assert b["find_unused"]


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
    # cache, then student, in the same two processes (as `distil all` runs its stages): one launch, not two
    two_runs = ["--config", str(one), f"runs_dir={tmp_path / 'two'}"]
    res = torchrun("--cli", shlex.join(["cache", *two_runs, "cache.store=[feat]"]),
                   shlex.join(["student", *two_runs, "student.epochs=1"]), module="tests.ddp_worker")
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = tmp_path / "one" / "tiny" / "cache", two_dir / "cache"
    for name in ("logits", "feat", "views", "val_logits"):
        np.testing.assert_allclose(np.load(b / f"{name}.npy"), np.load(a / f"{name}.npy"), atol=2e-3, err_msg=name)
    man_a, man_b = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert man_a["key"] == man_b["key"] and man_a["shapes"] == man_b["shapes"]
    assert not list(b.glob(".shard*")) and json.loads((b / "done.json").read_text())["processes"] == 2

    ck = torch.load(two_dir / "student" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and (two_dir / "student" / "metrics.csv").is_file()
    assert json.loads((two_dir / "summary.json").read_text())["student"]["epochs"] == 1
