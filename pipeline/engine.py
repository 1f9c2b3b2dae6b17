"""One training engine for teacher and student.

The trainable module's ``forward(batch) -> {"loss": total, <term>: value, ...}`` holds every
trainable op (so DDP can wrap it) and its ``logits(image)`` gives the logits that validation scores.
The engine owns the loop: DDP when there are several processes, mixed precision, the schedule,
sharded validation, per-epoch metrics CSV, ``last.pt`` with RNG state, exact resume (mid-epoch
included), SIGINT/SIGTERM and NaN guards.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import yaml
from torch import Tensor, nn

from . import distributed
from .atomic import remove_stale_temps, write_text
from .checkpoint import CheckpointSaver, ResumeError, rng_state, set_rng_state
from .optim import adamw, cosine_schedule, optimization  # noqa: F401 - re-exported
from .precision import Precision
from .predict import predict
from .progress import progress

log = logging.getLogger(__name__)


class Interrupted(RuntimeError):
    """Training was stopped by a signal after saving ``last.pt``."""

    def __init__(self, msg: str, signum: int):
        super().__init__(msg)
        self.signum = signum


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN/Inf; nothing from that step was saved."""


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    return {k: v.to(dev, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@contextmanager
def _signals() -> Iterator[list[int]]:
    caught: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        caught.append(signum)

    old = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: no handlers
        pass
    try:
        yield caught
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Engine:
    """Train ``module`` (everything trainable: e.g. a ``Distiller``) over ``loader``; score ``val_loader``."""

    module: nn.Module
    loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    out_dir: Path
    config: dict[str, Any]
    config_hash: str
    on_best: Callable[[dict[str, Any]], None] = lambda row: None  # writes the deployable model (rank 0)
    best_ok: Callable[[], bool] = lambda: True  # is the deployable model there and readable?
    inputs: dict[str, str] = field(default_factory=dict)  # content keys of what the stage reads (data, teacher)
    rerun_cmd: str = "rerun with resume: never"  # starts this stage over (for refusals)
    # what differs between the config a checkpoint carries and this one ("key: old -> new"); see resumable()
    config_changes: Optional[Callable[[dict[str, Any]], list[str]]] = None
    precision: Precision = field(default_factory=lambda: Precision(device().type, None))
    metric: str = "val_acc"
    resume: bool = True
    max_steps_per_epoch: Optional[int] = None
    resume_cmd: str = "rerun the same command"
    sync_bn: bool = False
    compile: bool = False
    ema_decay: Optional[float] = None  # validate and save an exponential moving average of the weights
    live_every: int = 1  # with EMA: validate the live weights too every N epochs and at the last (0: the last only)
    # called with each epoch's metrics row after its checkpoint (a sweep's pruner; one may raise to stop the run)
    callbacks: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    # where this run's config.yaml and metrics.csv go: ``out_dir``, or ``out_dir/pending/`` while a finished model
    # (and the record that describes it) sits in ``out_dir`` until this run's model replaces it (RunDir.finish)
    record_dir: Optional[Path] = None

    def __post_init__(self) -> None:
        self.record_dir = Path(self.record_dir or self.out_dir)
        self.saver = CheckpointSaver(self.out_dir)
        self.best_state: Optional[dict[str, Tensor]] = None  # the trainable state of the best epoch (CPU)
        self.dev = device()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.scaled)
        self.epoch, self.batch, self.global_step, self.best = 0, 0, 0, -math.inf
        self.epochs_run = 0  # epochs trained by this process (0: everything came from last.pt)
        # what the steps call: ``module`` itself, or wrapped by DDP and/or torch.compile at the first step (``module`` stays the
        # raw trainable net: state, EMA, validation and checkpoints read it)
        self.wrapped: nn.Module = self.module
        self._ready = False  # wrapped yet (see _wrap)
        self.ema: Optional[dict[str, Tensor]] = None
        if self.ema_decay is not None:
            self.ema = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    # ---- state -----------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "trainable": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "best": self.best, "best_trainable": self.best_state, "history": self.history, "rng": rng_state(),
            "config": self.config, "config_hash": self.config_hash, "inputs": self.inputs, "ema": self.ema,
        }

    def _restore(self, s: dict[str, Any]) -> None:
        try:
            self.module.load_state_dict(s["trainable"])
        except RuntimeError as exc:  # another module layout: e.g. saved when the online teacher was a submodule
            first = str(exc).strip().splitlines()[0][:200]
            raise ResumeError(f"{self.saver.last} does not fit this model ({first}); start this stage over with: "
                              f"{self.rerun_cmd}") from None
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        self.epoch, self.batch, self.global_step = s["epoch"], s["batch"], s["global_step"]
        self.best, self.history = s["best"], list(s["history"])
        self.best_state = s.get("best_trainable")
        if self.ema is not None:
            if s.get("ema") is None:
                raise ResumeError(f"{self.saver.last} was saved without an EMA of the weights; start over: {self.rerun_cmd}")
            self.ema = {k: v.to(self.ema[k].device) for k, v in s["ema"].items()}
        set_rng_state(s["rng"])

    # ---- EMA of the weights ------------------------------------------------
    def ema_rate(self, step: int) -> float:
        """Decay for the update after the optimiser step that ``step`` steps preceded: ``min(decay, (1 + step) /
        (10 + step))``, timm's warm-up,
        so early averages are not dominated by the random initialisation."""
        return min(float(self.ema_decay or 0.0), (1 + step) / (10 + step))

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``ema = d * ema + (1 - d) * weights`` for floating-point entries; integer buffers are copied."""
        assert self.ema is not None
        d = self.ema_rate(self.global_step)
        cur = self.module.state_dict()
        floats = [k for k, v in self.ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.ema[k] for k in floats], [cur[k].detach() for k in floats], 1.0 - d)
        for k, v in self.ema.items():
            if not v.is_floating_point():
                v.copy_(cur[k])

    @contextmanager
    def _averaged(self) -> Iterator[None]:
        """Within the block the module holds the EMA weights (when EMA is on); the live ones come back after."""
        if self.ema is None:
            yield
            return
        live = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.ema)
        try:
            yield
        finally:
            self.module.load_state_dict(live)

    def _write_metrics(self) -> None:
        if not self.history:
            return
        keys = list(dict.fromkeys(k for row in self.history for k in row))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        write_text(self.record_dir / "metrics.csv", buf.getvalue())

    def _set_epoch(self, epoch: int, start: int) -> None:
        for obj in (self.loader.dataset, self.loader.sampler):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        if hasattr(self.loader.sampler, "start"):
            self.loader.sampler.start = start

    def _what_is_saved(self) -> str:
        if self.saver.last.is_file():
            return f"{self.saver.last} holds the state after epoch {self.epoch} batch {self.batch}" if self.history or self.batch \
                else f"{self.saver.last} holds the last saved state"
        return "nothing has been saved yet (no last.pt)"

    # ---- loop -----------------------------------------------------------
    def fit(self) -> list[dict[str, Any]]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            remove_stale_temps(self.out_dir)  # a killed checkpoint write leaves .last.pt.*.tmp
        if self.resume:
            s = self.saver.resumable(self.config_hash, self.inputs, self.rerun_cmd, self.config_changes)
            if s is not None:
                self._restore(s)
                log.info("resumed from %s at epoch %d batch %d", self.saver.last, self.epoch, self.batch)
        if distributed.is_main():  # only now that the checkpoint was accepted: a refused run leaves the old record
            self.record_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.record_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        self.wrapped = self.module  # wrapped at the first step (_wrap), once the loss can say what it reaches
        self._ready = False
        with _signals() as caught:
            while self.epoch < self.epochs:
                self._run_epoch(caught)
        if distributed.is_main() and self.history and not self.best_ok():
            self._rewrite_best()
        return self.history

    def _rewrite_best(self) -> None:
        """The deployable model went missing or bad after training (deleted, truncated): write it again
        from the best epoch's state that ``last.pt`` carries."""
        if self.best_state is None:
            return
        best_row = max(self.history, key=lambda r: r.get(self.metric, -math.inf))
        now = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.load_state_dict(self.best_state)
        try:
            self.on_best(best_row)
        finally:
            self.module.load_state_dict(now)
        log.warning("the deployable model of %s was missing or unreadable: rewritten from the best epoch (%d) in %s",
                    self.out_dir, best_row["epoch"], self.saver.last)

    def _unreached(self, batch: dict[str, Any]) -> list[str]:
        """Trainable parameters that the loss of ``batch`` does not reach (e.g. a head no loss term reads), found by
        one forward whose graph is walked, not run backward; buffers (BatchNorm statistics) and RNG states are put
        back, so the step that follows is the one a run without the probe takes."""
        buffers = [b.detach().clone() for b in self.module.buffers()]
        rng = rng_state()
        try:
            with self.precision.autocast():
                loss = self.module(to_device(batch, self.dev))["loss"]
            return distributed.unreached(loss, self.module)
        finally:
            with torch.no_grad():
                for b, saved in zip(self.module.buffers(), buffers):
                    b.copy_(saved)
            set_rng_state(rng)

    def _wrap(self, batch: dict[str, Any]) -> None:
        """DDP (several processes) and ``torch.compile`` around ``module``. DDP's ``find_unused_parameters`` only
        when the loss leaves some trainable parameter without a gradient on some rank: without it DDP would stop at
        the next step; with it DDP walks the graph after every forward."""
        find_unused = False
        if distributed.world() > 1:
            unused = self._unreached(batch)
            find_unused = distributed.all_sum([float(len(unused))])[0] > 0
            if unused:
                log.info("%d trainable parameters get no gradient from the loss (%s): DDP finds unused parameters",
                         len(unused), ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else ""))
        self.wrapped = distributed.wrap(self.module, self.sync_bn, find_unused)
        if self.compile:
            self.wrapped = torch.compile(self.wrapped)
        self._ready = True

    def _average_running_stats(self) -> None:
        """BatchNorm running statistics, live and in the EMA, averaged over ranks: each rank's follow only its shard
        (DDP averages gradients, not buffers). Before validation and before every checkpoint (timm's distribute_bn)."""
        if distributed.world() > 1:
            distributed.average_(distributed.running_stats(self.module.named_buffers())
                                 + distributed.running_stats((self.ema or {}).items()))

    def _train_step(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        batch = {**batch, "epoch": torch.tensor(float(self.epoch))}  # for losses with a schedule (DKD warm-up)
        if not self._ready:
            self._wrap(batch)
        with self.precision.autocast():
            terms = self.wrapped(to_device(batch, self.dev))
        loss = terms["loss"]
        if not distributed.all_true(bool(torch.isfinite(loss.detach()))):
            vals = {k: float(v.detach()) for k, v in terms.items()}
            raise NonFiniteLoss(
                f"non-finite loss at epoch {self.epoch} batch {self.batch} (step {self.global_step}): {vals}. "
                f"Nothing from this step was saved; {self._what_is_saved()}. "
                "Try a lower lr, amp: off, or check the inputs and loss weights"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self._update_ema()
        return terms

    def validate(self) -> dict[str, float]:
        """Top-1 accuracy of ``module.logits`` on the validation shard of every rank, summed over ranks."""
        self.module.eval()
        logits, target = predict(self.module.logits, self.val_loader, None, self.dev,
                                 autocast=self.precision.autocast, desc=None)
        correct, total = distributed.all_sum([int((logits.argmax(1) == target).sum()) if len(target) else 0, len(target)])
        return {"val_acc": correct / total if total else float("nan")}

    def _run_epoch(self, caught: list[int]) -> None:
        self.module.train()
        bs = self.loader.batch_size or 1
        self._set_epoch(self.epoch, self.batch * bs)
        sums: dict[str, float] = {}
        n_seen, t0 = 0, time.time()
        n_batches = len(self.loader) if self.max_steps_per_epoch is None else min(len(self.loader), self.max_steps_per_epoch)
        bar = progress(self.loader, f"{self.out_dir.name} epoch {self.epoch + 1}/{self.epochs}", total=n_batches - self.batch)
        for batch in bar:
            if self.batch >= n_batches:
                break
            terms = self._train_step(batch)
            self.batch += 1
            self.global_step += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n_seen += 1
            if not distributed.all_true(not caught):  # every rank stops at the same step (the average below is collective)
                signum = caught[0] if caught else signal.SIGTERM
                self._average_running_stats()
                if distributed.is_main():
                    self.saver.save(self.state())
                raise Interrupted(
                    f"interrupted by signal {signum}: saved {self.saver.last} at epoch {self.epoch} batch {self.batch}. "
                    f"Resume with: {self.resume_cmd}", signum)
        self._average_running_stats()
        with self._averaged():
            metrics = self.validate()
        last = self.epoch + 1 >= self.epochs
        if self.ema is not None and (last or (self.live_every and (self.epoch + 1) % self.live_every == 0)):
            metrics["val_acc_live"] = self.validate()["val_acc"]  # the live weights too: what the average adds
        keys = sorted(sums)
        means = distributed.all_sum([sums[k] / max(1, n_seen) for k in keys])
        row = {"epoch": self.epoch + 1, **{f"train_{k}": v / distributed.world() for k, v in zip(keys, means)},
               **metrics, "lr": self.optimizer.param_groups[0]["lr"], "epoch_s": round(time.time() - t0, 2)}
        row = {"epoch": row.pop("epoch"), "train_loss": row.pop("train_loss"), **row}
        self.history.append(row)
        score = metrics.get(self.metric, -math.inf)
        is_best = score > self.best
        self.best = max(self.best, score)
        self.epoch, self.batch = self.epoch + 1, 0
        self.epochs_run += 1
        if distributed.is_main():
            if is_best:
                with self._averaged():  # the weights that were scored are the ones saved
                    self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()}
                    self.on_best(row)
            self.saver.save(self.state())
            self._write_metrics()
        distributed.barrier()
        log.info("epoch %d/%d %s", self.epoch, self.epochs,
                 " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch"))
        for fn in self.callbacks:
            fn(row)
