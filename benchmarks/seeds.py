"""The tutorials this product grew from, reproduced: every row of configs/seeds/*.yaml beside its published
number (PyTorch's KD tutorial on CIFAR-10, the KD notes on MNIST).

    python benchmarks/seeds.py [--seeds 42 43] [--only cifar10 mnist] [--rows "student CE"]

Each teacher is trained once (its config's seed); each student row runs once per seed (its own folder
``runs/<config>/seed<S>/``, cache rebuilt for that seed), with the same teacher. "ours" is the test accuracy
after the last epoch, as the tutorials report it (mean, and half the range over seeds); "best" is the best
epoch's, for reference only (choosing an epoch on the test set flatters it). Finished runs are reused.
Writes benchmarks/results/seeds.json and seeds.md. MNIST needs its class folders first: ``distil idx-data``.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, save, table

from pipeline.runner import run_stage
from pipeline.config import load_config
from pipeline.losses import teacher_fields

# (experiment, row, config, stage, published test accuracy %)
ROWS: list[tuple[str, str, str, str, float]] = [
    ("cifar10", "teacher DeepNN", "cifar10-kd", "teacher", 75.98),
    ("cifar10", "student LightNN, CE", "cifar10-ce", "student", 70.65),
    ("cifar10", "student, CE + KD (T=2, 0.25/0.75)", "cifar10-kd", "student", 70.49),
    ("cifar10", "student, CE + cosine on hidden state", "cifar10-cosine", "student", 70.12),
    ("cifar10", "student, CE + MSE on 3x3-conv regressor", "cifar10-regressor", "student", 70.61),
    ("mnist", "teacher CNN", "mnist-kd", "teacher", 98.88),
    ("mnist", "student (220 params), CE", "mnist-ce", "student", 65.84),
    ("mnist", "student, CE + KD (T=5, 0.3/0.7), correct KL", "mnist-kd", "student", 72.86),
    ("mnist", "student, CE + the notes' KLDivLoss on probabilities", "mnist-kd-notes", "student", 72.86),
]


def last_and_best(folder: Path) -> tuple[float, float, int, float]:
    """Test accuracy after the last epoch and at the best epoch (%), the number of epochs and the training time
    (sum of the epochs' seconds), from metrics.csv."""
    rows = list(csv.DictReader((folder / "metrics.csv").open()))
    accs = [float(r["val_acc"]) * 100 for r in rows]
    return accs[-1], max(accs), len(rows), sum(float(r["epoch_s"]) for r in rows)


def run_row(config: str, stage: str, seed: int, collect: bool = False) -> dict[str, Any]:
    """Train (or reuse) one row's run and read its numbers; ``collect``: only read a finished run."""
    path = str(ROOT / "configs" / "seeds" / f"{config}.yaml")
    if stage == "teacher":
        if not collect:
            run_stage("teacher", path)
        folder = load_config(path).teacher_dir
    else:
        over = [f"seed={seed}", f"student.dir=seed{seed}"]
        cfg = load_config(path, over)
        if not collect:
            if any(teacher_fields(t.name) for t in cfg.student.effective_losses()):
                run_stage("cache", path, over)
            run_stage("student", path, over)
        folder = cfg.run_dir / f"seed{seed}"
    if collect and not (folder / "done.json").is_file():
        raise FileNotFoundError(2, "not finished", str(folder / "done.json"))
    last, best, epochs, train_s = last_and_best(folder)
    return {"seed": seed if stage == "student" else load_config(path).seed, "last": last, "best": best,
            "epochs": epochs, "train_s": round(train_s, 1)}


def summarise(exp: str, row: str, config: str, published: float, runs: list[dict[str, Any]]) -> dict[str, Any]:
    lasts = [r["last"] for r in runs]
    mean = statistics.fmean(lasts)
    spread = (max(lasts) - min(lasts)) / 2
    return {"experiment": exp, "row": row, "config": f"configs/seeds/{config}.yaml", "published": published,
            "ours": f"{mean:.2f} ± {spread:.2f}" if len(runs) > 1 else f"{mean:.2f}", "ours_mean": round(mean, 2),
            "spread": round(spread, 2), "diff": round(mean - published, 2), "seeds": len(runs),
            "best_epoch": round(statistics.fmean(r["best"] for r in runs), 2),
            "train_s": round(statistics.fmean(r["train_s"] for r in runs), 1), "runs": runs}


def machine() -> str:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43], help="student seeds (teachers: their config's)")
    ap.add_argument("--only", nargs="*", default=None, help="experiments to run (cifar10, mnist)")
    ap.add_argument("--rows", nargs="*", default=None, help="row labels to run (default: all)")
    ap.add_argument("--collect", action="store_true", help="only read the finished runs (no training); seeds "
                    "not run are left out of their row, rows with none are left out")
    args = ap.parse_args()
    out = []
    for exp, row, config, stage, published in ROWS:
        if (args.only and exp not in args.only) or (args.rows and row not in args.rows):
            continue
        seeds = args.seeds if stage == "student" else [None]
        runs = []
        for seed in seeds:
            try:
                runs.append(run_row(config, stage, seed, args.collect))  # type: ignore[arg-type]
            except FileNotFoundError as exc:
                if not args.collect:
                    raise
                print(f"{exp:8} {row:50} seed {seed}: not run yet ({exc.filename})", flush=True)
        if not runs:
            continue
        out.append(summarise(exp, row, config, published, runs))
        print(f"{exp:8} {row:50} published {published:6.2f}  ours {out[-1]['ours']}", flush=True)
    # rows of earlier runs (other experiments) are kept, in ROWS order
    old = json.loads((RESULTS / "seeds.json").read_text())["rows"] if (RESULTS / "seeds.json").is_file() else []
    done = {(r["experiment"], r["row"]) for r in out}
    keep = {(r["experiment"], r["row"]): r for r in old if (r["experiment"], r["row"]) not in done}
    keep.update({(r["experiment"], r["row"]): r for r in out})
    out = [keep[(e, r)] for e, r, *_ in ROWS if (e, r) in keep]
    md = table(out, ["experiment", "row", "published", "ours", "diff", "seeds", "best_epoch", "train_s"])
    save("seeds", {"rows": out, "seeds": args.seeds, "machine": machine(), "note": "ours = test accuracy (%) after the last epoch, mean ± half "
                   "the range over seeds; best_epoch = mean of the best epoch's (for reference); train_s = mean training time "
                   "per run (sum of epoch times, s)"}, md)


if __name__ == "__main__":
    main()
