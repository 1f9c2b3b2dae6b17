"""Students at equal budget and training time: each student at its widest under ``student.budget``
(``widest``) trains for the epochs its own measured step time buys in ``--seconds`` (``pipeline/trial_time.py``, as ``distil sweep`` does with ``trial_seconds``), once per seed,
``--jobs`` at a time sharing the cores (``OMP_NUM_THREADS`` = cores // jobs, timed that way too). Every row's
step time is measured first, one row at a time, before any trains, so all rows are timed alike.

    python benchmarks/shapes.py --config configs/food10-mini.yaml --seconds 300 --seeds 0 1 \\
        --students dwsep ghost shaped_food --jobs 2

Seed 0 is the config's own run and cache; seed S > 0 is the run ``<name>-seedS`` on the same teacher
(``teacher_from``) with its own cache, since the recorded views are seeded. Each student's width and epochs are fixed
in a plan file (one per student, shared by its seeds) before anything trains, so a rerun resumes or reuses it instead of re-timing it. Writes
benchmarks/results/shapes.json and shapes.md (``--out`` for another name).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import ROOT, report, run_children, save, table

from pipeline.atomic import write_json
from pipeline.config import load_config
from pipeline.runner import cores as available_cores, run_stage


def seed_overrides(cfg_name: str, seed: int) -> list[str]:
    return [] if seed == 0 else [f"name={cfg_name}-seed{seed}", f"teacher_from={cfg_name}", f"seed={seed}"]


def row_overrides(config: str, student: str, seed: int, seconds: float) -> tuple[list[str], Path]:
    """The overrides of one (student, seed) row, without its width and epochs, and its plan file (one per
    student, in the seed-0 run: every seed of a student trains the same epochs)."""
    base = seed_overrides(load_config(config).name, seed)
    folder = f"shapes{seconds:g}s/{student}"
    over = base + [f"student.model={student}", "student.kwargs={}", f"student.dir={folder}"]
    return over, load_config(config).run_dir / f"{folder}.plan.json"


def plan(config: str, student: str, seed: int, seconds: float) -> dict[str, Any]:
    """One row's plan: the student at its widest under the budget (``widest``) and the epochs its measured steps
    buy in ``seconds``; written to the plan file on first use and read from it after."""
    from pipeline.data import open_data
    from pipeline.models import create_student
    from pipeline.models.students import widest
    from pipeline.trial_time import trial_epochs

    over, plan_path = row_overrides(config, student, seed, seconds)
    if plan_path.is_file():
        return json.loads(plan_path.read_text())
    cfg = load_config(config, over)
    layout = open_data(cfg)
    width, _ = widest(student, layout.num_classes, {}, cfg.student.budget, cfg.student.img_size)
    cfg = load_config(config, over + [f"student.kwargs={{width: {width}}}"])
    model = create_student(student, layout.num_classes, cfg.student.img_size, **cfg.student.kwargs)
    epochs, step_s, steps = trial_epochs(cfg, model, layout, seconds)
    got = {"width": width, "epochs": epochs, "step_s": step_s, "steps_per_epoch": steps,
           "threads": os.environ.get("OMP_NUM_THREADS")}
    write_json(plan_path, got)
    return got


def one(config: str, student: str, seed: int, seconds: float) -> dict[str, Any]:
    """Train (or resume, or reuse) one planned row (the student stage gates and counts its parameters)."""
    got = plan(config, student, seed, seconds)
    over, _ = row_overrides(config, student, seed, seconds)
    over = over + [f"student.kwargs={{width: {got['width']}}}", f"student.epochs={got['epochs']}"]
    result = run_stage("student", config, over)
    return {"student": student, "seed": seed, "width": got["width"], "params": result["params"], "epochs": got["epochs"],
            "step_s": got["step_s"], "val_acc": result["val_acc"], "train_s": result["train_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/food10-mini.yaml")
    ap.add_argument("--seconds", type=float, default=300.0, help="training time each student is given")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--students", nargs="+", default=["dwsep", "ghost"])
    ap.add_argument("--jobs", type=int, default=2, help="rows trained at once (the cores shared between them)")
    ap.add_argument("--out", default="shapes")
    ap.add_argument("--one", nargs=2, metavar=("STUDENT", "SEED"), help=argparse.SUPPRESS)
    ap.add_argument("--plan-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    config = str(Path(args.config).resolve())
    if args.one:
        fn = plan if args.plan_only else one
        return report(fn(config, args.one[0], int(args.one[1]), args.seconds))
    name = load_config(config).name
    for seed in args.seeds:  # the teacher once, each seed's cache once, with every core
        run_stage("teacher", config, seed_overrides(name, 0))
        run_stage("cache", config, seed_overrides(name, seed))
    cores = available_cores()
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // args.jobs))}
    todo = [(s, seed) for seed in args.seeds for s in args.students]
    for s, seed in todo:  # every student timed first, one at a time on a machine doing nothing else, so each row's
        # epochs come from the same conditions (training later shares the cores; that changes wall time, not epochs)
        if not row_overrides(config, s, seed, args.seconds)[1].is_file():
            subprocess.run([sys.executable, __file__, "--config", config, "--seconds", str(args.seconds), "--one", s,
                            str(seed), "--plan-only"], env=env, check=True, stdout=subprocess.DEVNULL)
    rows = run_children([(f"row {s} seed {seed}", [sys.executable, __file__, "--config", config, "--seconds",
                                                   str(args.seconds), "--one", s, str(seed)]) for s, seed in todo],
                        args.jobs, env)
    summary = []
    for s in args.students:
        runs = [r for r in rows if r["student"] == s]
        accs = [r["val_acc"] for r in runs]
        summary.append({"student": s, "width": runs[0]["width"], "params": runs[0]["params"], "step_ms": round(runs[0]["step_s"] * 1e3, 1),
                        "epochs": runs[0]["epochs"], "val_acc_mean": round(statistics.fmean(accs), 4),
                        "val_acc_seeds": " / ".join(f"{a:.4f}" for a in accs),
                        "train_s_mean": round(statistics.fmean(r["train_s"] for r in runs), 1)})
    cmd = " ".join(["python benchmarks/shapes.py", "--config", os.path.relpath(config, ROOT), "--seconds",
                    f"{args.seconds:g}", "--seeds", *map(str, args.seeds), "--students", *args.students,
                    "--jobs", str(args.jobs)])
    head = (f"Students at the budget (each at its widest) and equal training time ({args.seconds:g} s of measured steps each, {args.jobs} at once on "
            f"{cores} cores, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); `{cmd}`; val_acc on the validation split, "
            "the student stage's val_acc (its best epoch, EMA weights when the config sets ema)\n\n")
    cols = ["student", "width", "params", "step_ms", "epochs", "val_acc_mean", "val_acc_seeds", "train_s_mean"]
    save(args.out, {"command": cmd, "seconds": args.seconds, "rows": rows, "summary": summary}, head + table(summary, cols))


if __name__ == "__main__":
    main()
