"""The shared engine: exact resume (also mid-epoch), interrupt handling, NaN guard."""
import os
import signal

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pipeline.checkpoint import ResumeError
from pipeline.data.datasets import Normalize, PlainImages, ViewImages, loader
from pipeline.data.views import sample_views
from pipeline.engine import Engine, Interrupted, NonFiniteLoss, adamw, cosine_schedule

N, S = 40, 12


class Tiny(nn.Module):
    """A trainable module as the engine wants it: ``forward(batch) -> losses``, ``logits(image)``."""

    def __init__(self, hook=None):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
        self.norm = Normalize((0.5,) * 3, (0.5,) * 3)
        self.hook, self.calls = hook, 0

    def logits(self, image):
        return self.net(self.norm(image))

    def forward(self, batch):
        self.calls += 1
        if self.hook:
            self.hook(self.calls)
        loss = nn.functional.cross_entropy(self.logits(batch["image"]), batch["target"])
        return {"loss": loss, "ce": loss.detach()}


def make_engine(out, *, epochs=3, hook=None, config_hash="h1", on_best=lambda row: None, ema_decay=None):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (N, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, N)
    views = sample_views(N, 3, S, 0.5, rng)
    dl = loader(ViewImages(px, labels, views, 8, seed=1), 8, shuffle=True, seed=1)
    val_dl = loader(PlainImages(px, labels, 8), 16, shuffle=False, shard=True)
    model = Tiny(hook)
    opt = adamw(model.parameters(), 1e-2, 0.01)
    sched = cosine_schedule(opt, len(dl) * epochs, 2)
    eng = Engine(module=model, loader=dl, val_loader=val_dl, optimizer=opt, scheduler=sched, epochs=epochs,
                 out_dir=out, config={"x": 1}, config_hash=config_hash, on_best=on_best, ema_decay=ema_decay)
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
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
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
    with pytest.raises(ResumeError, match="different config.*start this stage over with"):
        other.fit()


def test_a_refusal_names_the_changed_keys_and_an_upgrade_alone_is_resumed(tmp_path):
    """The engine asks config_changes(old config) when the hashes differ: it names the changes in the refusal,
    and a checkpoint whose config differs only by what the schema calls no change (none listed) is kept."""
    eng, _ = make_engine(tmp_path, epochs=1)
    eng.fit()
    seen = []
    other, _ = make_engine(tmp_path, epochs=1, config_hash="h2")
    other.config_changes = lambda old: seen.append(old) or ["teacher.lr: 0.001 -> 0.002"]
    with pytest.raises(ResumeError, match=r"different config: teacher.lr: 0.001 -> 0.002\. .*start this stage over"):
        other.fit()
    assert seen == [{"x": 1}]  # the config the checkpoint carries
    same, _ = make_engine(tmp_path, epochs=1, config_hash="h2")
    same.config_changes = lambda old: []
    same.fit()
    assert same.epochs_run == 0 and len(same.history) == 1  # finished run reused, not trained again


def test_a_refused_run_leaves_the_finished_runs_config_as_it_was(tmp_path):
    """config.yaml is the record of what last.pt was trained with: written once the checkpoint is accepted."""
    eng, _ = make_engine(tmp_path, epochs=1)
    eng.fit()
    record = tmp_path / "config.yaml"
    assert yaml.safe_load(record.read_text()) == {"x": 1}
    other, _ = make_engine(tmp_path, epochs=1, config_hash="h2")
    other.config = {"x": 2}
    with pytest.raises(ResumeError):
        other.fit()
    assert yaml.safe_load(record.read_text()) == {"x": 1}


def test_nan_loss_stops_with_step_and_terms_and_keeps_last_good(tmp_path):
    eng, model = make_engine(tmp_path, epochs=2)
    eng.epochs = 1
    eng.fit()
    good = (tmp_path / "last.pt").read_bytes()

    def nan_step(batch):
        return {"loss": torch.tensor(float("nan"), requires_grad=True), "kd": torch.tensor(float("nan"))}

    model.forward, eng.epochs = nan_step, 2
    with pytest.raises(NonFiniteLoss, match=r"epoch 1 batch 0 .*'kd': nan.*last.pt holds the state after epoch 1.*lower lr"):
        eng.fit()
    assert (tmp_path / "last.pt").read_bytes() == good


def test_nan_before_any_checkpoint_says_nothing_was_saved(tmp_path):
    eng, model = make_engine(tmp_path, epochs=1)
    model.forward = lambda batch: {"loss": torch.tensor(float("inf"), requires_grad=True)}
    with pytest.raises(NonFiniteLoss, match="nothing has been saved yet"):
        eng.fit()
    assert not (tmp_path / "last.pt").exists()


def test_metrics_csv_and_best_hook(tmp_path):
    bests = []
    eng, _ = make_engine(tmp_path, epochs=3, on_best=bests.append)
    eng.fit()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_ce,val_acc,lr") and len(lines) == 4
    assert bests and bests[0]["epoch"] == 1 and bests[-1]["val_acc"] == max(r["val_acc"] for r in eng.history)
    assert [b["val_acc"] for b in bests] == sorted(b["val_acc"] for b in bests)  # called only on improvement
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["config"] == {"x": 1} and last["epoch"] == 3


@pytest.mark.slow
def test_sigterm_during_a_cli_run_saves_and_says_how_to_resume(tmp_path, hw13):
    """A real process: SIGTERM mid-training -> last.pt saved, exit 128+15, message with the resume command;
    running the same command again resumes and finishes."""
    import subprocess
    import sys
    import time

    from tests.conftest import tiny_config

    # 10 short epochs (12 steps of two images each): seconds in all, so the resumed run is short too
    cfg = tiny_config(tmp_path, hw13, student={"kd": False, "epochs": 10, "batch_size": 2})
    cmd = [sys.executable, "-m", "pipeline", "student", "--config", str(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny model: one thread, no contention with other jobs
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = tmp_path / "runs" / "tiny" / "student" / "metrics.csv"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert metrics.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted by signal" in err and "Resume with: " in err
    hint = err.split("Resume with: ")[1].splitlines()[0]
    assert "distil student --config" in hint
    state = torch.load(tmp_path / "runs" / "tiny" / "student" / "last.pt", weights_only=True)
    assert 1 <= state["epoch"] < 10
    import shlex

    done = subprocess.run(shlex.split(hint), capture_output=True, text=True, timeout=600, env=env)  # the hint, as written
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {tmp_path / 'runs' / 'tiny' / 'student' / 'last.pt'} at epoch {state['epoch']}" in done.stderr
    assert len(metrics.read_text().splitlines()) == 1 + 10


def test_ema_is_what_is_scored_and_saved_and_training_itself_is_unchanged(tmp_path):
    """With ema_decay the engine scores and hands to on_best the moving average of the weights (timm's warm-up
    rate), computed here by hand from the weights after every step; the live weights train exactly as without."""
    plain, plain_model = make_engine(tmp_path / "plain", epochs=2)
    plain.fit()

    after_steps = []
    saved = []
    eng, model = make_engine(tmp_path / "ema", epochs=2, ema_decay=0.9, on_best=lambda row: saved.append(
        {k: v.detach().clone() for k, v in model.state_dict().items()}))
    step = eng._train_step

    def recording(batch):
        out = step(batch)
        after_steps.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return out

    eng._train_step = recording
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    eng.fit()
    for (k, a), b in zip(plain_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k  # EMA never feeds back into training; the live weights are restored
    want = {k: v.clone() for k, v in start.items()}
    per_epoch, at_epoch_end = len(after_steps) // len(eng.history), []
    for t, w in enumerate(after_steps):
        d = min(0.9, (1 + t) / (10 + t))
        for k in want:
            want[k] = d * want[k] + (1 - d) * w[k] if want[k].is_floating_point() else w[k].clone()
        if (t + 1) % per_epoch == 0:
            at_epoch_end.append({k: v.clone() for k, v in want.items()})
    for k in want:
        torch.testing.assert_close(eng.ema[k], want[k], rtol=1e-5, atol=1e-6)
    best_epoch = max(range(len(eng.history)), key=lambda i: eng.history[i]["val_acc"])
    # the last model handed to on_best is the average at the end of the best epoch, whichever epoch that was
    assert saved and not torch.equal(saved[-1]["net.1.weight"], model.state_dict()["net.1.weight"])
    for k in at_epoch_end[best_epoch]:
        torch.testing.assert_close(saved[-1][k], at_epoch_end[best_epoch][k], rtol=1e-5, atol=1e-6)


def test_ema_survives_an_interruption_exactly(tmp_path):
    ref, _ = make_engine(tmp_path / "ref", epochs=2, ema_decay=0.95)
    ref.fit()

    def interrupt(n):
        if n == 7:
            os.kill(os.getpid(), signal.SIGINT)

    eng, _ = make_engine(tmp_path / "run", epochs=2, hook=interrupt, ema_decay=0.95)
    with pytest.raises(Interrupted):
        eng.fit()
    again, _ = make_engine(tmp_path / "run", epochs=2, ema_decay=0.95)
    again.fit()
    for k in ref.ema:
        assert torch.equal(ref.ema[k], again.ema[k]), k
    assert [r["val_acc"] for r in again.history] == [r["val_acc"] for r in ref.history]


def test_a_checkpoint_of_another_module_layout_is_refused_with_the_rerun_command(tmp_path):
    """A last.pt whose trainable state does not fit the module (e.g. written when the online teacher was still a
    submodule of the Distiller) is refused with one clear message, not a raw load_state_dict traceback."""
    eng, _ = make_engine(tmp_path, epochs=1)
    eng.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["trainable"]["teacher.model.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "last.pt")
    eng, _ = make_engine(tmp_path, epochs=2)
    eng.rerun_cmd = "distil student --force"
    with pytest.raises(ResumeError, match="does not fit this model.*distil student --force"):
        eng.fit()


def test_live_weights_validated_every_n_epochs_with_ema(tmp_path):
    """With EMA, val_acc_live (a second validation pass) runs every ``live_every`` epochs and at the last only;
    the scored metric (the average's val_acc) is there every epoch."""
    eng, _ = make_engine(tmp_path / "live", epochs=3, ema_decay=0.9)
    eng.live_every = 2
    calls = []
    validate = eng.validate
    eng.validate = lambda: calls.append(1) or validate()
    rows = eng.fit()
    assert ["val_acc_live" in r for r in rows] == [False, True, True]
    assert all("val_acc" in r for r in rows) and len(calls) == 5
