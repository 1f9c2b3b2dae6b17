"""``distil compare``: a Markdown table of runs from their ``summary.json``, each student accuracy with its 95%
interval, and which runs the validation set cannot tell from the best."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

from .confidence import indistinguishable, interval_of

HEADER = ["| run | teacher | teacher acc | student | params | student acc | 95% interval | vs best "
          "| train s (teacher/cache/student) |",
          "|---|---|---|---|---|---|---|---|---|"]


def _read(run: str) -> tuple[Optional[dict[str, Any]], str]:
    """A run's summary (None when missing or malformed) and, if so, the note that replaces its row."""
    p = Path(run) / "summary.json"
    if not p.is_file():
        return None, "(no summary.json)"
    try:
        s = json.loads(p.read_text())
        t, c, st = s.get("teacher", {}), s.get("cache", {}), s.get("student", {})
        if not all(isinstance(x, dict) for x in (t, c, st)):
            raise TypeError("teacher, cache and student must be mappings")
        for sec, x in (("teacher", t), ("student", st)):  # numbers, not text that float() would also read
            if not isinstance(x.get("val_acc", 0.0), (int, float)):
                raise TypeError(f"{sec}.val_acc is {str(x.get('val_acc'))[:40]!r}, not a number")
        interval_of(st)
    except (ValueError, AttributeError, TypeError, OSError) as exc:
        logging.getLogger(__name__).warning("skipping %s: malformed summary.json (%s)", p, exc)
        return None, "(malformed summary.json)"
    return s, ""


def _fmt(ci: Optional[tuple[float, float]]) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-"


def compare(runs: Sequence[str]) -> str:
    """The table of ``runs`` (run folders); ``vs best``: ``best``, ``~best`` (the 95% interval of its difference
    from the best run holds 0: the validation images cannot tell them apart, see confidence.difference) or blank."""
    read = [_read(r) for r in runs]
    accs = [float(s["student"].get("val_acc", float("nan"))) if s else float("nan") for s, _ in read]
    cis = [interval_of(s["student"]) if s else None for s, _ in read]
    marks = indistinguishable(cis, accs)
    rows = list(HEADER)
    for r, (s, note), acc, ci, mark in zip(runs, read, accs, cis, marks):
        if s is None:
            rows.append(f"| {r} | {note} | | | | | | | |")
            continue
        t, c, st = s.get("teacher", {}), s.get("cache", {}), s.get("student", {})
        rows.append(f"| {s.get('name', r)} | {t.get('name', '-')} | {t.get('val_acc', float('nan')):.4f} "
                    f"| {st.get('name', '-')} | {st.get('params', '-')} | {acc:.4f} | {_fmt(ci)} | {mark} "
                    f"| {t.get('train_s', '-')}/{c.get('wall_s', '-')}/{st.get('train_s', '-')} |")
    return "\n".join(rows)
