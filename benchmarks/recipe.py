"""Recipe ladder: from the best method of benchmarks/methods.py to the best student recipe, one change
per row (more recorded views, unlabelled images, resolution, schedule), then the other student designs
at the 96 px, 60-epoch rung with unlabelled images. Same seed throughout; the teacher is the food10-mini one (``teacher_from``).

    python benchmarks/recipe.py --data ../shared/datasets/food10-mini [--only "+ 128 px"]
    python benchmarks/recipe.py --levers    # this round's levers, one row each, then combined (levers.{json,md})

Writes benchmarks/results/recipe.json and recipe.md (row, student, params, val acc, share of the
teacher, train wall time). Rows already trained are reused (each run resumes from its checkpoint).
"""
from __future__ import annotations

import argparse
import json
import time

from common import RESULTS, ROOT, save, table

from distil.cli import run_stage
from distil.config import load_config

BASE = "configs/food10-mini.yaml"
BEST = "configs/food10-mini-best.yaml"
LABELLED = ["cache.unlabeled=false"]
START = "kd + fitnet"  # the best row of benchmarks/results/methods.json (8 views, 96 px, 60 epochs): the ladder's start
# (label, config, overrides); each row adds one change to the row above it
LADDER: list[tuple[str, str, list[str]]] = [
    ("+ 16 views", BEST, LABELLED + ["student.img_size=96", "student.epochs=60"]),
    ("+ unlabelled eval images", BEST, ["student.img_size=96", "student.epochs=60"]),
    ("+ 128 px", BEST, ["student.epochs=60"]),
    ("+ 120 epochs (final recipe)", BEST, []),
]
STUDENTS = ["mbv2_se", "shuffle", "ghost"]
# --levers: this round's levers, each its own row from the final recipe (same seed and teacher), each in its own
# run folder (a row that changes the cache gets its own cache), then all of them together. Not yet run: about
# 6-10 h on a 2-core CPU (the 64-view cache alone is ~1.5 h with the PyTorch backend, ~20 min with ORT).
LEVERS: list[tuple[str, list[str]]] = [
    ("lever: EMA 0.999", ["student.ema=0.999"]),
    ("lever: CutMix views (p 0.5)", ["cache.mix=cutmix"]),
    ("lever: 64 views, fp16 logits, fresh view each epoch", ["cache.views=64", "cache.logits_dtype=float16",
                                                             "student.view_sampling=fresh", "cache.backend=onnxruntime"]),
    ("lever: ghost student at 128 px", ["student.model=ghost"]),
    ("levers combined", ["student.ema=0.999", "cache.mix=cutmix", "cache.views=64", "cache.logits_dtype=float16",
                         "student.view_sampling=fresh", "cache.backend=onnxruntime", "student.model=ghost"]),
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
    run_stage("cache", str(ROOT / BEST), data)  # the recipe's cache (reused when built)
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
    plan = LADDER + [(f"student {s} (96 px, 60 epochs)", BEST, ["student.img_size=96", "student.epochs=60",
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
    payload = {"data": args.data, "base": BASE, "recipe": BEST, "seed": load_config(ROOT / BEST, data).seed,
               "rows": rows, "total_wall_s": round(time.time() - t0, 1)}
    md = (f"Data `{args.data}` (validation split); losses 0.3*ce + 0.7*kd(T=4) + 1*fitnet throughout; "
          f"recipe `{BEST}`\n\n"
          + table(rows, ["row", "student", "params", "img_size", "views", "unlabeled", "epochs", "val_acc",
                         "of_teacher", "train_wall_s"]))
    save("recipe", payload, md)


def levers(args: argparse.Namespace) -> None:
    """Each LEVERS row in its own run (``name=food10-mini-best-<slug>``, sharing the food10-mini teacher): cache
    (built or reused for that row) then student. Writes benchmarks/results/levers.{json,md}."""
    data = [f"data.root={args.data}"]
    run_stage("teacher", str(ROOT / BASE), data)
    teacher = json.loads((load_config(ROOT / BASE, data).run_dir / "summary.json").read_text())["teacher"]
    rows = []
    for label, over in LEVERS:
        if args.only and label not in args.only:
            continue
        over = data + [f"name=food10-mini-best-{slug(label)}"] + over
        cfg = load_config(ROOT / BEST, over)
        cache = run_stage("cache", str(ROOT / BEST), over)
        res = run_stage("student", str(ROOT / BEST), over)
        rows.append({"row": label, "student": cfg.student.model, "params": res["params"], "views": cfg.cache.views,
                     "val_acc": res["val_acc"], "of_teacher": round(res["val_acc"] / teacher["val_acc"], 3),
                     "cache_wall_s": cache.get("wall_s"), "train_wall_s": res["train_s"]})
        print(f"{label:50s} val_acc={res['val_acc']:.4f}", flush=True)
    md = (f"Levers from `{BEST}` on `{args.data}` (validation split), teacher {teacher['val_acc']:.4f}\n\n"
          + table(rows, ["row", "student", "params", "views", "val_acc", "of_teacher", "cache_wall_s", "train_wall_s"]))
    save("levers", {"data": args.data, "recipe": BEST, "rows": rows}, md)


if __name__ == "__main__":
    main()
