"""Recipe ladder: from the best method of benchmarks/methods.py to the best student recipe, one change
per row (more recorded views, unlabelled images, resolution, schedule), then the other student designs
at the 96 px, 60-epoch rung with unlabelled images (configs/food10-mini-ladder.yaml). Same seed throughout; the teacher is
the food10-mini one (``teacher_from``). ``--levers``: the current best recipe (configs/food10-mini-best.yaml) whole, then
rows that take one lever back.

    python benchmarks/recipe.py --data ../shared/datasets/food10-mini [--only "+ 128 px"]
    python benchmarks/recipe.py --levers    # the best recipe, then rows that take one lever back (levers.{json,md})

Writes benchmarks/results/recipe.json and recipe.md (row, student, params, val acc, share of the
teacher, train wall time). Rows already trained are reused (each run resumes from its checkpoint).
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, save, table

from pipeline.runner import run_stage
from pipeline.config import load_config

BASE = "configs/food10-mini.yaml"
LADDER_CFG = "configs/food10-mini-ladder.yaml"  # the ladder's last rung (the previous best recipe)
BEST = "configs/food10-mini-best.yaml"
LABELLED = ["cache.unlabeled=false"]
START = "kd + fitnet"  # the best row of benchmarks/results/methods.json (8 views, 96 px, 60 epochs): the ladder's start
# (label, config, overrides); each row adds one change to the row above it
LADDER: list[tuple[str, str, list[str]]] = [
    ("+ 16 views", LADDER_CFG, LABELLED + ["student.img_size=96", "student.epochs=60"]),
    ("+ unlabelled eval images", LADDER_CFG, ["student.img_size=96", "student.epochs=60"]),
    ("+ 128 px", LADDER_CFG, ["student.epochs=60"]),
    ("+ 120 epochs (final recipe)", LADDER_CFG, []),
]
STUDENTS = ["mbv2_se", "shuffle", "ghost"]
# --levers: this round's recipe (configs/food10-mini-best.yaml: lite2 teacher, 32 CutMix views through ONNX Runtime with
# fp16 logits, a fresh view each epoch, EMA, width 1.04) run whole, as `make teacher student submit` would, then rows
# that take one lever back at the cheaper rung (96 px, 60 epochs) on the same cache, to compare with the ladder's
# "+ unlabelled eval images" row (0.6853, lite0 teacher, 16 plain views). EMA's share comes from the same runs:
# metrics.csv logs the live weights' accuracy (val_acc_live) beside the averaged one.
CHEAP = ["student.img_size=96", "student.epochs=60"]
LEVERS: list[tuple[str, list[str]]] = [
    ("all levers, 96 px, 60 epochs", CHEAP),
    ("  - fresh views (random view each epoch)", CHEAP + ["student.view_sampling=random"]),
    # the ladder's best design at its 96 px rung, for the full 120 epochs: ghost's step costs ~2.5x dwsep's at the
    # same pixels (benchmarks/student_speed.py), so 96 px costs it about what 128 px costs dwsep
    ("ghost student, 96 px, 120 epochs", ["student.model=ghost", "student.img_size=96", "student.channels_last=false"]),
]


def slug(label: str) -> str:
    return "recipe-" + "-".join("".join(c if c.isalnum() else " " for c in label).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/food10-mini")
    ap.add_argument("--only", nargs="*", default=None, help="row labels to run (default: all)")
    ap.add_argument("--levers", action="store_true", help="run the LEVERS rows instead of the ladder")
    args = ap.parse_args()
    if args.levers:
        return levers(args)
    data = [f"data.root={args.data}"]
    t0 = time.time()
    run_stage("teacher", str(ROOT / BASE), data)  # the shared teacher (reused when trained)
    run_stage("cache", str(ROOT / LADDER_CFG), data)  # the ladder's cache (reused when built)
    teacher = json.loads((load_config(ROOT / BASE, data).run_dir / "summary.json").read_text())["teacher"]
    rows = [{"row": f"teacher ({teacher['name']})", "params": teacher["params"], "val_acc": teacher["val_acc"],
             "train_wall_s": teacher.get("train_s", "")}]
    methods = json.loads((RESULTS / "methods.json").read_text())
    start = next(r for r in methods["rows"] if r["method"] == START)
    rows.append({"row": f"{START} (methods.json)", "student": methods["student"], "img_size": methods["student_img_size"],
                 "views": load_config(ROOT / methods["config"], data).cache.views, "unlabeled": False, "epochs": methods["epochs"], "params": start["params"],
                 "val_acc": start["val_acc"], "of_teacher": start["of_teacher"], "train_wall_s": start["train_wall_s"]})
    # the other designs at the "+ unlabelled eval images" rung (96 px, 60 epochs), beside its dwsep row: ~8 min
    # each on 2 CPUs, against ~33 min at the final recipe
    plan = LADDER + [(f"student {s} (96 px, 60 epochs)", LADDER_CFG, ["student.img_size=96", "student.epochs=60",
                                                              f"student.model={s}"]) for s in STUDENTS]
    for label, config, over in plan:
        if args.only and label not in args.only:
            continue
        over = data + ([] if any(o.startswith("student.dir=") for o in over) else [f"student.dir={slug(label)}"]) + over
        cfg = load_config(ROOT / config, over)
        res = run_stage("student", str(ROOT / config), over)
        rows.append({"row": label, "student": cfg.student.model, "img_size": cfg.student.img_size,
                     "views": cfg.cache.views, "unlabeled": cfg.cache.unlabeled, "epochs": cfg.student.epochs,
                     "params": res["params"], "val_acc": res["val_acc"], "train_wall_s": res["train_s"],
                     "of_teacher": round(res["val_acc"] / teacher["val_acc"], 3)})
        print(f"{label:40s} val_acc={res['val_acc']:.4f} wall={res['wall_s']}s", flush=True)
    payload = {"data": args.data, "base": BASE, "recipe": LADDER_CFG, "seed": load_config(ROOT / LADDER_CFG, data).seed,
               "rows": rows, "total_wall_s": round(time.time() - t0, 1)}
    md = (f"Data `{args.data}` (validation split); losses 0.3*ce + 0.7*kd(T=4) + 1*fitnet throughout; "
          f"recipe `{LADDER_CFG}`\n\n"
          + table(rows, ["row", "student", "params", "img_size", "views", "unlabeled", "epochs", "val_acc",
                         "of_teacher", "train_wall_s"]))
    save("recipe", payload, md)


def _stage_row(label: str, cfg: Any, res: dict[str, Any], metrics: Path, teacher_acc: float) -> dict[str, Any]:
    """One student run as a table row; ``no_ema`` is the live weights' accuracy at the epoch the EMA scored best."""
    rows = list(csv.DictReader(metrics.open()))
    best = max(rows, key=lambda r: float(r["val_acc"]))
    return {"row": label, "student": cfg.student.model, "params": res["params"], "img_size": cfg.student.img_size,
            "epochs": cfg.student.epochs, "views": cfg.cache.views, "mix": cfg.cache.mix,
            "sampling": cfg.student.view_sampling, "ema": cfg.student.ema, "val_acc": res["val_acc"],
            "no_ema": round(float(best.get("val_acc_live") or "nan"), 4),
            "best_live": round(max(float(r.get("val_acc_live") or "nan") for r in rows), 4),
            "of_teacher": round(res["val_acc"] / teacher_acc, 3), "train_wall_s": res["train_s"]}


def levers(args: argparse.Namespace) -> None:
    """The best recipe whole (teacher, cache, student, submit; reused when finished), then each LEVERS row as its own
    student folder of the same run, on the same cache. Writes benchmarks/results/levers.{json,md}."""
    data = [f"data.root={args.data}"]
    cfg = load_config(ROOT / BEST, data)
    for stage in ("teacher", "cache", "student", "submit"):  # their records are read back from summary.json
        run_stage(stage, str(ROOT / BEST), data)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    teacher, cache, student, submit = (summary[k] for k in ("teacher", "cache", "student", "submit"))
    old = json.loads((RESULTS / "recipe.json").read_text())["rows"]
    rows = [{"row": f"previous teacher ({old[0]['row'].split('(')[1].rstrip(')')}, recipe.json)", "params": old[0]["params"],
             "val_acc": old[0]["val_acc"]},
            {"row": f"teacher ({teacher['name']})", "params": teacher["params"], "val_acc": round(teacher["val_acc"], 4),
             "train_wall_s": teacher["train_s"]},
            {**{k: v for k, v in next(r for r in old if r["row"].startswith("+ 120 epochs")).items() if k != "unlabeled"},
             "row": "previous best recipe (lite0 teacher, 16 plain views; recipe.json)", "mix": "none", "sampling": "random"},
            _stage_row("best recipe (all levers; food10-mini-best.yaml)", cfg, student,
                       cfg.run_dir / cfg.student.dir / "metrics.csv", teacher["val_acc"]),
            {"row": "  + mirrored TTA at submit (validation)", "val_acc": round(submit["val_acc"], 4),
             "of_teacher": round(submit["val_acc"] / teacher["val_acc"], 3)},
            {**next(r for r in old if r["row"] == "+ unlabelled eval images"), "row": "previous recipe at 96 px, 60 epochs (recipe.json)"}]
    for label, over in LEVERS:
        if args.only and label not in args.only:
            continue
        over = data + [f"student.dir={slug(label)}"] + over
        rcfg = load_config(ROOT / BEST, over)
        res = run_stage("student", str(ROOT / BEST), over)
        rows.append(_stage_row(label, rcfg, res, rcfg.run_dir / rcfg.student.dir / "metrics.csv", teacher["val_acc"]))
        print(f"{label:50s} val_acc={res['val_acc']:.4f}", flush=True)
    stages = {"teacher train_s": teacher["train_s"], "teacher wall_s": teacher["wall_s"], "cache wall_s": cache["wall_s"],
              "student train_s": student["train_s"], "student wall_s": student.get("wall_s"), "submit wall_s": submit.get("wall_s")}
    md = (f"Levers on `{args.data}` (validation split), recipe `{BEST}`; no_ema: the live weights at the epoch the EMA "
          f"scored best, best_live: their best epoch\n\n"
          + table(rows, ["row", "student", "params", "img_size", "epochs", "views", "mix", "sampling", "ema", "val_acc",
                         "no_ema", "best_live", "of_teacher", "train_wall_s"])
          + "\n\nBest recipe, each stage (s): " + ", ".join(f"{k} {v}" for k, v in stages.items())
          + f"; cache: {cache.get('views')} views of {cache.get('images')} images + {cache.get('unlabeled')} unlabelled")
    save("levers", {"data": args.data, "recipe": BEST, "rows": rows, "stages": stages, "cache": cache}, md)


if __name__ == "__main__":
    main()
