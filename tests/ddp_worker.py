"""Run by tests/test_distributed.py, once alone and once under ``torchrun --nproc_per_node 2``: a few engine
steps from a fixed seed with SGD (whose step, unlike Adam's, scales with the gradient, so a sum instead of a mean
over ranks shows); every rank saves its initial and trained state, its EMA and the history.

    python -m tests.ddp_worker OUT_DIR GLOBAL_BATCH [KIND[,KIND...]] [RANKS]
    python -m tests.ddp_worker --cli "STAGE --config ..." ["STAGE --config ..." ...]

Each KIND, in turn and from the same seed, writes ``OUT_DIR/KIND.pt`` (rank r > 0: ``KIND.pt.rank<r>``); one
launch serves several tests (each process start imports torch: seconds). ``plain``: a BatchNorm-free net. ``bn``: a
BatchNorm student with an EMA of the weights; run alone with ``RANKS`` > 1 its BatchNorm takes the batch statistics
of each rank's share of the global batch (what DDP without SyncBatchNorm computes) and its running statistics average
theirs. ``unused``: a net with a layer no loss reaches.

``--cli``: ``distil`` (``pipeline.cli.main``) with each argument's words, one after the other in the same processes,
as ``distil all`` runs its stages; exits with the first non-zero code.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import distributed
from pipeline.data.datasets import Normalize, PlainImages, ViewImages, loader
from pipeline.data.views import sample_views
from pipeline.engine import Engine, cosine_schedule


class RankBatchNorm(nn.BatchNorm2d):
    """One process standing in for ``ranks`` DDP ranks: rank ``r`` holds images ``r, r + ranks, ...`` of each global
    batch (``EpochShuffle``); each share is normalised by its own statistics, and the running statistics move by the
    mean of the shares' (each rank's running statistics move by its own; the engine averages them)."""

    def __init__(self, c: int, ranks: int):
        super().__init__(c)
        self.ranks = ranks

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.ranks == 1:
            return super().forward(x)
        self.num_batches_tracked.add_(1)
        outs, means, vars_ = [], [], []
        for r in range(self.ranks):
            mean, var = self.running_mean.clone(), self.running_var.clone()
            outs.append(F.batch_norm(x[r::self.ranks], mean, var, self.weight, self.bias, True, self.momentum, self.eps))
            means.append(mean)
            vars_.append(var)
        with torch.no_grad():
            self.running_mean.copy_(torch.stack(means).mean(0))
            self.running_var.copy_(torch.stack(vars_).mean(0))
        return torch.stack(outs, 1).flatten(0, 1)  # back in the batch's order: image k * ranks + r


class Net(nn.Module):
    def __init__(self, kind: str = "plain", ranks: int = 1) -> None:
        super().__init__()
        bn = [RankBatchNorm(4, ranks)] if kind == "bn" else []
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), *bn, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        if kind == "unused":
            self.aux = nn.Linear(4 * 6 * 6, 3)  # an auxiliary head that no loss term reads
        self.norm = Normalize((0.5,) * 3, (0.5,) * 3)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(image))

    def forward(self, batch: dict) -> dict:
        loss = nn.functional.cross_entropy(self.logits(batch["image"]), batch["target"])
        return {"loss": loss, "ce": loss.detach()}


def run(out_dir: Path, global_batch: int, kind: str = "plain", ranks: int = 0) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, s = 48, 12
    px = rng.integers(0, 255, (n, s, s, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, n)
    views = sample_views(n, 3, s, 0.5, rng)
    local = global_batch // distributed.world()
    dl = loader(ViewImages(px, labels, views, 8, seed=1), local, shuffle=True, seed=1, drop_last=True)
    val = loader(PlainImages(px[:13], labels[:13], 8), 4, shuffle=False, shard=True)  # 13: uneven shards
    model = Net(kind, ranks or 1)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5 if kind != "bn" else 0.2)
    eng = Engine(module=model, loader=dl, val_loader=val, optimizer=opt, scheduler=cosine_schedule(opt, 100),
                 epochs=2, out_dir=out_dir / f"{kind}-run{distributed.world()}", config={}, config_hash="h",
                 resume=False, ema_decay=0.9 if kind == "bn" else None)
    eng.fit()
    path = out_dir / f"{kind}.pt"
    path = path if distributed.is_main() else Path(f"{path}.rank{distributed.rank()}")
    torch.save({"initial": initial, "weights": model.state_dict(), "ema": eng.ema, "history": eng.history,
                "find_unused": bool(getattr(eng.wrapped, "find_unused_parameters", False))}, path)


def main(out: str, global_batch: int, kinds: str = "plain", ranks: int = 0) -> None:
    distributed.init()
    for kind in kinds.split(","):
        run(Path(out), global_batch, kind, ranks)


def cli(commands: list[str]) -> int:
    from pipeline.cli import main as distil

    for command in commands:
        code = distil(shlex.split(command))
        if code:
            return code
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--cli":
        sys.exit(cli(sys.argv[2:]))
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4], *(int(a) for a in sys.argv[4:5]))
