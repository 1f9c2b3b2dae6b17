"""``distil submissions --competition SLUG``: the competition's submissions on Kaggle (date, description, public
score, status) beside the local runs they came from, as a Markdown table.

A submission is matched to a run by its description: exactly, against the uploads the submit stage recorded
(``runs/<name>/submit/uploads.json``: that upload's validation accuracy and interval), or else by the
``run=<name>`` the description carries (``runs/<name>/summary.json``: the run's current submit/student
accuracy). ``public in val 95%``: whether the public score lies inside the run's validation interval (a score
far outside it: the public split and the validation images disagree more than chance explains); ``vs best
(val)``: ``best``/``~best`` as in ``distil compare``, among the submissions' runs (the shortlist to choose from).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from .confidence import indistinguishable, interval_of

RUN = re.compile(r"\brun=(\S+)")
HEADER = ["| date (UTC) | description | public score | status | run | val acc | val 95% interval | public in val 95% "
          "| vs best (val) |",
          "|---|---|---|---|---|---|---|---|---|"]


def _json(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def local_uploads(runs_dir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every recorded upload of the runs under ``runs_dir``: description -> (run name, upload record)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for p in sorted(Path(runs_dir).glob("*/submit/uploads.json")):
        records = _json(p)
        for r in records if isinstance(records, list) else []:
            if isinstance(r, dict) and isinstance(r.get("description"), str):
                out[r["description"]] = (p.parent.parent.name, r)
    return out


def match(desc: str, uploads: dict[str, tuple[str, dict[str, Any]]], runs_dir: Path
          ) -> tuple[str, Optional[float], Optional[tuple[float, float]]]:
    """``(run label, val acc, 95% interval)`` of the local run a submission's description names."""
    if desc in uploads:
        run, rec = uploads[desc]
        return run, rec.get("val_acc"), interval_of(rec)
    m = RUN.search(desc)
    if not m:
        return "-", None, None
    name = m.group(1)
    summary = _json(Path(runs_dir) / name / "summary.json")
    if not isinstance(summary, dict):
        return f"{name} (not found here)", None, None
    section = next((s for s in (summary.get("submit"), summary.get("student")) if isinstance(s, dict) and "val_acc" in s), None)
    if section is None:
        return f"{name} (by name)", None, None
    return f"{name} (by name)", section.get("val_acc"), interval_of(section)


def _inside(score: str, ci: Optional[tuple[float, float]]) -> str:
    try:
        v = float(score)
    except ValueError:
        return "-"
    if ci is None:
        return "-"
    return "yes" if ci[0] <= v <= ci[1] else ("no, above" if v > ci[1] else "no, below")


def table(submissions: list[dict[str, Any]], runs_dir: Path) -> str:
    """The Markdown table of ``submissions`` (from ``kaggle_client.submissions``) beside the runs in ``runs_dir``."""
    uploads = local_uploads(runs_dir)
    matched = [match(s.get("description", ""), uploads, runs_dir) for s in submissions]
    marks = indistinguishable([ci for _, _, ci in matched],
                              [float(acc) if isinstance(acc, (int, float)) else float("nan") for _, acc, _ in matched])
    rows = list(HEADER)
    for s, (run, acc, ci), mark in zip(submissions, matched, marks):
        desc = s.get("description", "")
        score = str(s.get("public_score") or "")
        rows.append("| " + " | ".join([
            s.get("date", ""), desc.replace("|", "\\|"), score or "-", s.get("status", ""), run,
            f"{acc:.4f}" if isinstance(acc, (int, float)) else "-",
            f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "-", _inside(score, ci), mark]) + " |")
    if not submissions:
        rows.append("| (no submissions yet) | | | | | | | | |")
    return "\n".join(rows)


def show(competition: str, runs_dir: Path) -> str:
    """List ``competition``'s submissions with the kaggle client and put them beside the local runs."""
    from .kaggle_client import submissions

    return table(submissions(competition), runs_dir)
