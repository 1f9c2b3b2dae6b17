"""Run by tests/test_distributed.py, once alone and once under ``torchrun --nproc_per_node 2``: a few
engine steps of a BatchNorm-free model with SGD (whose step, unlike Adam's, scales with the gradient,
so a sum instead of a mean over ranks shows) from a fixed seed; rank 0 saves the weights and history.

    python -m tests.ddp_worker OUT.pt GLOBAL_BATCH
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline import distributed
from pipeline.data.datasets import Normalize, PlainImages, ViewImages, loader
from pipeline.data.views import sample_views
from pipeline.engine import Engine, cosine_schedule


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        self.norm = Normalize((0.5,) * 3, (0.5,) * 3)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(image))

    def forward(self, batch: dict) -> dict:
        loss = nn.functional.cross_entropy(self.logits(batch["image"]), batch["target"])
        return {"loss": loss, "ce": loss.detach()}


def main(out: str, global_batch: int) -> None:
    distributed.init()
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
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    eng = Engine(module=model, loader=dl, val_loader=val, optimizer=opt, scheduler=cosine_schedule(opt, 100),
                 epochs=2, out_dir=Path(out).parent / f"run{distributed.world()}", config={}, config_hash="h",
                 resume=False)
    eng.fit()
    if distributed.is_main():
        torch.save({"weights": model.state_dict(), "history": eng.history}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
