"""Every registered loss: finite, differentiable, zero where it must be; values checked by hand."""
import math

import numpy as np
import pytest
import torch

from pipeline.losses import LOSSES, loss_inputs, teacher_fields

torch.manual_seed(0)
B, C, D = 6, 5, 8
FIXED = {
    "logits_s": torch.randn(B, C), "logits_t": torch.randn(B, C), "target": torch.tensor([0, 1, 2, 3, 4, 0]),
    "epoch": torch.tensor(3.0), "target_mix": torch.full((B,), -1), "lam": torch.ones(B),
    "feat_s": torch.randn(B, D), "feat_t": torch.randn(B, D), "map_s": torch.randn(B, 4, 4, 4), "map_t": torch.randn(B, 4, 4, 4),
}


def args_for(name, **override):
    return {k: (override.get(k, FIXED[k])).clone().requires_grad_(k.endswith("_s") and FIXED[k].is_floating_point())
            for k in loss_inputs(name)}


@pytest.mark.parametrize("name", LOSSES.names())
def test_finite_scalar_with_gradient(name):
    kw = args_for(name)
    out = LOSSES.get(name)(**kw)
    assert out.ndim == 0 and torch.isfinite(out)
    out.backward()
    grads = [v.grad for k, v in kw.items() if k.endswith("_s")]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if teacher_fields(n)])
def test_zero_when_student_equals_teacher(name):
    same = {"logits_s": FIXED["logits_t"], "feat_s": FIXED["feat_t"], "map_s": FIXED["map_t"]}
    assert LOSSES.get(name)(**args_for(name, **same)).item() == pytest.approx(0.0, abs=1e-5)


def np_softmax(z, T=1.0):
    e = np.exp(z / T - (z / T).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_ce_uniform_logits_is_log_c():
    out = LOSSES.get("ce")(logits_s=torch.zeros(3, 4), target=torch.tensor([0, 1, 3]))
    assert out.item() == pytest.approx(math.log(4))


UNLABELLED = torch.tensor([0, -1, 2, -1, 4, 0])  # -1: an unlabelled image (cache.unlabeled)


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if "target" in loss_inputs(n)])
def test_unlabelled_rows_give_finite_loss_and_gradient(name):
    for target in (UNLABELLED, torch.full((B,), -1)):
        kw = args_for(name, target=target)
        out = LOSSES.get(name)(**kw)
        assert out.ndim == 0 and torch.isfinite(out)
        out.backward()
        assert torch.isfinite(kw["logits_s"].grad).all()


def test_ce_skips_unlabelled_rows():
    keep = UNLABELLED >= 0
    got = LOSSES.get("ce")(logits_s=FIXED["logits_s"], target=UNLABELLED)
    want = LOSSES.get("ce")(logits_s=FIXED["logits_s"][keep], target=UNLABELLED[keep])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert LOSSES.get("ce")(logits_s=FIXED["logits_s"], target=torch.full((B,), -1)).item() == 0.0


def test_dkd_decouples_unlabelled_rows_at_the_teachers_top_class():
    top = FIXED["logits_t"].argmax(-1)
    filled = torch.where(UNLABELLED < 0, top, UNLABELLED)
    a = LOSSES.get("dkd")(logits_s=FIXED["logits_s"], logits_t=FIXED["logits_t"], target=UNLABELLED)
    b = LOSSES.get("dkd")(logits_s=FIXED["logits_s"], logits_t=FIXED["logits_t"], target=filled)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert not torch.equal(filled, UNLABELLED.clamp_min(0))  # the test exercises a real substitution


def test_kd_matches_hand_formula():
    s, t = FIXED["logits_s"].numpy(), FIXED["logits_t"].numpy()
    T = 4.0
    ps, pt = np_softmax(s, T), np_softmax(t, T)
    want = (pt * (np.log(pt) - np.log(ps))).sum() / B * T * T  # batchmean, x T^2
    got = LOSSES.get("kd")(logits_s=FIXED["logits_s"], logits_t=FIXED["logits_t"], temperature=T).item()
    assert got == pytest.approx(want, rel=1e-5)


def test_kd_two_class_by_hand():
    # student logits (0, 0) -> p_s = (.5, .5); teacher (log 3, 0) -> p_t = (.75, .25); T = 1
    got = LOSSES.get("kd")(logits_s=torch.zeros(1, 2), logits_t=torch.tensor([[math.log(3.0), 0.0]]), temperature=1.0)
    want = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_logit_standardisation_makes_kd_scale_invariant():
    s, t = FIXED["logits_s"], FIXED["logits_t"]
    a = LOSSES.get("kd")(logits_s=s, logits_t=t, standardize=True)
    b = LOSSES.get("kd")(logits_s=3 * s + 1, logits_t=t * 0.5 - 2, standardize=True)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    assert LOSSES.get("kd")(logits_s=s, logits_t=t).item() != pytest.approx(a.item(), rel=1e-3)


def test_dkd_matches_hand_formula():
    s, t, y = FIXED["logits_s"].numpy(), FIXED["logits_t"].numpy(), FIXED["target"].numpy()
    T, alpha, beta = 4.0, 1.0, 8.0
    ps, pt = np_softmax(s, T), np_softmax(t, T)
    tc = nc = 0.0
    for i in range(B):
        g = y[i]
        bs = np.array([ps[i, g], 1 - ps[i, g]])
        bt = np.array([pt[i, g], 1 - pt[i, g]])
        tc += (bt * np.log(bt / bs)).sum()
        m = np.arange(C) != g
        qs, qt = np_softmax(s[i, m], T), np_softmax(t[i, m], T)
        nc += (qt * np.log(qt / qs)).sum()
    want = (alpha * tc + beta * nc) / B * T * T
    got = LOSSES.get("dkd")(logits_s=FIXED["logits_s"], logits_t=FIXED["logits_t"], target=FIXED["target"]).item()
    assert got == pytest.approx(want, rel=1e-4)


def test_dist_matches_hand_formula():
    ps, pt = np_softmax(FIXED["logits_s"].numpy()), np_softmax(FIXED["logits_t"].numpy())
    inter = np.mean([1 - np.corrcoef(ps[i], pt[i])[0, 1] for i in range(B)])
    intra = np.mean([1 - np.corrcoef(ps[:, j], pt[:, j])[0, 1] for j in range(C)])
    got = LOSSES.get("dist")(logits_s=FIXED["logits_s"], logits_t=FIXED["logits_t"]).item()
    assert got == pytest.approx(inter + intra, rel=1e-4)


def test_cosine_by_hand():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    # cos = 0 and 1 -> mean(1 - cos) = (1 + 0) / 2
    assert LOSSES.get("cosine")(feat_s=s, feat_t=t).item() == pytest.approx(0.5)
    ref = torch.nn.CosineEmbeddingLoss()(FIXED["feat_s"], FIXED["feat_t"], torch.ones(B))
    assert LOSSES.get("cosine")(feat_s=FIXED["feat_s"], feat_t=FIXED["feat_t"]).item() == pytest.approx(ref.item(), rel=1e-6)


def test_fitnet_is_mse():
    assert LOSSES.get("fitnet")(map_s=torch.zeros(1, 1, 2, 2), map_t=torch.full((1, 1, 2, 2), 3.0)).item() == pytest.approx(9.0)


def test_rkd_is_scale_invariant_and_by_hand():
    s, t = FIXED["feat_s"], FIXED["feat_t"]
    assert LOSSES.get("rkd")(feat_s=5 * s, feat_t=t).item() == pytest.approx(LOSSES.get("rkd")(feat_s=s, feat_t=t).item(), rel=1e-4)
    # three points on a line vs a right triangle, distance term only
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    da = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], float)
    db = np.array([[0, 1, 1], [1, 0, math.sqrt(2)], [1, math.sqrt(2), 0]], float)
    da, db = da / (da.sum() / 6), db / (db.sum() / 6)
    diff = np.abs(da - db)
    huber = np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean()
    got = LOSSES.get("rkd")(feat_s=a, feat_t=b, distance_weight=1.0, angle_weight=0.0).item()
    assert got == pytest.approx(huber, rel=1e-4)


def test_dm_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # unit vectors 90 degrees apart: distance sqrt(2)
    t = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # same direction: distance 0
    # off-diagonal entries differ by sqrt(2): MSE over the 2x2 matrix = 2 * 2 / 4 = 1
    assert LOSSES.get("dm")(feat_s=s, feat_t=t).item() == pytest.approx(1.0, rel=1e-4)


def test_at_by_hand():
    s = torch.zeros(1, 1, 1, 2)
    s[0, 0, 0, 0] = 1.0  # attention (1, 0)
    t = torch.ones(1, 1, 1, 2)  # attention (1, 1)/sqrt 2
    want = ((1 - 1 / math.sqrt(2)) ** 2 + (0 - 1 / math.sqrt(2)) ** 2) / 2
    assert LOSSES.get("at")(map_s=s, map_t=t).item() == pytest.approx(want, rel=1e-5)
    # different grids: the student map is resized to the teacher's
    assert torch.isfinite(LOSSES.get("at")(map_s=torch.randn(2, 3, 8, 8), map_t=torch.randn(2, 5, 4, 4)))


def test_registry_is_complete():
    assert {"ce", "kd", "cosine", "fitnet", "rkd", "dm", "at", "dkd", "dist"} <= set(LOSSES.names())


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_matches_its_definition_in_float64(gamma):
    s = FIXED["logits_s"].double().requires_grad_()
    got = LOSSES.get("focal")(logits_s=s, target=UNLABELLED, gamma=gamma)
    p = torch.softmax(s, -1)
    rows = [-(1 - p[i, y]) ** gamma * torch.log(p[i, y]) for i, y in enumerate(UNLABELLED.tolist()) if y >= 0]
    want = torch.stack(rows).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    g1, = torch.autograd.grad(got, s)
    g2, = torch.autograd.grad(want, s)
    torch.testing.assert_close(g1, g2)
    if gamma == 0:
        assert got.item() == pytest.approx(LOSSES.get("ce")(logits_s=s, target=UNLABELLED).item(), rel=1e-10)


def dkd_reference(s, t, y, alpha=1.0, beta=8.0, T=4.0):
    """The authors' DKD (mdistiller), written out in float64: softmax, masks, log. Exact in float64 for
    logit gaps far beyond float32's range."""
    gt = torch.nn.functional.one_hot(y, s.shape[-1]).bool()
    ps, pt = torch.softmax(s / T, -1), torch.softmax(t / T, -1)
    bs = torch.stack([(ps * gt).sum(-1), (ps * ~gt).sum(-1)], -1)
    bt = torch.stack([(pt * gt).sum(-1), (pt * ~gt).sum(-1)], -1)
    tckd = (bt * (bt.log() - bs.log())).sum(-1).mean() * T * T
    ls_nt = torch.log_softmax(s / T - 1000.0 * gt, -1)
    lt_nt = torch.log_softmax(t / T - 1000.0 * gt, -1)
    nckd = (lt_nt.exp() * (lt_nt - ls_nt)).masked_fill(gt, 0).sum(-1).mean() * T * T
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize("gap", [50.0, 120.0, 200.0])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_agrees_with_float64_reference_on_extreme_logits(gap, T):
    """Confidently wrong students (the target logit ``gap`` below the rest): TCKD must not vanish, and
    its gradient must push hardest there. The float32 loss matches the float64 reference."""
    g = torch.Generator().manual_seed(1)
    s = torch.randn(B, C, generator=g, dtype=torch.float64)
    t = torch.randn(B, C, generator=g, dtype=torch.float64)
    y = FIXED["target"]
    s[torch.arange(B), y] -= gap          # student: the target class far below
    t[torch.arange(B), y] += 5.0          # teacher: confident and right
    s64 = s.clone().requires_grad_()
    want = dkd_reference(s64, t, y, T=T)
    g_want, = torch.autograd.grad(want, s64)
    s32 = s.float().requires_grad_()
    got = LOSSES.get("dkd")(logits_s=s32, logits_t=t.float(), target=y, temperature=T)
    g_got, = torch.autograd.grad(got, s32)
    assert torch.isfinite(want) and got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(g_got.double(), g_want, rtol=1e-4, atol=1e-6)
    assert (g_got[torch.arange(B), y] < 0).all()  # raise the target logit


def test_dkd_warmup_scales_linearly_like_the_authors():
    kw = {k: FIXED[k] for k in ("logits_s", "logits_t", "target")}
    full = LOSSES.get("dkd")(**kw).item()
    for epoch, share in ((0, 1 / 20), (9, 10 / 20), (19, 1.0), (50, 1.0)):
        got = LOSSES.get("dkd")(**kw, epoch=torch.tensor(float(epoch)), warmup=20.0).item()
        assert got == pytest.approx(share * full, rel=1e-6)
    assert LOSSES.get("dkd")(**kw, epoch=torch.tensor(0.0)).item() == pytest.approx(full)  # warmup 0: off


def test_kd_probabilities_as_input_reproduces_kldivloss_given_probabilities():
    """The MNIST notes' loss: nn.KLDivLoss(reduction='batchmean')(softmax(s/T), softmax(t/T)), in float64, with
    its gradient; it is not zero when the student equals the teacher (the correct KD is)."""
    s64 = FIXED["logits_s"].double().requires_grad_(True)
    t64 = FIXED["logits_t"].double()
    T = 5.0
    ref = torch.nn.KLDivLoss(reduction="batchmean")(torch.softmax(s64 / T, 1), torch.softmax(t64 / T, 1))
    ref.backward()
    s = FIXED["logits_s"].clone().requires_grad_(True)
    got = LOSSES.get("kd")(logits_s=s, logits_t=FIXED["logits_t"], temperature=T, probabilities_as_input=True)
    got.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(s.grad.double(), s64.grad, rtol=1e-4, atol=1e-7)
    same = FIXED["logits_t"]
    assert LOSSES.get("kd")(logits_s=same, logits_t=same, temperature=T, probabilities_as_input=True).abs().item() > 0.1
    assert LOSSES.get("kd")(logits_s=same, logits_t=same, temperature=T).abs().item() < 1e-6


def test_ce_with_mixed_labels_matches_its_definition_in_float64():
    """CutMix/mixup rows: lam * CE(own) + (1 - lam) * CE(partner); an unlabelled part adds nothing."""
    s = torch.randn(B, C, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, -1, 0])
    mix = torch.tensor([4, -1, 1, 3, 2, -1])
    lam = torch.tensor([0.3, 1.0, 0.75, 0.5, 0.6, 1.0], dtype=torch.float64)
    logp = torch.log_softmax(s, -1)
    rows, n = 0.0, 0
    for i in range(B):
        part = 0.0
        if target[i] >= 0:
            part -= lam[i] * logp[i, target[i]]
        if mix[i] >= 0:
            part -= (1 - lam[i]) * logp[i, mix[i]]
        rows += part
        n += int(target[i] >= 0 or mix[i] >= 0)
    got = LOSSES.get("ce")(logits_s=s.float(), target=target, target_mix=mix, lam=lam.float())
    assert got.item() == pytest.approx(float(rows / n), rel=1e-5)
    plain = LOSSES.get("ce")(logits_s=s.float(), target=target)
    same = LOSSES.get("ce")(logits_s=s.float(), target=target, target_mix=torch.full((B,), -1), lam=torch.ones(B))
    assert same.item() == pytest.approx(plain.item(), rel=1e-6)


def test_two_hint_terms_read_their_own_layers_through_their_own_regressors():
    """Terms bind loss arguments to field specs once: two fitnet terms at teacher layers 2 and 3 read map@2 and
    map@3 (and the student's maps at their own stages) through separate regressors sized for each pair."""
    from torch import nn

    from pipeline.config import load_config
    from pipeline.losses.criterion import Criterion
    from pipeline.losses.terms import bind_terms, teacher_specs

    cfg = load_config("configs/demo.yaml", ["student.losses=[{name: ce}, {name: fitnet, layer: 2, student_layer: -3}, "
                                            "{name: fitnet, layer: 3, weight: 2.0}]"])
    terms = bind_terms(cfg)
    assert [s.name for s in teacher_specs(cfg, terms)] == ["logits", "map@2", "map@3"]
    assert [[s.name for s in t.specs("s")] for t in terms] == [["logits"], ["map@-3"], ["map@-2"]]
    crit = Criterion(terms, {"logits": 5, "map@-3": 4, "map@-2": 6}, {"logits": 5, "map@2": 8, "map@3": 16})
    convs = {k: next(m for m in a.modules() if isinstance(m, nn.Conv2d)) for k, a in crit.adapters.items()}
    assert {k: (c.in_channels, c.out_channels) for k, c in convs.items()} == {"1_map": (4, 8), "2_map": (6, 16)}
    student = {"logits": torch.randn(B, 5), "map@-3": torch.randn(B, 4, 4, 4), "map@-2": torch.randn(B, 6, 2, 2)}
    teacher = {"map@2": torch.randn(B, 8, 4, 4), "map@3": torch.randn(B, 16, 2, 2)}
    out = crit(student, teacher, {"target": FIXED["target"], "target_mix": FIXED["target_mix"], "lam": FIXED["lam"]})
    assert set(out) == {"loss", "ce", "fitnet", "fitnet_2"}
    torch.testing.assert_close(out["loss"].detach(), out["ce"] + out["fitnet"] + 2.0 * out["fitnet_2"])
