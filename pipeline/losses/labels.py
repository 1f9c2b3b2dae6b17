"""Losses on the labels alone (no teacher): cross-entropy and focal loss. Rows with target -1
(unlabelled images distilled with ``cache.unlabeled``) are skipped; a batch without labels gives 0."""
from __future__ import annotations

from typing import Annotated, Optional

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from . import LOSSES


@LOSSES.register("ce")
def ce(*, logits_s: Tensor, target: Tensor, target_mix: Optional[Tensor] = None, lam: Optional[Tensor] = None,
       label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0) -> Tensor:
    """Cross-entropy with the labels: (B, C), (B,) -> scalar, averaged over the labelled rows.

    Mixed views (CutMix/mixup): ``lam * CE(target) + (1 - lam) * CE(target_mix)`` per row, (B,) each; a part
    whose label is unknown (-1: an unlabelled image) adds nothing (the teacher's terms still cover it)."""
    own = F.cross_entropy(logits_s, target.clamp_min(0), reduction="none", label_smoothing=label_smoothing)
    known = target >= 0
    if lam is None or target_mix is None:
        return (own * known).sum() / known.sum().clamp_min(1)
    other = F.cross_entropy(logits_s, target_mix.clamp_min(0), reduction="none", label_smoothing=label_smoothing)
    known_mix = target_mix >= 0
    per_row = lam * own * known + (1 - lam) * other * known_mix
    return per_row.sum() / (known | known_mix).sum().clamp_min(1)


@LOSSES.register("focal")
def focal(*, logits_s: Tensor, target: Tensor, gamma: Annotated[float, Field(ge=0)] = 2.0) -> Tensor:
    """Focal loss (Lin et al., ICCV 2017): ``-(1 - p_y)**gamma * log p_y``, averaged over labelled rows.
    ``gamma = 0`` is cross-entropy. (B, C), (B,) -> scalar."""
    labelled = target >= 0
    logp = F.log_softmax(logits_s, -1).gather(1, target.clamp_min(0)[:, None])[:, 0]
    loss = -((1 - logp.exp()).pow(gamma) * logp)
    return (loss * labelled).sum() / labelled.sum().clamp_min(1)
