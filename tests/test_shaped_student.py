"""The ``shaped`` student: its shape is student.kwargs, and the gate counts it before it is built."""
from __future__ import annotations

import pytest
import torch

from pipeline.models import STUDENTS, BudgetError, check_count, create_student, param_count, predicted_params
from pipeline.models.students import check_student_kwargs

SHAPES = [
    {},
    {"channels": [16, 32], "blocks": 2, "strides": [2, 2], "width": 1.3},
    {"expand": [1, 2, 3, 2], "se": [False, True, False, True], "kernels": [3, 5, 3, 7], "head": 128},
    {"channels": [8, 24, 48], "blocks": [1, 3, 1], "expand": 0.5, "se": True, "stem": 8, "depth": 1.5},
    {"expand": 2.0, "kernels": 5, "head": 64, "width": 0.75},
]


@pytest.mark.parametrize("kwargs", SHAPES, ids=range(len(SHAPES)))
def test_analytic_count_equals_built_model(kwargs: dict) -> None:
    counted = predicted_params("shaped", 11, kwargs)
    c = param_count(create_student("shaped", 11, **kwargs), 32)
    assert counted == c.unique == c.applied


@pytest.mark.parametrize("kwargs", SHAPES[:3], ids=range(3))
def test_shaped_has_the_student_interface(kwargs: dict) -> None:
    net = create_student("shaped", 5, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    final, maps = net.forward_intermediates(x, indices=[-1])
    assert net(x).shape == (2, 5)
    assert net.forward_head(final, pre_logits=True).shape == (2, net.num_features)
    assert maps[0].shape[1] == net.stage_channels[-1]


def test_gate_counts_before_building() -> None:
    big = {"channels": [64, 128, 256, 512], "blocks": 3}
    counted = predicted_params("shaped", 11, big)
    assert counted > 60_000
    with pytest.raises(BudgetError, match="over the budget of 60,000"):
        check_count(counted, 60_000, "student 'shaped'")
    assert predicted_params("dwsep", 11, {"width": 1.0}) is None  # no analytic count: gated after building


@pytest.mark.parametrize("bad, key", [({"blocks": [1, 2]}, "blocks"), ({"kernels": 4}, "kernels"),
                                      ({"channels": []}, "channels"), ({"depht": 2}, "depht")])
def test_bad_shape_fails_at_config_load(bad: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        check_student_kwargs("shaped", bad)


NAMED = [n for n in STUDENTS.names() if STUDENTS.meta(n).get("shape")]  # fixed shapes (register_shape)


@pytest.mark.parametrize("name", NAMED)
def test_a_named_shape_is_the_shaped_student_and_fills_the_budget_by_default(name):
    shape = STUDENTS.meta(name)["shape"]
    m = create_student(name, 11)
    same = create_student("shaped", 11, **shape, width=m_width(name))
    assert [tuple(p.shape) for p in m.parameters()] == [tuple(p.shape) for p in same.parameters()]
    n = param_count(m, 32).gated
    assert predicted_params(name, 11, {}) == n <= 60_000
    assert param_count(create_student(name, 11, width=round(m_width(name) + 0.01, 4)), 32).gated > 60_000
    assert predicted_params(name, 11, {"width": 0.5}) == param_count(create_student(name, 11, width=0.5), 32).gated


def m_width(name):
    import inspect

    return inspect.signature(STUDENTS.get(name)).parameters["width"].default
