"""Losses on logits: CE, Hinton KD, DKD, DIST. ``standardize=True`` is logit standardisation
(Sun et al., CVPR 2024): each sample's logits are z-scored before the temperature is applied."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES


def standardize_logits(z: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, C) -> per-row z-score: ``(z - mean) / std``."""
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def _prep(logits_s: Tensor, logits_t: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    if standardize:
        return standardize_logits(logits_s), standardize_logits(logits_t)
    return logits_s, logits_t


@LOSSES.register("ce")
def ce(*, logits_s: Tensor, target: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with the labels: (B, C), (B,) -> scalar, averaged over labelled rows; rows with
    target -1 (unlabelled images) are skipped, and a batch without labels gives 0."""
    total = F.cross_entropy(logits_s, target, ignore_index=-1, reduction="sum", label_smoothing=label_smoothing)
    return total / (target >= 0).sum().clamp_min(1)


@LOSSES.register("kd")
def kd(*, logits_s: Tensor, logits_t: Tensor, temperature: float = 4.0, standardize: bool = False) -> Tensor:
    """Hinton KD: ``KL(softmax(t/T) || softmax(s/T))``, ``batchmean``, times ``T**2``. (B, C) x2 -> scalar."""
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * T * T


@LOSSES.register("dkd")
def dkd(*, logits_s: Tensor, logits_t: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0,
        temperature: float = 4.0, standardize: bool = False) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha * TCKD + beta * NCKD``.

    TCKD is the KL between binary (target, rest) distributions; NCKD the KL among non-target classes.
    Unlabelled rows (target -1) are decoupled at the teacher's top class.
    """
    target = torch.where(target < 0, logits_t.argmax(-1), target)
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    gt = F.one_hot(target, s.shape[-1]).bool()
    ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
    bs = torch.stack([(ps * gt).sum(-1), (ps * ~gt).sum(-1)], -1).clamp_min(1e-12)
    bt = torch.stack([(pt * gt).sum(-1), (pt * ~gt).sum(-1)], -1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(-1).mean() * T * T
    big = 1000.0
    ls_nt = F.log_softmax(s / T - big * gt, -1)
    lt_nt = F.log_softmax(t / T - big * gt, -1)
    nckd = (lt_nt.exp() * (lt_nt - ls_nt)).masked_fill(gt, 0).sum(-1).mean() * T * T
    return alpha * tckd + beta * nckd


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@LOSSES.register("dist")
def dist(*, logits_s: Tensor, logits_t: Tensor, beta: float = 1.0, gamma: float = 1.0,
         temperature: float = 1.0, standardize: bool = False) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): ``beta * inter + gamma * intra``, each ``1 - Pearson``, times T².

    inter: correlation of each sample's class distribution; intra: of each class across the batch.
    """
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
    inter = (1 - _pearson_rows(ps, pt)).mean()
    intra = (1 - _pearson_rows(ps.t(), pt.t())).mean()
    return (beta * inter + gamma * intra) * T * T
