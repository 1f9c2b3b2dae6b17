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


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, repeat: int = 1, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, one entry per round: ``warmup`` untimed calls of each, then ``rounds``
    rounds in which every function runs ``repeat`` times in turn (A A B B C C, A A B B C C, ...), so a machine whose
    speed drifts (other users of shared cores) affects every row alike. Take the median of each list."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(repeat):
                fn()
            times[name].append((time.perf_counter() - t) / repeat)
    return times


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
