"""Losses on logits: Hinton KD, DKD, DIST. ``standardize=True`` is logit standardisation
(Sun et al., CVPR 2024): each sample's logits are z-scored before the temperature is applied."""
from __future__ import annotations

from typing import Annotated, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from . import LOSSES

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


def standardize_logits(z: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, C) -> per-row z-score: ``(z - mean) / std``."""
    return (z - z.mean(-1, keepdim=True)) / (z.std(-1, keepdim=True) + eps)


def _prep(logits_s: Tensor, logits_t: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    if standardize:
        return standardize_logits(logits_s), standardize_logits(logits_t)
    return logits_s, logits_t


@LOSSES.register("kd")
def kd(*, logits_s: Tensor, logits_t: Tensor, temperature: Positive = 4.0, standardize: bool = False,
       probabilities_as_input: bool = False) -> Tensor:
    """Hinton KD: ``KL(softmax(t/T) || softmax(s/T))``, ``batchmean``, times ``T**2``. (B, C) x2 -> scalar.

    ``probabilities_as_input`` reproduces a common mistake (the MNIST KD notes): ``nn.KLDivLoss`` given the
    student's *probabilities* where it expects log-probabilities, and no ``T**2``:
    ``sum(p_t * (log p_t - p_s)) / B``. That is not a divergence (it is not 0 when the student equals the
    teacher) and its gradient, ``-p_t / B`` per student probability, only pushes probability towards the
    classes the teacher likes, without ever matching the teacher's distribution. Only for reproducing them."""
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    if probabilities_as_input:
        return F.kl_div(F.softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction="batchmean", log_target=True) * T * T


def _binary_log_probs(z: Tensor, gt: Tensor) -> Tensor:
    """(B, C) logits, (B, C) bool target mask -> (B, 2) ``[log p_target, log p_rest]``, exact for any logit gap."""
    lse = torch.logsumexp(z, -1)
    log_target = (z * gt).sum(-1) - lse
    log_rest = torch.logsumexp(z.masked_fill(gt, float("-inf")), -1) - lse
    return torch.stack([log_target, log_rest], -1)


@LOSSES.register("dkd")
def dkd(*, logits_s: Tensor, logits_t: Tensor, target: Tensor, epoch: Optional[Tensor] = None, alpha: NonNegative = 1.0,
        beta: NonNegative = 8.0, temperature: Positive = 4.0, standardize: bool = False,
        warmup: NonNegative = 0.0) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022): ``alpha * TCKD + beta * NCKD``.

    TCKD is the KL between binary (target, rest) distributions, computed in log space with ``logsumexp``
    so that it stays exact (value and gradient) for confidently wrong students; NCKD is the KL among the
    non-target classes. Unlabelled rows (target -1) are decoupled at the teacher's top class.
    ``warmup`` (epochs, the authors use 20): the loss is scaled by ``min((epoch + 1) / warmup, 1)`` with
    ``epoch`` the 0-based epoch index, as in the authors' code; 0 turns it off.
    """
    target = torch.where(target < 0, logits_t.argmax(-1), target)
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    gt = F.one_hot(target, s.shape[-1]).bool()
    ls_b, lt_b = _binary_log_probs(s / T, gt), _binary_log_probs(t / T, gt)
    tckd = (lt_b.exp() * (lt_b - ls_b)).sum(-1).mean() * T * T
    big = 1000.0  # the authors' mask: the target logit drops out of the non-target softmax
    ls_nt = F.log_softmax(s / T - big * gt, -1)
    lt_nt = F.log_softmax(t / T - big * gt, -1)
    nckd = (lt_nt.exp() * (lt_nt - ls_nt)).masked_fill(gt, 0).sum(-1).mean() * T * T
    scale = torch.clamp((epoch.to(s.dtype) + 1) / warmup, max=1.0) if warmup > 0 and epoch is not None else 1.0
    return scale * (alpha * tckd + beta * nckd)


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@LOSSES.register("dist")
def dist(*, logits_s: Tensor, logits_t: Tensor, beta: NonNegative = 1.0, gamma: NonNegative = 1.0,
         temperature: Positive = 1.0, standardize: bool = False) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022): ``beta * inter + gamma * intra``, each ``1 - Pearson``, times T².

    inter: correlation of each sample's class distribution; intra: of each class across the batch.
    """
    s, t = _prep(logits_s, logits_t, standardize)
    T = temperature
    ps, pt = F.softmax(s / T, -1), F.softmax(t / T, -1)
    inter = (1 - _pearson_rows(ps, pt)).mean()
    intra = (1 - _pearson_rows(ps.t(), pt.t())).mean()
    return (beta * inter + gamma * intra) * T * T
