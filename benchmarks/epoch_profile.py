"""Where a best-recipe student epoch goes: data (replaying views: crop, resize, flip, CutMix), teacher targets
(cached logits and FitNet map per item), the step (forward, CE + KD + FitNet loss, backward, AdamW), EMA and
validation (averaged and live weights), on a reduced synthetic stand-in of configs/food10-mini-best.yaml.

The stand-in (building the real 32-view lite2 cache takes ~1 h on 2 cores): ``--images`` random uint8 photos
at 144 px (food10-mini's stored size; cropping/resizing cost does not depend on content), ``--views`` recorded
views per image (``sample_views``, scale_min 0.35) of which half (views 1..K-1) are CutMix images
(``sample_mixes``), teacher logits (N, K, 10) and a FitNet map (N, K, 48, 16, 16) in float16 on disk (memmap,
as the cache keeps them), the dwsep student at width 1.04, 128 px, batch 64, channels_last, EMA 0.999,
``--val`` validation images. The library's own code renders the views (``ViewImages``, the DataLoader with
workers=0 as data.workers' default) and updates the EMA (``Engine._update_ema``'s ``torch._foreach_lerp_``).

Two things are measured, both in the same run, rounds interleaved:

* components, each timed alone over one epoch's batches; the ratio column is each against the step time;
* whole epochs, run end to end as the engine runs them (load, step, EMA, then validation), "before"
  (``val_live_every: 1``: EMA and live weights validated every epoch) and "after" (``val_live_every: N``).

Absolute times depend on how busy the shared cores are (run it under ``nice``); the ratios are the result.

    nice -n 10 python benchmarks/epoch_profile.py [--images 512] [--views 8] [--val 256] [--live-every 5]

Writes benchmarks/results/epoch_profile.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from common import save, table

from pipeline.data.datasets import Normalize, ViewImages, loader
from pipeline.data.views import sample_mixes, sample_views
from pipeline.models import create_student

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class CachedRows:
    """The cache's per-item read (``teachers.CachedTeacher.item``): one (view) row of each stored output."""

    image_size = None

    def __init__(self, outputs: dict[str, np.ndarray]):
        self.outputs = outputs

    def item(self, index: int, view: int) -> dict[str, np.ndarray]:
        return {"teacher." + n: np.array(a[index, view]) for n, a in self.outputs.items()}  # a copy, as a row read


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
    """The stand-in: data set, cache, student, optimizer, EMA and the validation set."""

    def __init__(self, args: argparse.Namespace, folder: Path):
        rng = np.random.default_rng(0)
        n, k, s = args.images, args.views, 144
        self.pixels = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        self.labels = rng.integers(0, 10, n).astype(np.int64)
        views = sample_views(n, k, s, 0.35, rng)
        mixes = sample_mixes(views, "cutmix", 0.5, 1.0, rng)
        outputs = {}
        for name, shape in {"logits": (n, k, 10), "map": (n, k, 48, 16, 16)}.items():
            mm = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.float16, shape)
            mm[:] = rng.standard_normal(shape).astype(np.float16)
            mm.flush()
            outputs[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
        self.data = ViewImages(self.pixels, self.labels, views, args.img_size, mixes=mixes, fresh=True)
        self.teacher_data = ViewImages(self.pixels, self.labels, views, args.img_size, mixes=mixes, fresh=True,
                                       teacher=CachedRows(outputs))
        self.dl = loader(self.data, args.batch, shuffle=True, drop_last=True)
        self.tdl = loader(self.teacher_data, args.batch, shuffle=True, drop_last=True)
        self.val = [torch.from_numpy(rng.integers(0, 256, (min(args.batch * 2, args.val - i), args.img_size,
                                                            args.img_size, 3), dtype=np.uint8))
                    for i in range(0, args.val, args.batch * 2)]
        torch.manual_seed(0)
        self.model = Student(48).to(memory_format=torch.channels_last)
        self.norm = Normalize(MEAN, STD)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.batches = [b for b in self.tdl]  # pre-loaded: the step alone, without loading
        self.epoch = 0

    def set_epoch(self) -> None:
        self.epoch += 1
        for ds, dl in ((self.data, self.dl), (self.teacher_data, self.tdl)):
            ds.set_epoch(self.epoch)
            dl.sampler.set_epoch(self.epoch)

    # ---- the components -------------------------------------------------
    def load_images(self) -> None:
        self.set_epoch()
        for _ in self.dl:
            pass

    def load_with_teacher(self) -> None:
        self.set_epoch()
        for _ in self.tdl:
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

    def validate_once(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            for x in self.val:
                self.model(self.norm(x).contiguous(memory_format=torch.channels_last))

    def validate_ema(self) -> None:  # Engine._averaged: swap the average in, score, swap back
        live = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        self.validate_once()
        self.model.load_state_dict(live)

    # ---- a whole epoch, as the engine runs it -------------------------------
    def epoch_run(self, validate_live: bool) -> None:
        self.set_epoch()
        for b in self.tdl:
            self.step(b)
            self.update_ema()
        self.validate_ema()
        if validate_live:
            self.validate_once()


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--val", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--live-every", type=int, default=5, help="student.val_live_every of the 'after' epoch")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(args, Path(tmp))
        parts: dict[str, Callable[[], Any]] = {
            "data: views, crop/resize, CutMix (ViewImages)": rig.load_images,
            "data + teacher rows (logits, map per item)": rig.load_with_teacher,
            "step: forward, loss, backward, AdamW": rig.steps,
            "EMA (foreach lerp, every step)": rig.emas,
            "validation: EMA weights": rig.validate_ema,
            "validation: live weights": rig.validate_once,
            "epoch before (live validated every epoch)": lambda: rig.epoch_run(True),
            f"epoch after (val_live_every {args.live_every})": lambda: rig.epoch_run(False),
        }
        times: dict[str, list[float]] = {k: [] for k in parts}
        for fn in parts.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in parts.items():
                times[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    names = list(parts)
    step = med[names[2]]
    after_key = names[7]
    # the "after" epoch validates the live weights 1 epoch in N: its share of that pass, averaged over epochs
    med[after_key] += med[names[5]] / args.live_every
    rows = [{"part": k, "s": round(v, 3), "x step": round(v / step, 2)} for k, v in med.items()]
    rows.insert(2, {"part": "  teacher rows alone (difference)", "s": round(med[names[1]] - med[names[0]], 3),
                    "x step": round((med[names[1]] - med[names[0]]) / step, 2)})
    n_batches = len(rig.batches)
    md = (f"# Epoch profile (reduced stand-in of configs/food10-mini-best.yaml)\n\n"
          f"{args.images} synthetic 144 px images, {args.views} recorded views (half of views 1..K-1 CutMix), teacher "
          f"logits + FitNet map (48x16x16) fp16 memmap, dwsep width 1.04 at {args.img_size} px, batch {args.batch} "
          f"({n_batches} steps an epoch), channels_last, EMA, {args.val} validation images; median of {args.rounds} "
          f"interleaved rounds, {torch.get_num_threads()} threads, shared cores under nice. The 'after' epoch adds "
          f"1/{args.live_every} of a live validation pass (val_live_every {args.live_every}).\n\n"
          + table(rows, ["part", "s", "x step"])
          + f"\n\nCommand: `nice -n 10 python benchmarks/epoch_profile.py --images {args.images} --views {args.views} "
          f"--val {args.val} --live-every {args.live_every} --rounds {args.rounds}`")
    save("epoch_profile", {"args": vars(args), "steps_per_epoch": n_batches, "median_s": med,
                           "rounds_s": times, "x_step": {k: v / step for k, v in med.items()}}, md)


if __name__ == "__main__":
    main()
