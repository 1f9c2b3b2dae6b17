import pytest
import torch
from torch import nn

from pipeline.models import STUDENTS, BudgetError, check_budget, count_params, create_student

ZOO = [n for n in STUDENTS.names() if not STUDENTS.meta(n).get("tutorial")]  # budgeted, width-scaled students


class Exactly(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n))
        self.register_buffer("not_counted", torch.zeros(1000))

    def forward(self, x):
        return x.mean() + self.w.sum()


def test_gate_accepts_59999_and_refuses_60001():
    assert check_budget(Exactly(59_999), 60_000) == 59_999
    assert check_budget(Exactly(60_000), 60_000) == 60_000
    with pytest.raises(BudgetError, match=r"60,001 parameters \(60,001 unique, .*\), 1 over the budget of 60,000"):
        check_budget(Exactly(60_001), 60_000)


def test_count_is_on_a_copy_in_eval_mode_and_counts_shared_once():
    lin = nn.Linear(10, 10)
    m = nn.Sequential(lin, lin).train()
    assert count_params(m) == 110 and m.training


@pytest.mark.parametrize("name", ZOO)
def test_every_student_fits_the_budget_and_has_the_interface(name):
    m = create_student(name, 11).eval()
    assert count_params(m) < 60_000
    x = torch.randn(2, 3, 32, 32)
    final, maps = m.forward_intermediates(x)  # timm's interface: every stage
    assert [t.shape[1] for t in maps] == m.stage_channels and torch.equal(maps[-1], final)
    assert m.forward_intermediates(x, indices=[-2], intermediates_only=True)[0].shape == maps[-2].shape
    assert len(m.forward_intermediates(x, indices=2)[1]) == 2  # an int: the last n stages
    assert m(x).shape == (2, 11)
    assert m.forward_head(final, pre_logits=True).shape == (2, m.num_features)
    assert torch.allclose(m.forward_head(final), m(x), atol=1e-6)


@pytest.mark.parametrize("name", ZOO)
def test_width_scales_and_gate_catches_wide_students(name):
    wide = create_student(name, 11, width=2.0)
    with pytest.raises(BudgetError):
        check_budget(wide, 60_000)
    assert count_params(create_student(name, 11, width=0.5)) < count_params(create_student(name, 11))


def test_depthwise_blocks_really_are_depthwise():
    m = create_student("dwsep", 11)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    dw = [c for c in convs if c.groups == c.in_channels and c.in_channels > 1]
    pw = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(dw) == len(pw) >= 7


def test_unknown_student_and_kwarg():
    with pytest.raises(KeyError, match="Did you mean 'dwsep'"):
        create_student("dwsepp", 11)
    with pytest.raises(TypeError, match="valid student.kwargs: width, depth"):
        create_student("dwsep", 11, widht=1.0)


def test_channel_shuffle_interleaves_groups():
    from pipeline.models.blocks import channel_shuffle

    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


class SharedTwice(nn.Module):
    """A block applied twice: its weights exist once but torchsummary counts them twice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.block(self.block(self.stem(x)))
        return self.head(y.mean((2, 3)))


def test_a_module_applied_twice_is_gated_on_the_torchsummary_count():
    from pipeline.models import param_count

    m = SharedTwice()
    stem, block, head = 3 * 8 * 9 + 8, 8 * 8 * 9 + 8, 8 * 2 + 2
    c = param_count(m)
    assert (c.unique, c.applied, c.gated) == (stem + block + head, stem + 2 * block + head, stem + 2 * block + head)
    assert check_budget(m, c.applied) == c.applied
    with pytest.raises(BudgetError, match=rf"{c.applied:,} parameters \({c.unique:,} unique, {c.applied:,} counted per use"):
        check_budget(m, c.applied - 1)  # under budget by the unique count, over by torchsummary's
    for name in ZOO:  # the zoo shares nothing: both counts agree
        c = param_count(create_student(name, 11))
        assert c.unique == c.applied


@pytest.mark.parametrize("name", ["dwsep", "ghost"])
def test_largest_width_fills_the_budget(name):
    from pipeline.models import param_count
    from pipeline.models.budget import largest_width

    w, n = largest_width(lambda w: create_student(name, 11, width=w), 60_000)
    assert n == param_count(create_student(name, 11, width=w)).gated <= 60_000
    assert param_count(create_student(name, 11, width=round(w + 0.01, 4))).gated > 60_000
    assert largest_width(lambda w: create_student(name, 11, width=w), 10) is None
