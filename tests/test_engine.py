"""The shared engine: exact resume (also mid-epoch), interrupt handling, NaN guard."""
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.checkpoint import ResumeError
from pipeline.data.datasets import Normalize, ViewImages, loader
from pipeline.data.views import sample_views
from pipeline.engine import Engine, Interrupted, NonFiniteLoss, adamw, cosine_schedule

N, S = 40, 12


def make_engine(out, *, epochs=3, hook=None, config_hash="h1"):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (N, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, N)
    views = sample_views(N, 3, S, 0.5, rng)
    ds = ViewImages(px, labels, views, 8, seed=1)
    dl = loader(ds, 8, shuffle=True, seed=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    norm = Normalize((0.5,) * 3, (0.5,) * 3)
    opt = adamw(model.parameters(), 1e-2, 0.01)
    sched = cosine_schedule(opt, len(dl) * epochs, 2)
    calls = {"n": 0}

    def step(batch):
        calls["n"] += 1
        if hook:
            hook(calls["n"])
        loss = nn.functional.cross_entropy(model(norm(batch[0])), batch[1])
        return {"loss": loss, "ce": loss.detach()}

    def evaluate():
        with torch.no_grad():
            model.eval()
            acc = float((model(norm(torch.from_numpy(px[:, :8, :8]))).argmax(1).numpy() == labels).mean())
            model.train()
        return {"val_acc": acc}

    eng = Engine(module=model, step=step, evaluate=evaluate, loader=dl, optimizer=opt, scheduler=sched, epochs=epochs,
                 out_dir=out, config={"x": 1}, config_hash=config_hash, export=lambda: {"model": model.state_dict()})
    return eng, model


def test_interrupted_mid_epoch_and_resumed_equals_uninterrupted(tmp_path):
    ref, ref_model = make_engine(tmp_path / "ref")
    ref.fit()

    def interrupt(n):
        if n == 8:  # epoch 1 (of 5 batches each), third batch
            os.kill(os.getpid(), signal.SIGINT)

    eng, _ = make_engine(tmp_path / "run", hook=interrupt)
    with pytest.raises(Interrupted, match="Resume with") as e:
        eng.fit()
    assert e.value.signum == signal.SIGINT
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert (saved["epoch"], saved["batch"]) == (1, 3)

    torch.manual_seed(123)  # a fresh process would have different RNG: resume must restore it
    again, model = make_engine(tmp_path / "run")
    again.fit()
    for (k, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [r["val_acc"] for r in again.history] == [r["val_acc"] for r in ref.history]


def test_resume_with_other_config_is_refused(tmp_path):
    eng, _ = make_engine(tmp_path, epochs=1)
    eng.fit()
    other, _ = make_engine(tmp_path, epochs=1, config_hash="h2")
    with pytest.raises(ResumeError, match="different config.*Delete"):
        other.fit()


def test_nan_loss_stops_with_step_and_terms_and_keeps_last_good(tmp_path):
    eng, model = make_engine(tmp_path, epochs=2)
    eng.epochs = 1
    eng.fit()
    good = (tmp_path / "last.pt").read_bytes()

    def nan_step(batch):
        return {"loss": torch.tensor(float("nan"), requires_grad=True), "kd": torch.tensor(float("nan"))}

    eng.step, eng.epochs = nan_step, 2
    with pytest.raises(NonFiniteLoss, match=r"epoch 1 batch 0 .*'kd': nan.*lower lr"):
        eng.fit()
    assert (tmp_path / "last.pt").read_bytes() == good


def test_metrics_csv_and_best_checkpoint(tmp_path):
    eng, _ = make_engine(tmp_path, epochs=2)
    eng.fit()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_ce,val_acc,lr") and len(lines) == 3
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["best"] == max(r["val_acc"] for r in eng.history[: best["epoch"]])
    assert best["config"] == {"x": 1}


def test_sigterm_during_a_cli_run_saves_and_says_how_to_resume(tmp_path, hw13):
    """A real process: SIGTERM mid-training -> last.pt saved, exit 128+15, message with the resume command;
    running the same command again resumes and finishes."""
    import subprocess
    import sys
    import time

    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 60, "batch_size": 4})
    cmd = [sys.executable, "-m", "pipeline", "student", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "tiny" / "student" / "metrics.csv"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert metrics.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by signal" in err and "Resume with: python -m pipeline student --config" in err
    state = torch.load(tmp_path / "runs" / "tiny" / "student" / "last.pt", weights_only=False)
    assert 1 <= state["epoch"] < 60
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {tmp_path / 'runs' / 'tiny' / 'student' / 'last.pt'} at epoch {state['epoch']}" in done.stderr
    assert len(metrics.read_text().splitlines()) == 1 + 60
