"""``params`` stage: the parameter count of every registered student against the budget."""
from __future__ import annotations

from typing import Any

from . import STAGES
from ..config import Config
from ..models import STUDENTS, create_student, param_count
from ..rundir import RunDir


@STAGES.register("params", order=12, help="parameter count of every student against the budget")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    """Print a table; the configured student (with its kwargs) is marked ``*``.

    Classes come from the data when it is there, else 11 (Food-11)."""
    from ..data import LayoutError, open_data

    try:
        num_classes = open_data(cfg).num_classes
    except LayoutError:
        num_classes = 11
    rows = []
    for name in STUDENTS:
        if STUDENTS.meta(name).get("tutorial") and name != cfg.student.model:
            continue  # the tutorials' nets: only when configured
        kwargs = cfg.student.kwargs if name == cfg.student.model else {}
        c = param_count(create_student(name, num_classes, cfg.student.img_size, **kwargs), cfg.student.img_size)
        rows.append({"student": name, "kwargs": kwargs, "params": c.gated, "unique": c.unique, "applied": c.applied,
                     "budget": cfg.student.budget, "ok": c.gated <= cfg.student.budget,
                     "configured": name == cfg.student.model})
    print(f"{'':1} {'student':16} {'unique':>8} {'applied':>8} {'budget':>8}  verdict   (num_classes={num_classes}; "
          "applied = per use, as torchsummary counts; the gate takes the larger)")
    for r in rows:
        mark = "*" if r["configured"] else " "
        print(f"{mark} {r['student']:16} {r['unique']:>8,} {r['applied']:>8,} {r['budget']:>8,}  {'ok' if r['ok'] else 'OVER'}")
    configured = next(r for r in rows if r["configured"])
    fill = _fill(cfg, num_classes)
    if fill:
        print(fill["message"])
    if not configured["ok"]:
        from ..models import BudgetError

        raise BudgetError(f"the configured student {cfg.student.model!r} {cfg.student.kwargs or ''} has "
                          f"{configured['params']:,} parameters, over the budget of {cfg.student.budget:,}; "
                          "lower student.kwargs.width or depth")
    return {"rows": rows, **({"largest_width": fill["width"], "largest_width_params": fill["params"]} if fill else {})}


def _fill(cfg: Config, num_classes: int) -> dict[str, Any] | None:
    """The largest ``width`` of the configured student under the budget (its other kwargs kept), if it has one."""
    from ..models.students import widest

    name = cfg.student.model
    try:
        found = widest(name, num_classes, cfg.student.kwargs, cfg.student.budget, cfg.student.img_size)
    except ValueError:  # no width keyword
        return None
    if found is None:
        return {"width": None, "params": None, "message": f"{name}: no width from 0.05 fits {cfg.student.budget:,}"}
    w, n = found
    return {"width": w, "params": n, "message": f"largest {name} width under the budget of {cfg.student.budget:,}: "
            f"student.kwargs.width={w} ({n:,} parameters)"}
