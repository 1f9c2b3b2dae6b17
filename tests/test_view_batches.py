"""The student's batches built per batch (``ViewImages.__getitems__``: one render into a batch array, vectorised
mixing, one cache read per output) are the per-image path's batches: same keys, dtypes, pixels and teacher rows.
The cached teacher targets were computed on the per-image rendering, so the student must see exactly those views."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from pipeline.data.datasets import EpochShuffle, Normalize, PlainImages, ViewImages, collate, loader
from pipeline.data.pixels import StackedPixels
from pipeline.data.views import MIXES, render_mixed, sample_mixes, sample_views
from pipeline.engine import Engine, adamw, cosine_schedule
from pipeline.teacher_cache import CacheReader
from pipeline.teachers import CachedTeacher

N, K, S = 12, 5, 20


def _data(kind: str, stacked: bool) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (N, S, S, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, N).astype(np.int64)
    labels[-3:] = -1  # unlabelled images (cache.unlabeled): a partner's target_mix is -1 too
    views = sample_views(N, K, S, 0.3, rng)
    mixes = sample_mixes(views, kind, 0.7, 1.0, rng)
    pixels = StackedPixels([px[:8], px[8:]]) if stacked else px
    return pixels, labels, views, mixes


def _cache(tmp: Path, views: np.ndarray, mixes: np.ndarray) -> CachedTeacher:
    """A cache whose rows say where they were read from: logits[i, v] = (i, v, ...), map[i, v] = 100 i + v."""
    logits = np.zeros((N, K, 4), np.float16)
    logits[..., 0] = np.arange(N)[:, None]
    logits[..., 1] = np.arange(K)[None, :]
    fmap = (100 * np.arange(N)[:, None] + np.arange(K)[None, :]).astype(np.float16)[:, :, None, None, None] \
        * np.ones((1, 1, 2, 3, 3), np.float16)
    arrays = {}
    for name, a in {"logits": logits, "map": fmap}.items():
        np.save(tmp / f"{name}.npy", a)
        arrays[name] = np.load(tmp / f"{name}.npy", mmap_mode="r")
    reader = CacheReader(tmp, {}, views, arrays, None, mixes)

    @dataclass
    class Spec:
        name: str

    return CachedTeacher(reader, [Spec("logits"), Spec("map")], "key")  # type: ignore[list-item]


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", MIXES.names())
@pytest.mark.parametrize("fresh", [True, False])
@pytest.mark.parametrize("size", [16, 28])  # both sides shrink (INTER_AREA) or not (INTER_LINEAR, upscaling)
def test_a_batch_is_the_per_image_items_collated(kind, fresh, size, tmp_path):
    pixels, labels, views, mixes = _data(kind, stacked=True)
    ds = ViewImages(pixels, labels, views, size, seed=3, mixes=mixes, fresh=fresh, teacher=_cache(tmp_path, views, mixes))
    idx = [7, 2, 11, 2, 0, 9, 5]  # unsorted, a repeat, both stacked parts
    for epoch in (0, 3, 6):
        ds.set_epoch(epoch)
        per_image = default_collate([ds[i] for i in idx])
        batch = ds.__getitems__(idx)
        _same(per_image, batch)
        assert (batch["lam"] < 1).any() and (batch["target_mix"] >= 0).any()  # some views are mixed
        # the alignment the cache promises: row j is the cache's row of (index j, the view image j shows)
        assert batch["teacher.logits"][:, 0].tolist() == idx
        assert torch.equal(batch["teacher.logits"][:, 1], batch["view"].float())
        assert torch.equal(batch["teacher.map"][:, 0, 0, 0], 100 * batch["index"].float() + batch["view"].float())
        assert batch["target"].tolist() == [int(labels[i]) for i in idx]
        for j, (i, v) in enumerate(zip(idx, batch["view"].tolist())):  # the pixels the teacher was cached on
            assert np.array_equal(batch["image"][j].numpy(), render_mixed(pixels, views, mixes, i, v, size))


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_yields_the_per_image_batches_epoch_after_epoch(workers, tmp_path):
    pixels, labels, views, mixes = _data("cutmix", stacked=False)
    ds = ViewImages(pixels, labels, views, 16, seed=1, mixes=mixes, fresh=True, teacher=_cache(tmp_path, views, mixes))
    dl = loader(ds, 5, shuffle=True, seed=1, drop_last=True, workers=workers)
    for epoch in range(K + 1):  # through a whole fresh cycle and into the next
        ds.set_epoch(epoch)
        dl.sampler.set_epoch(epoch)
        order = list(dl.sampler)
        for j, batch in enumerate(dl):
            _same(default_collate([ds[i] for i in order[5 * j:5 * j + 5]]), batch)


def test_fixed_view_batches_and_a_teacher_at_its_own_size():
    pixels, labels, views, mixes = _data("cutmix", stacked=False)

    class Online:  # an online teacher: the same view rendered at its size, no cached rows
        image_size = 24

        def item(self, index: int, view: int) -> dict[str, np.ndarray]:
            return {}

        def rows(self, index: np.ndarray, view: np.ndarray) -> dict[str, np.ndarray]:
            return {}

    ds = ViewImages(pixels, labels, views, 16, fixed_view=2, mixes=mixes, teacher=Online())
    batch = ds.__getitems__(list(range(N)))
    _same(default_collate([ds[i] for i in range(N)]), batch)
    assert batch["teacher_image"].shape == (N, 24, 24, 3) and (batch["view"] == 2).all()


def test_cache_rows_read_a_batch_in_the_batch_order(tmp_path):
    _, _, views, mixes = _data("cutmix", stacked=False)
    teacher = _cache(tmp_path, views, mixes)
    index, view = np.array([5, 1, 5, 0, 11]), np.array([4, 0, 2, 3, 1])
    rows = teacher.rows(index, view)
    for name in ("teacher.logits", "teacher.map"):
        assert rows[name].dtype == np.float32
        assert np.array_equal(rows[name], np.stack([teacher.item(int(i), int(v))[name] for i, v in zip(index, view)]))


def test_collate_is_default_collate_with_numpy_stacking():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (6, S, S, 3), dtype=np.uint8)
    items = [PlainImages(px, np.arange(6), 16)[i] for i in range(6)]
    a, b = collate(items), default_collate(items)
    _same(a, b)
    mixed = [{"x": torch.randn(2, 3), "y": 1.5, "z": torch.tensor([1, 2], dtype=torch.bfloat16)} for _ in range(3)]
    _same(collate(mixed), default_collate(mixed))
    done = {"image": torch.zeros(2, 4, 4, 3, dtype=torch.uint8)}
    assert collate(done) is done  # a batch the dataset already collated passes through


class _Student(torch.nn.Module):
    """A trainable module as the engine wants it, reading the mixed targets and a cached teacher output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 4))
        self.norm = Normalize((0.5,) * 3, (0.5,) * 3)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(image))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        y = self.logits(batch["image"])
        lam = batch["lam"].float()
        ce = lam * torch.nn.functional.cross_entropy(y, batch["target"].clamp(min=0), reduction="none") \
            + (1 - lam) * torch.nn.functional.cross_entropy(y, batch["target_mix"].clamp(min=0), reduction="none")
        loss = ce.mean() + 1e-3 * (y - batch["teacher.logits"]).pow(2).mean()
        return {"loss": loss}


def test_training_on_the_batched_loader_is_training_on_the_per_image_one(tmp_path):
    """Equal batches make equal runs: the same weights and validation accuracy after the same epochs."""
    pixels, labels, views, mixes = _data("cutmix", stacked=False)
    runs = []
    for name in ("per_image", "batched"):
        torch.manual_seed(0)
        folder = tmp_path / name
        folder.mkdir()
        ds = ViewImages(pixels, labels, views, 8, seed=1, mixes=mixes, fresh=True, teacher=_cache(folder, views, mixes))
        if name == "batched":
            dl = loader(ds, 4, shuffle=True, seed=1, drop_last=True)
        else:  # the per-image path: one item at a time, torch's own default_collate
            dl = torch.utils.data.DataLoader(_Items(ds), batch_size=4, drop_last=True, sampler=EpochShuffle(len(ds), 1),
                                             collate_fn=default_collate)
        model = _Student()
        opt = adamw(model.parameters(), 1e-2, 0.01)
        eng = Engine(module=model, loader=dl, val_loader=loader(PlainImages(pixels, labels, 8), 6, shuffle=False),
                     optimizer=opt, scheduler=cosine_schedule(opt, len(dl) * 3, 1), epochs=3, out_dir=folder / "run",
                     config={}, config_hash="h", ema_decay=0.9)
        eng.fit()
        runs.append((model.state_dict(), [r["val_acc"] for r in eng.history], [r["train_loss"] for r in eng.history]))
    (a, acc_a, loss_a), (b, acc_b, loss_b) = runs
    assert acc_a == acc_b and loss_a == loss_b
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _Items(torch.utils.data.Dataset):
    """A data set's items one at a time (its ``__getitems__`` hidden): the per-image path; epochs pass through."""

    def __init__(self, ds: ViewImages):
        self.ds = ds

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.ds[i]


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("size", [16, 28])
def test_whole_image_batches_are_the_per_image_items_collated(labelled, size):
    pixels, labels, _, _ = _data("cutmix", stacked=True)
    ds = PlainImages(pixels, labels if labelled else None, size)
    idx = [3, 0, 11, 8, 3]
    _same(default_collate([ds[i] for i in idx]), ds.__getitems__(idx))
    batches = list(loader(ds, 5, shuffle=False))
    _same(default_collate([ds[i] for i in range(N)]), {k: torch.cat([b[k] for b in batches]) for k in batches[0]})
