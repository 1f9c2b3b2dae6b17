"""``params`` stage: the parameter count of every registered student against the budget."""
from __future__ import annotations

from typing import Any, Optional

from ..config import Config
from ..models import STUDENTS, count_params, create_student


def run(cfg: Config, config_path: Optional[str] = None) -> dict[str, Any]:
    """Print a table; the configured student (with its kwargs) is marked ``*``.

    Classes come from the data when it is there, else 11 (Food-11)."""
    from ..context import open_data
    from ..data import LayoutError

    try:
        num_classes = open_data(cfg).num_classes
    except LayoutError:
        num_classes = 11
    rows = []
    for name in STUDENTS:
        kwargs = cfg.student.kwargs if name == cfg.student.model else {}
        n = count_params(create_student(name, num_classes, **kwargs))
        rows.append({"student": name, "kwargs": kwargs, "params": n, "budget": cfg.student.budget,
                     "ok": n <= cfg.student.budget, "configured": name == cfg.student.model})
    print(f"{'':1} {'student':10} {'params':>8} {'budget':>8}  verdict   (num_classes={num_classes})")
    for r in rows:
        mark = "*" if r["configured"] else " "
        print(f"{mark} {r['student']:10} {r['params']:>8,} {r['budget']:>8,}  {'ok' if r['ok'] else 'OVER'}")
    return {"rows": rows}
