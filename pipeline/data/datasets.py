"""torch Datasets over the decoded-pixel cache. Items are dicts: ``image`` uint8 (H, W, 3), ``target``
(label, -1 when unknown), ``index``, and per dataset ``view`` and teacher tensors; batches are
normalised on the device.

Every random choice is seeded from ``(seed, epoch, index)``, so an epoch is the same whether it runs
with 0 or N workers, and a resumed run replays exactly what an uninterrupted one would have seen.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..registry import Registry
from .views import render_batch, render_mixed, render_view


class _Epoch(Dataset):
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.epoch, index))


AUGMENTATIONS: Registry[Callable[..., Callable[[np.ndarray, int], np.ndarray]]] = Registry("augmentation")


@AUGMENTATIONS.register("crop_flip_jitter")
class CropFlipJitter:
    """RandomResizedCrop (area ``scale_min``..1) + horizontal flip + colour jitter (albumentations)."""

    def __init__(self, img_size: int, scale_min: float = 0.35):
        import albumentations as A  # here, not at the top: ~1.5 s that only augmenting needs

        self.tf = A.Compose([
            A.RandomResizedCrop(size=(img_size, img_size), scale=(scale_min, 1.0)),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0, p=0.5),
        ])

    def __call__(self, img: np.ndarray, seed: int) -> np.ndarray:
        self.tf.set_random_seed(seed)
        return self.tf(image=img)["image"]


@AUGMENTATIONS.register("none")
class NoAugmentation:
    """The whole image at ``img_size``, exactly as validation sees it (the tutorials' ``ToTensor`` only)."""

    def __init__(self, img_size: int, scale_min: float = 1.0):
        self.img_size = img_size

    def __call__(self, img: np.ndarray, seed: int) -> np.ndarray:
        s = img.shape[0]
        return render_view(img, np.array([0, 0, s, s, 0], dtype=np.int32), self.img_size)


class AugmentedImages(_Epoch):
    """Teacher training: ``AUGMENTATIONS[augment]`` on cached pixels. Item: ``{image, target, index}``."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, img_size: int, scale_min: float = 0.35, seed: int = 0,
                 augment: str = "crop_flip_jitter"):
        self.pixels, self.labels, self.seed = pixels, labels, seed
        self.tf = AUGMENTATIONS.get(augment)(img_size, scale_min)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        img = self.tf(np.asarray(self.pixels[i]), int(self._rng(i).integers(2**31)))
        return {"image": torch.from_numpy(np.ascontiguousarray(img)), "target": int(self.labels[i]), "index": i}


class PlainImages(Dataset):
    """Evaluation/prediction: the whole image resized to ``img_size``. Item: ``{image, target (or -1), index}``."""

    def __init__(self, pixels: np.ndarray, labels: Optional[np.ndarray], img_size: int):
        self.pixels, self.labels, self.img_size = pixels, labels, img_size
        s = pixels.shape[1]
        self.whole = np.array([0, 0, s, s, 0], dtype=np.int32)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        img = render_view(np.asarray(self.pixels[i]), self.whole, self.img_size)
        return {"image": torch.from_numpy(img), "target": -1 if self.labels is None else int(self.labels[i]), "index": i}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of ``indices``, already collated (as ``default_collate`` of the items), rendered into one array."""
        idx = np.asarray(indices, np.int64)
        whole = np.broadcast_to(self.whole, (len(self), 1, 5))
        img = render_batch(self.pixels, whole, idx, np.zeros(len(idx), np.int64), self.img_size)
        target = np.full(len(idx), -1, np.int64) if self.labels is None else np.asarray(self.labels, np.int64)[idx]
        return {"image": torch.from_numpy(img), "target": torch.from_numpy(target), "index": torch.from_numpy(idx)}


class ViewImages(_Epoch):
    """Student training: replay a recorded view per image. Item: ``{image, target, index, view, target_mix,
    lam}``, plus what ``teacher`` (a ``teachers.TeacherOutputs``) needs per item: ``teacher_image`` (the same view
    at its ``image_size``, for an online teacher) and its ``item(index, view)`` (the cached outputs of that view).

    ``views`` is (N, K, 5) from ``sample_views``; each epoch picks one of the K views per image.
    ``mixes`` (N, K, 7) from ``sample_mixes`` (or None) makes some views mixed images: ``target_mix`` is
    the partner's label (-1: none or unlabelled) and ``lam`` the image's own share (1.0 when not mixed).
    With ``fixed_view`` set, that view is always used (``0`` = whole image, for the cache stage).
    """

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, views: np.ndarray, img_size: int,
                 seed: int = 0, fixed_view: Optional[int] = None, teacher: Any = None,
                 mixes: Optional[np.ndarray] = None, fresh: bool = False):
        self.pixels, self.labels, self.views, self.mixes = pixels, labels, views, mixes
        self.fresh = fresh  # each view once per K epochs, in a per-image order (FKD-style)
        self.img_size, self.seed, self.fixed_view = img_size, seed, fixed_view
        self.teacher = teacher

    def __len__(self) -> int:
        return len(self.pixels)

    def _pick(self, i: int) -> int:
        """The view image ``i`` shows this epoch: random, or (``fresh``) the next in its own permutation."""
        n_views = self.views.shape[1]
        if not self.fresh:
            return int(self._rng(i).integers(n_views))
        cycle, pos = divmod(self.epoch, n_views)
        return int(self._order(cycle)[i, pos])

    def _order(self, cycle: int) -> np.ndarray:
        """(N, K) int: each image's view order in a ``fresh`` cycle (drawn once per cycle, then looked up)."""
        if getattr(self, "_cycle", None) != (self.seed, cycle):
            n_views = self.views.shape[1]
            self._orders = np.stack([np.random.default_rng((self.seed, cycle, i, 17)).permutation(n_views)
                                     for i in range(len(self))]) if len(self) else np.zeros((0, n_views), np.int64)
            self._cycle = (self.seed, cycle)
        return self._orders

    def picks(self, index: np.ndarray) -> np.ndarray:
        """(B,) int64: the view each of ``index`` (B,) shows this epoch (``_pick`` for a batch)."""
        index = np.asarray(index, np.int64)
        if self.fixed_view is not None:
            return np.full(len(index), self.fixed_view, np.int64)
        if self.fresh:
            cycle, pos = divmod(self.epoch, self.views.shape[1])
            return self._order(cycle)[index, pos].astype(np.int64)
        return np.array([self._pick(int(i)) for i in index], np.int64)

    def __getitem__(self, i: int):
        k = self.fixed_view if self.fixed_view is not None else self._pick(i)
        mixed = self.mixes is not None and self.mixes[i, k, 0] >= 0
        partner = int(self.mixes[i, k, 0]) if mixed else -1  # type: ignore[index]
        item: dict[str, Any] = {
            "image": torch.from_numpy(render_mixed(self.pixels, self.views, self.mixes, i, k, self.img_size)),
            "target": int(self.labels[i]), "index": i, "view": k,
            "target_mix": int(self.labels[partner]) if mixed else -1,
            "lam": float(self.mixes[i, k, 2]) if mixed else 1.0}  # type: ignore[index]
        if self.teacher is not None:
            if self.teacher.image_size is not None:
                item["teacher_image"] = torch.from_numpy(render_mixed(self.pixels, self.views, self.mixes, i, k,
                                                                      self.teacher.image_size))
            item.update({name: torch.from_numpy(v) for name, v in self.teacher.item(i, k).items()})
        return item

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of ``indices``, already collated: what ``default_collate([self[i] for i in indices])`` gives
        (same keys, dtypes and pixels), built per batch: the views rendered into one array (``render_batch``), labels
        and mix rows read by fancy-indexing, the teacher's rows in one read per output (``teacher.rows``)."""
        idx = np.asarray(indices, np.int64)
        k = self.picks(idx)
        labels = np.asarray(self.labels, np.int64)
        mixed = np.zeros(len(idx), bool) if self.mixes is None else self.mixes[idx, k, 0] >= 0
        partner = np.where(mixed, self.mixes[idx, k, 0] if self.mixes is not None else -1, 0).astype(np.int64)
        batch: dict[str, Any] = {
            "image": torch.from_numpy(render_batch(self.pixels, self.views, idx, k, self.img_size, self.mixes)),
            "target": torch.from_numpy(labels[idx]), "index": torch.from_numpy(idx), "view": torch.from_numpy(k),
            "target_mix": torch.from_numpy(np.where(mixed, labels[partner], -1)),
            "lam": torch.from_numpy(np.where(mixed, self.mixes[idx, k, 2] if self.mixes is not None else 1.0,
                                             1.0).astype(np.float64))}
        if self.teacher is not None:
            if self.teacher.image_size is not None:
                batch["teacher_image"] = torch.from_numpy(render_batch(self.pixels, self.views, idx, k,
                                                                       self.teacher.image_size, self.mixes))
            batch.update({name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in self.teacher.rows(idx, k).items()})
        return batch


class Normalize(torch.nn.Module):
    """uint8 (B, H, W, 3) -> float (B, 3, H, W), ``(x/255 - mean) / std``.

    The result keeps the NHWC memory order (it is a permuted view), i.e. it is already ``channels_last``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.permute(0, 3, 1, 2).float() - self.mean) / self.std


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation seeded by ``(seed, epoch)``: resuming at epoch e replays epoch e's order.

    With ``world`` > 1 processes, rank ``r`` takes every ``world``-th index from ``r`` (the permutation
    is padded by wrapping so every rank gets the same count): batch ``j`` of the ranks together is batch
    ``j`` of a one-process run with ``world`` times the batch size."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch, self.start = n, seed, 0, 0  # start: samples this rank already saw
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        perm = np.random.default_rng((self.seed, self.epoch, 7)).permutation(self.n)
        if self.world > 1:
            perm = np.resize(perm, len(self) * self.world)[self.rank::self.world]
        return iter(perm[self.start:].tolist())


def _stack(batch: Sequence[torch.Tensor], *, collate_fn_map: Any = None) -> torch.Tensor:
    """``default_collate``'s tensor stacking, done by numpy in the training process: ``torch.stack`` of uint8 images
    copies each one in its own parallel region, and on 2 busy cores a batch of 64 took 0.1-0.3 s (0.4 ms with one
    thread); numpy copies in one pass. In a worker (one thread, shared-memory output) torch's own stacking is kept."""
    from torch.utils.data._utils.collate import collate_tensor_fn

    if torch.utils.data.get_worker_info() is not None or any(t.requires_grad or t.device.type != "cpu" for t in batch):
        return collate_tensor_fn(batch)
    try:
        return torch.from_numpy(np.stack([t.numpy() for t in batch]))
    except TypeError:  # a dtype numpy lacks (bfloat16)
        return collate_tensor_fn(batch)


def collate(items: Any) -> Any:
    """``default_collate`` with numpy stacking (``_stack``); a batch a dataset already collated (a dict from its
    ``__getitems__``) passes through."""
    from torch.utils.data._utils.collate import collate as _collate, default_collate_fn_map

    if isinstance(items, dict):
        return items
    return _collate(items, collate_fn_map={**default_collate_fn_map, torch.Tensor: _stack})


def loader(ds: Dataset, batch_size: int, *, shuffle: bool, workers: int = 0, seed: int = 0,
           drop_last: bool = False, shard: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader with an epoch-seeded shuffle (sharded over ranks) and pinned memory when CUDA is present.
    ``shard`` without ``shuffle``: each rank reads every ``world``-th item in order (sharded evaluation)."""
    from .. import distributed

    if shuffle:
        sampler: Optional[torch.utils.data.Sampler] = EpochShuffle(len(ds), seed, distributed.rank(), distributed.world())
    else:
        sampler = distributed.ShardSampler(len(ds)) if shard else None
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=sampler,
        num_workers=workers, pin_memory=torch.cuda.is_available(), drop_last=drop_last, collate_fn=collate,
        # its own generator: making an iterator must not draw from the global RNG (exact resume)
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,  # workers are re-made each epoch so they see set_epoch()
    )
