"""Helpers shared by the benchmark scripts: timing, tables, JSON output."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

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


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, repeat: int = 1, warmup: int = 1,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per call of each of ``fns``, one entry per round: ``warmup`` untimed calls of each, then ``rounds``
    rounds in which every function runs ``repeat`` times in turn (A A B B C C, A A B B C C, ...), so a machine whose
    speed drifts (other users of shared cores) affects every row alike. Take the median of each list. ``clock``:
    wall time, or ``time.process_time`` (this process's CPU time, all threads: what the work costs, nearly blind
    to other users of the cores when it runs one thread)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = clock()
            for _ in range(repeat):
                fn()
            times[name].append((clock() - t) / repeat)
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


def report(result: dict[str, Any]) -> None:
    """A child process's answer to ``run_children``: one ``RESULT <json>`` line on stdout."""
    print("RESULT " + json.dumps(result), flush=True)


def run_children(children: Sequence[tuple[str, list[str]]], jobs: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run each ``(label, argv)`` in its own process, ``jobs`` at once in the order given (the next starts as one
    ends), and return what each ``report``-ed, in that order. A child that fails or reports nothing stops the others
    and exits naming it: its work resumes when the same command is run again."""
    results: dict[int, dict[str, Any]] = {}
    todo = list(enumerate(children))
    running: dict[int, tuple[subprocess.Popen, Any]] = {}
    try:
        while todo or running:
            while todo and len(running) < jobs:
                i, (_, argv) = todo.pop(0)
                out = tempfile.TemporaryFile(mode="w+")  # not a pipe: a chatty child cannot block on it
                running[i] = (subprocess.Popen(argv, env=env, stdout=out, text=True), out)
            for i, (p, out) in list(running.items()):
                if p.poll() is None:
                    continue
                del running[i]
                out.seek(0)
                got = [line[7:] for line in out.read().splitlines() if line.startswith("RESULT ")]
                out.close()
                if p.returncode or not got:
                    sys.exit(f"{children[i][0]} failed (exit {p.returncode}); rerun the same command to resume it")
                results[i] = json.loads(got[-1])
                print(children[i][0], results[i], flush=True)
            time.sleep(1)
    finally:
        for p, out in running.values():
            p.terminate()
            out.close()
    return [results[i] for i in range(len(children))]
