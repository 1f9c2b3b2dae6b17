"""Losses on hidden states: cosine, FitNet hint, RKD, distance-metric (DM), attention transfer."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import LOSSES, Adapted


@LOSSES.register("cosine")
def cosine(*, feat_s: Adapted, feat_t: Tensor) -> Tensor:
    """Hidden-state cosine loss (CosineEmbeddingLoss with target 1): ``mean(1 - cos(s, t))``. (B, D) x2;
    ``feat_s`` is first projected to the teacher's size by a trained linear layer."""
    return (1 - F.cosine_similarity(feat_s, feat_t, dim=-1)).mean()


@LOSSES.register("fitnet")
def fitnet(*, map_s: Adapted, map_t: Tensor) -> Tensor:
    """FitNet hint: MSE between the regressed student map and the teacher map, (B, c, h, w) x2.

    ``map_s`` is ``Adapted``: the trainable regressor (by default a 1x1 conv + BN + resize, ``ADAPTERS["conv1x1"]``) is
    applied before this call; it is optimised with the student and never part of the deployed student.
    """
    return F.mse_loss(map_s, map_t)


def _pdist(e: Tensor, eps: float = 1e-12) -> Tensor:
    """(B, D) -> (B, B) Euclidean distances (0 on the diagonal)."""
    sq = e.pow(2).sum(-1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def _mean_normalised(d: Tensor) -> Tensor:
    n = len(d)
    return d / (d.sum() / max(1, n * (n - 1))).clamp_min(1e-12)


@LOSSES.register("rkd")
def rkd(*, feat_s: Tensor, feat_t: Tensor, distance_weight: float = 1.0, angle_weight: float = 2.0) -> Tensor:
    """Relational KD (Park et al., CVPR 2019): Huber loss on mean-normalised pairwise distances plus
    on the cosines of the angles of every triplet. Works across embedding sizes (B, D) vs (B, D')."""
    with torch.no_grad():
        dt = _mean_normalised(_pdist(feat_t))
    ds = _mean_normalised(_pdist(feat_s))
    loss_d = F.smooth_l1_loss(ds, dt)

    def angles(e: Tensor) -> Tensor:
        diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # (B, B, D): e_j - e_i
        return torch.bmm(diff, diff.transpose(1, 2)).view(-1)

    with torch.no_grad():
        at = angles(feat_t)
    loss_a = F.smooth_l1_loss(angles(feat_s), at)
    return distance_weight * loss_d + angle_weight * loss_a


@LOSSES.register("dm")
def dm(*, feat_s: Tensor, feat_t: Tensor) -> Tensor:
    """Distance-metric loss: MSE between the pairwise distance matrices of the L2-normalised
    embeddings of student and teacher (a batch's geometry, no Huber, no angles). (B, D) vs (B, D')."""
    return F.mse_loss(_pdist(F.normalize(feat_s, dim=-1)), _pdist(F.normalize(feat_t, dim=-1)))


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """(B, c, h, w) -> (B, h*w): channel mean of ``|f|**p``, L2-normalised."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


@LOSSES.register("at")
def at(*, map_s: Tensor, map_t: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017): mean squared difference of the
    normalised spatial attention maps. The student map is resized to the teacher's grid."""
    if map_s.shape[-2:] != map_t.shape[-2:]:
        map_s = F.interpolate(map_s, size=map_t.shape[-2:], mode="bilinear", align_corners=False)
    return (attention_map(map_s, p) - attention_map(map_t, p)).pow(2).mean()
