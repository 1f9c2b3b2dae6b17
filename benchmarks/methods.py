"""Methods benchmark: the CE-only student and every distillation method, same student, schedule and
seed, on real food photos. Reuses the config's teacher and cache (built first if missing).

    python benchmarks/methods.py --data ../shared/datasets/food10-mini [--epochs 30] [--only kd dkd]

Writes benchmarks/results/methods.json and methods.md (method, params, val acc, train wall time).
"""
from __future__ import annotations

import argparse
import json
import time

from common import ROOT, save, table

from pipeline.runner import run_stage
from pipeline.config import load_config

KD = {"name": "kd", "weight": 0.7, "kwargs": {"temperature": 4.0}}
CE = {"name": "ce", "weight": 1.0}
CE3 = {"name": "ce", "weight": 0.3}
METHODS: dict[str, list[dict]] = {
    "ce-only": [CE],
    "kd (Hinton)": [CE3, KD],
    "kd + logit std.": [CE3, {"name": "kd", "weight": 0.7, "kwargs": {"temperature": 2.0, "standardize": True}}],
    "dkd": [CE, {"name": "dkd", "weight": 1.0, "kwargs": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}}],
    "dist": [CE, {"name": "dist", "weight": 2.0, "kwargs": {"beta": 1.0, "gamma": 1.0, "temperature": 1.0}}],
    "cosine (hidden state)": [CE, {"name": "cosine", "weight": 1.0}],
    "fitnet (hint)": [CE, {"name": "fitnet", "weight": 1.0}],
    "rkd": [CE, {"name": "rkd", "weight": 1.0}],
    "dm": [CE, {"name": "dm", "weight": 10.0}],
    "at": [CE, {"name": "at", "weight": 100.0}],
    "kd + rkd": [CE3, KD, {"name": "rkd", "weight": 1.0}],
    "kd + fitnet": [CE3, KD, {"name": "fitnet", "weight": 1.0}],
}


def slug(label: str) -> str:
    return "bench-" + "".join(c if c.isalnum() else "-" for c in label).strip("-").replace("--", "-")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/datasets/food10-mini")
    ap.add_argument("--config", default="configs/food10-mini.yaml")
    ap.add_argument("--epochs", type=int, default=None, help="student epochs (default: the config's)")
    ap.add_argument("--only", nargs="*", default=None, help="method labels to run (default: all)")
    args = ap.parse_args()
    base = [f"data.root={args.data}", "cache.unlabeled=false"]  # the committed table: labelled images only
    cfg = load_config(ROOT / args.config, base)
    t0 = time.time()
    for stage in ("teacher", "cache"):  # reused when already built
        run_stage(stage, str(ROOT / args.config), base)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    epochs = args.epochs or cfg.student.epochs
    rows = [{"method": f"teacher ({summary['teacher']['name']})", "params": summary["teacher"]["params"],
             "val_acc": summary["teacher"]["val_acc"], "train_wall_s": summary["teacher"].get("train_s", "")}]
    for label, losses in METHODS.items():
        if args.only and label not in args.only:
            continue
        over = base + [f"student.dir={slug(label)}", f"student.epochs={epochs}",
                       "student.losses=" + json.dumps(losses)]
        res = run_stage("student", str(ROOT / args.config), over)
        rows.append({"method": label, "params": res["params"], "val_acc": res["val_acc"], "train_wall_s": res["train_s"],
                     "losses": " + ".join(f"{t['weight']:g}*{t['name']}" for t in losses)})
        print(f"{label:24s} val_acc={res['val_acc']:.4f} wall={res['wall_s']}s", flush=True)
    ce = next((r["val_acc"] for r in rows if r["method"] == "ce-only"), None)
    for r in rows[1:]:
        r["vs_ce_points"] = round(100 * (r["val_acc"] - ce), 2) if ce is not None else ""
        r["of_teacher"] = round(r["val_acc"] / rows[0]["val_acc"], 3)
    payload = {"config": args.config, "data": args.data, "student": cfg.student.model, "student_img_size": cfg.student.img_size,
               "epochs": epochs, "seed": cfg.seed, "rows": rows, "total_wall_s": round(time.time() - t0, 1)}
    md = (f"Student `{cfg.student.model}` at {cfg.student.img_size}px, {epochs} epochs, seed {cfg.seed}, "
          f"cached teacher ({cfg.cache.views} views); data `{args.data}` (validation split)\n\n"
          + table(rows, ["method", "params", "val_acc", "vs_ce_points", "of_teacher", "train_wall_s", "losses"]))
    save("methods", payload, md)


if __name__ == "__main__":
    main()
