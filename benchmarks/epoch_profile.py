"""Where a best-recipe student epoch goes, before and after the per-batch loading of issue 26 -- data (replaying
views: crop, resize, flip, CutMix; the cached teacher rows), the step (forward, CE + KD + FitNet loss, backward,
AdamW), EMA and validation -- on a reduced synthetic stand-in of configs/food10-mini-best.yaml.

The stand-in (building the real 32-view lite2 cache takes ~1 h on 2 cores): ``--images`` random uint8 photos at
144 px (food10-mini's stored size; cropping/resizing cost does not depend on content), ``--views`` recorded views
per image (``sample_views``, scale_min 0.35) of which half of views 1..K-1 are CutMix (``sample_mixes``), teacher
logits (N, K, 10) and a FitNet map (N, K, 48, 16, 16) as float16 memmaps read through the library's
``CacheReader`` / ``CachedTeacher``, the dwsep student at width 1.04, 128 px, batch 64, channels_last, EMA 0.999,
``--val`` validation photos scored through ``PlainImages`` and ``predict`` as the engine does.

"before" is the per-image path as it was: the DataLoader calls ``ViewImages.__getitem__`` per image (one OpenCV
render, one cache row read and one dict each) and ``default_collate`` stacks the items with ``torch.stack``.
"after" is the library's loader now: ``ViewImages.__getitems__`` builds the batch (views rendered into one array,
CutMix pasted in place, one cache read per output; ``PlainImages.__getitems__`` for validation) and the loader's
``collate`` stacks with numpy. Components are timed alone over one epoch's batches (the ratio column is each
against the step time); whole epochs run end to end as the engine runs them (load, step, EMA per batch; then validation of the EMA weights and, every
``--live-every`` epochs, of the live weights). Rounds are interleaved in one process.

Absolute times depend on how busy the shared cores are (run it under ``nice``); compare the ratios.

    nice -n 10 python benchmarks/epoch_profile.py [--images 1024] [--views 16] [--val 256] [--live-every 5] \
        [--threads N] [--out NAME]

Writes benchmarks/results/epoch_profile.{json,md} (``--out``: another name).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from common import interleaved, save, table
from torch.utils.data import DataLoader, Dataset, default_collate

from pipeline.data.datasets import EpochShuffle, Normalize, PlainImages, ViewImages, loader
from pipeline.data.views import sample_mixes, sample_views
from pipeline.models import create_student
from pipeline.predict import predict
from pipeline.teacher_cache import CacheReader
from pipeline.teachers import CachedTeacher

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Spec:
    name: str


class PerImage(Dataset):
    """The per-image path: the wrapped data set's items one at a time (its ``__getitems__`` hidden)."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[i]


def per_image_loader(ds: Any, batch: int, shuffle: bool) -> DataLoader:
    """The loader as it was: per-image items, ``default_collate``."""
    return DataLoader(PerImage(ds), batch_size=batch, sampler=EpochShuffle(len(ds)) if shuffle else None,
                      drop_last=shuffle, collate_fn=default_collate)


class Student(torch.nn.Module):
    """dwsep + a 1x1 adapter from its stage-3 map to the teacher map's channels (the fitnet hint)."""

    def __init__(self, map_ch: int):
        super().__init__()
        self.net = create_student("dwsep", 10, width=1.04)
        self.adapter = torch.nn.Conv2d(self.net.stage_channels[2], map_ch, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        final, maps = self.net.forward_intermediates(x, indices=[2])
        return self.net.forward_head(final), self.adapter(maps[0])


def loss_of(model: Student, norm: Normalize, batch: dict[str, Any]) -> torch.Tensor:
    """0.3 CE (mixed targets) + 0.7 KD (T=4) + 1.0 FitNet MSE, as the best recipe's losses."""
    x = norm(batch["image"]).contiguous(memory_format=torch.channels_last)
    logits, fmap = model(x)
    lam = batch["lam"].float()
    mix = batch["target_mix"].clamp(min=0)
    ce = lam * F.cross_entropy(logits, batch["target"], reduction="none") + (1 - lam) * F.cross_entropy(
        logits, mix, reduction="none") * (batch["target_mix"] >= 0)
    t = 4.0
    kd = F.kl_div(F.log_softmax(logits / t, 1), F.softmax(batch["teacher.logits"].float() / t, 1),
                  reduction="batchmean") * t * t
    tmap = batch["teacher.map"].float()
    fit = F.mse_loss(F.interpolate(fmap, size=tmap.shape[-2:], mode="bilinear", align_corners=False), tmap)
    return 0.3 * ce.mean() + 0.7 * kd + fit


class Rig:
    """The stand-in: data set and cache, both loaders, student, optimizer, EMA, validation set."""

    def __init__(self, args: argparse.Namespace, folder: Path):
        rng = np.random.default_rng(0)
        n, k, s = args.images, args.views, 144
        self.pixels = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 10, n).astype(np.int64)
        views = sample_views(n, k, s, 0.35, rng)
        mixes = sample_mixes(views, "cutmix", 0.5, 1.0, rng)
        arrays = {}
        for name, shape in {"logits": (n, k, 10), "map": (n, k, 48, 16, 16)}.items():
            mm = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float16, shape)
            for i in range(0, n, 256):
                mm[i:i + 256] = rng.standard_normal((min(256, n - i), *shape[1:])).astype(np.float16)
            mm.flush()
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
        teacher = CachedTeacher(CacheReader(folder, {}, views, arrays, None, mixes), [Spec("logits"), Spec("map")],
                                "stand-in")  # type: ignore[list-item]
        self.data = ViewImages(self.pixels, self.labels, views, args.img_size, mixes=mixes, fresh=True, teacher=teacher)
        self.loaders = {"before": per_image_loader(self.data, args.batch, True),
                        "after": loader(self.data, args.batch, shuffle=True, drop_last=True)}
        val_px = rng.integers(0, 256, (args.val, s, s, 3), dtype=np.uint8)
        val = PlainImages(val_px, rng.integers(0, 10, args.val), args.img_size)
        self.val = {"before": per_image_loader(val, args.batch * 2, False),
                    "after": loader(val, args.batch * 2, shuffle=False)}
        torch.manual_seed(0)
        self.model = Student(48).to(memory_format=torch.channels_last)
        self.norm = Normalize(MEAN, STD)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.batches = list(self.loaders["after"])  # pre-loaded: the step alone, without loading
        self.epoch = 0

    def set_epoch(self) -> None:
        self.epoch += 1
        self.data.set_epoch(self.epoch)
        for dl in self.loaders.values():
            dl.sampler.set_epoch(self.epoch)

    # ---- the components -------------------------------------------------
    def load(self, path: str) -> None:
        self.set_epoch()
        for _ in self.loaders[path]:
            pass

    def step(self, batch: dict[str, Any]) -> None:
        self.model.train()
        loss = loss_of(self.model, self.norm, batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def steps(self) -> None:
        for b in self.batches:
            self.step(b)

    def update_ema(self) -> None:  # Engine._update_ema
        cur = self.model.state_dict()
        floats = [k for k, v in self.ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.ema[k] for k in floats], [cur[k].detach() for k in floats], 1e-3)
        for k, v in self.ema.items():
            if not v.is_floating_point():
                v.copy_(cur[k])

    def emas(self) -> None:
        for _ in self.batches:
            self.update_ema()

    def validate(self, path: str) -> None:  # Engine.validate: predict over the validation loader
        predict(lambda x: self.model(x.contiguous(memory_format=torch.channels_last))[0], self.val[path], self.norm,
                torch.device("cpu"), desc=None)

    def validate_ema(self, path: str) -> None:  # Engine._averaged: swap the average in, score, swap back
        live = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        self.validate(path)
        self.model.load_state_dict(live)

    # ---- a whole epoch, as the engine runs it -------------------------------
    def epoch_run(self, path: str, validate_live: bool) -> None:
        self.set_epoch()
        for b in self.loaders[path]:
            self.step(b)
            self.update_ema()
        self.validate_ema(path)
        if validate_live:
            self.validate(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--live-every", type=int, default=5, help="student.val_live_every of the last 'after' row")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, the cores)")
    ap.add_argument("--out", default="epoch_profile", help="results name under benchmarks/results/")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(args, Path(tmp))
        parts: dict[str, Callable[[], Any]] = {
            "data before: per-image items + default_collate": lambda: rig.load("before"),
            "data after: per-batch __getitems__ + numpy collate": lambda: rig.load("after"),
            "step: forward, loss, backward, AdamW": rig.steps,
            "EMA (foreach lerp, every step)": rig.emas,
            "validation pass before (per-image collate)": lambda: rig.validate("before"),
            "validation pass after (per-batch __getitems__)": lambda: rig.validate("after"),
            "epoch before (live weights validated every epoch)": lambda: rig.epoch_run("before", True),
            "epoch after, without the live pass": lambda: rig.epoch_run("after", False),
        }
        times = interleaved(parts, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(parts)
    step = med[names[2]]
    val_after, bare = med[names[5]], med[names[7]]
    med["epoch after (val_live_every 1)"] = bare + val_after
    med[f"epoch after (val_live_every {args.live_every})"] = bare + val_after / args.live_every
    rows = [{"part": k, "s": round(v, 3), "x step": round(v / step, 2)} for k, v in med.items()]
    n_batches = len(rig.batches)
    md = (f"# Epoch profile, before and after per-batch loading (stand-in of configs/food10-mini-best.yaml)\n\n"
          f"{args.images} synthetic 144 px images, {args.views} recorded views (half of views 1..K-1 CutMix), teacher "
          f"logits + FitNet map (48x16x16) fp16 memmaps read through CachedTeacher, dwsep width 1.04 at "
          f"{args.img_size} px, batch {args.batch} ({n_batches} steps an epoch), channels_last, EMA, {args.val} "
          f"validation images through PlainImages + predict; median of {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads, 2 shared cores under nice. The last two rows are the measured 'after' "
          f"epoch plus a live validation pass every epoch, or 1/{args.live_every} of one (val_live_every "
          f"{args.live_every}).\n\n"
          + table(rows, ["part", "s", "x step"])
          + f"\n\nCommand: `nice -n 10 python benchmarks/epoch_profile.py --images {args.images} --views {args.views} "
          f"--val {args.val} --live-every {args.live_every} --rounds {args.rounds}"
          + (f" --threads {args.threads}" if args.threads else "")
          + (f" --out {args.out}" if args.out != "epoch_profile" else "") + "`")
    save(args.out, {"args": vars(args), "steps_per_epoch": n_batches, "threads": torch.get_num_threads(),
                           "median_s": med, "rounds_s": times, "x_step": {k: v / step for k, v in med.items()}}, md)


if __name__ == "__main__":
    main()
