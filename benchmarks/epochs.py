"""Epoch ladder: how training epochs buy a student's accuracy. One student, one config, one cache; a run per rung
(``--epochs``), each its own cosine schedule from the first epoch (a 240-epoch run is not a 120-epoch run continued),
trained ``--jobs`` rungs at a time, longest first, the cores split between them (``OMP_NUM_THREADS`` = cores // jobs;
``--jobs 1``: one rung at a time with every core, so its wall time is what the student stage costs alone).

    python benchmarks/epochs.py --config configs/food10-mini.yaml --student shallow_se --epochs 60 120 240 \\
        --jobs 2 --set student.ema=0.999 student.val_live_every=5

The student is at its widest under ``student.budget`` (``widest``), as ``benchmarks/shapes.py`` has it. Each rung is
the run ``runs/<name>/epochs/<student>-<E>``; a rerun resumes an unfinished rung from its checkpoint and reuses
finished ones (the student stage's own resume). Writes benchmarks/results/epochs.json and epochs.md (``--out``).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

from common import ROOT, report, run_children, save, table

from pipeline.config import load_config
from pipeline.runner import cores as available_cores, run_stage


def rung_overrides(student: str, width: float, epochs: int, extra: list[str]) -> list[str]:
    return [f"student.model={student}", f"student.kwargs={{width: {width}}}", f"student.epochs={epochs}",
            f"student.dir=epochs/{student}-{epochs}", *extra]


def epoch_seconds(run: Path) -> tuple[float, float]:
    """Median seconds an epoch took, and the live weights' best validation accuracy ('' when not logged), from the
    rung's metrics.csv."""
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    secs = sorted(float(r["epoch_s"]) for r in rows)
    live = [float(r["val_acc_live"]) for r in rows if r.get("val_acc_live") not in (None, "")]
    return secs[len(secs) // 2], (max(live) if live else "")


def rung(config: str, student: str, width: float, epochs: int, extra: list[str]) -> dict[str, Any]:
    """Train (or resume, or reuse) one rung and read its row."""
    over = rung_overrides(student, width, epochs, extra)
    result = run_stage("student", config, over)
    epoch_s, live = epoch_seconds(load_config(config, over).run_dir / f"epochs/{student}-{epochs}")
    return {"epochs": epochs, "params": result["params"], "val_acc": round(result["val_acc"], 4), "best_live": live,
            "epoch_s": round(epoch_s, 2), "train_s": round(result["train_s"], 1),
            "train_min": round(result["train_s"] / 60, 1), "threads": os.environ.get("OMP_NUM_THREADS", "")}


def run_rungs(args: argparse.Namespace, width: float, env: dict[str, str]) -> list[dict[str, Any]]:
    """Every rung in its own process, ``args.jobs`` at once, longest first; rows in ``args.epochs`` order."""
    order = sorted(args.epochs, reverse=True)
    got = run_children([(f"rung {e}", [sys.executable, __file__, "--config", args.config, "--student", args.student,
                                       "--one", str(e), str(width), "--set", *args.set]) for e in order], args.jobs, env)
    rows = dict(zip(order, got))
    return [rows[e] for e in args.epochs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/food10-mini.yaml")
    ap.add_argument("--student", default="shallow_se")
    ap.add_argument("--epochs", type=int, nargs="+", default=[60, 120, 240, 360])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for every rung")
    ap.add_argument("--jobs", type=int, default=1, help="rungs trained at once (the cores shared between them)")
    ap.add_argument("--threads", type=int, default=0, help="threads per rung (default: cores // jobs)")
    ap.add_argument("--out", default="epochs")
    ap.add_argument("--one", nargs=2, metavar=("EPOCHS", "WIDTH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = str(Path(args.config).resolve())
    if args.one:
        return report(rung(config, args.student, float(args.one[1]), int(args.one[0]), args.set))
    from pipeline.data import open_data
    from pipeline.models.students import widest

    cfg = load_config(config, args.set)
    run_stage("teacher", config, args.set)  # reused when trained and current
    run_stage("cache", config, args.set)
    width, _ = widest(args.student, open_data(cfg).num_classes, {}, cfg.student.budget, cfg.student.img_size)
    cores = available_cores()
    threads = str(args.threads or max(1, cores // args.jobs))
    rows = run_rungs(args, width, {**os.environ, "OMP_NUM_THREADS": threads})
    cmd = " ".join(["python benchmarks/epochs.py", "--config", os.path.relpath(config, ROOT), "--student", args.student,
                    "--epochs", *map(str, args.epochs), "--jobs", str(args.jobs)]
                   + (["--threads", str(args.threads)] if args.threads else []) + (["--set", *args.set] if args.set else []))
    head = (f"Epoch ladder: `{args.student}` (width {width}, its widest under the budget), recipe "
            f"`{os.path.relpath(config, ROOT)}`{' with ' + ' '.join(args.set) if args.set else ''}; {args.jobs} rung(s) "
            f"at a time on {cores} cores, OMP_NUM_THREADS={threads} each; `{cmd}`. val_acc: the student stage's (best epoch, EMA weights when ema is set) "
            "on the validation split; best_live: the live weights' best validated epoch; epoch_s: median seconds an "
            "epoch took\n\n")
    cols = ["epochs", "params", "val_acc", "best_live", "epoch_s", "train_s", "train_min", "threads"]
    save(args.out, {"command": cmd, "student": args.student, "width": width, "config": os.path.relpath(config, ROOT),
                    "overrides": args.set, "cores": cores, "jobs": args.jobs, "rows": rows}, head + table(rows, cols))


if __name__ == "__main__":
    main()
