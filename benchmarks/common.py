"""Helpers shared by the benchmark scripts: timing, tables, JSON output."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from pipeline.cli import setup_logging  # noqa: E402

setup_logging()


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def save(name: str, payload: dict[str, Any], markdown: str) -> None:
    from pipeline.atomic import write_json, write_text

    write_json(RESULTS / f"{name}.json", payload)
    write_text(RESULTS / f"{name}.md", markdown + "\n")
    print(markdown)
    print(f"\nwrote {RESULTS / (name + '.json')} and {RESULTS / (name + '.md')}")
