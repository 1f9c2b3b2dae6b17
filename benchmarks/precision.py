"""float32 against bfloat16, stage by stage: what bf16 autocast does to the teacher's accuracy, to the cached
logits, and to a student trained on each cache in each precision (several seeds). Decides ``amp: auto``
(pipeline/precision.py, docs/precision.md).

    python benchmarks/precision.py [--config configs/demo.yaml] [--seeds 0 1]
                                   [--limit 800] [--views 1] [--epochs 5] [--batch-size 32]

The config's teacher is trained once (reused when done); for each seed the cache is built twice, ``teacher.amp=off``
and ``teacher.amp=bf16`` (run ``prec-<config>-s<seed>-<p>``, ``teacher_from`` the config's run), and a student is trained on each cache with ``student.amp=off`` and ``bf16``.
Speed is a result only where this CPU computes bf16 natively (``pipeline.precision.cpu_has_native_bf16`` without
``DISTIL_CPU_BF16``); elsewhere bf16 is emulated (an order of magnitude slower) and the wall times are only a record.
Writes benchmarks/results/precision.json and precision.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

import numpy as np
import yaml
from common import ROOT, save, table

from pipeline.config_file import yaml_load
from pipeline.precision import CPU_BF16_ENV, cpu_has_native_bf16
from pipeline.runner import run_stage

PRECISIONS = {"fp32": "off", "bf16": "bf16"}


def agreement(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Argmax agreement and mean KL(softmax(ref) || softmax(other)) of two logit arrays (..., C)."""
    a, b = ref.reshape(-1, ref.shape[-1]).astype(np.float64), other.reshape(-1, other.shape[-1]).astype(np.float64)
    la = a - a.max(1, keepdims=True)
    la -= np.log(np.exp(la).sum(1, keepdims=True))
    lb = b - b.max(1, keepdims=True)
    lb -= np.log(np.exp(lb).sum(1, keepdims=True))
    kl = (np.exp(la) * (la - lb)).sum(1)
    return {"argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()), "kl_to_fp32": float(kl.mean()),
            "max_abs_diff": float(np.abs(a - b).max())}


def write_config(base: dict[str, Any], name: str, teacher_run: str, seed: int, args: argparse.Namespace) -> str:
    raw = json.loads(json.dumps(base))
    raw.update(seed=seed, teacher_from=teacher_run)
    raw["data"]["limit_per_split"] = args.limit
    raw["cache"]["views"] = args.views
    raw["student"]["epochs"] = args.epochs
    raw["student"]["batch_size"] = args.batch_size
    raw["student"]["warmup_epochs"] = min(float(raw["student"].get("warmup_epochs", 0)), 1.0)
    path = ROOT / "runs" / "precision-bench" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--prefix", default="prec", help="the runs are runs/<prefix>-<config>-s<seed>-<fp32|bf16>")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--limit", type=int, default=800, help="data.limit_per_split of the cache and student runs")
    ap.add_argument("--views", type=int, default=1, help="cache.views")
    ap.add_argument("--epochs", type=int, default=5, help="student epochs")
    ap.add_argument("--batch-size", type=int, default=32, help="student batch size")
    ap.add_argument("--cells", nargs="+", default=["fp32/fp32", "fp32/bf16", "bf16/fp32", "bf16/bf16"],
                    help="cache/student precisions to train, in order (fp32 or bf16 each)")
    ap.add_argument("--train", nargs="*", default=None, help="train only these cells (another process trains the "
                    "rest; every process's report reads all finished students)")
    ap.add_argument("--report-only", action="store_true", help="train nothing; write the tables from finished runs")
    args = ap.parse_args()
    args.cells = [tuple(c.split("/")) for c in args.cells]
    args.train = [tuple(c.split("/")) for c in args.train] if args.train else None
    forced = os.environ.pop(CPU_BF16_ENV, None)  # the table says what this CPU is, not what a test forces
    native = cpu_has_native_bf16()
    if forced is not None:
        os.environ[CPU_BF16_ENV] = forced
    cfg_path = ROOT / args.config
    base = yaml_load(cfg_path.read_text())  # plain YAML: the shipped configs have no base: chain
    teacher_run = stem = cfg_path.stem
    t0 = time.time()
    teacher = run_stage("teacher", str(cfg_path))  # float32 (the config's amp on this CPU); reused when done
    caches: list[dict[str, Any]] = []
    students: list[dict[str, Any]] = []
    paths: dict[tuple[int, str], str] = {}
    cpu = platform.processor() or platform.machine()
    speed = ("bf16 is native on this CPU: the times compare" if native else
             "bf16 is EMULATED on this CPU (no avx512_bf16/AMX): wall times are a record only, not a speed ratio")
    scope = (f"{args.config}, teacher from runs/{teacher_run} (float32), data.limit_per_split={args.limit}, "
             f"cache.views={args.views}, student.epochs={args.epochs}, student.batch_size={args.batch_size}, "
             f"seeds {args.seeds}")

    def report(done: bool) -> None:
        """Write the tables so far (rewritten after every run, so an interrupted benchmark keeps what it measured)."""
        students.clear()  # every finished student of these runs, whichever process trained it (--report-only)
        for cp, sp in args.cells:
            for seed in args.seeds:
                f = ROOT / "runs" / f"{args.prefix}-{stem}-s{seed}-{cp}" / f"student-{sp}" / "done.json"
                if f.is_file():
                    r = json.loads(f.read_text())
                    students.append({"seed": seed, "cache": cp, "student": sp, "val_acc": r["val_acc"],
                                     "precision": r.get("precision"), "train_s": r.get("train_s"),
                                     "epoch_s": round(r["train_s"] / r["epochs"], 2) if r.get("train_s") else ""})
        cells = []
        for cp, sp in args.cells:
            rows = [s for s in students if s["cache"] == cp and s["student"] == sp]
            if rows:
                cells.append({"cache": cp, "student": sp, "val_acc": " / ".join(f"{s['val_acc']:.4f}" for s in rows),
                              "val_acc_mean": round(statistics.mean(s["val_acc"] for s in rows), 4),
                              "seeds": " ".join(str(s["seed"]) for s in rows),
                              "epoch_s_median": statistics.median([s["epoch_s"] for s in rows if s["epoch_s"]] or [0])})
        tv = [{"teacher inference": cp, "teacher_val_acc": " / ".join(f"{c['teacher_val_acc']:.4f}" for c in caches
                                                                     if c["cache"] == cp),
               "argmax_agreement": " / ".join(f"{c['argmax_agreement']:.4f}" for c in caches if "argmax_agreement" in c)
               if cp == "bf16" else "1 (reference)",
               "kl_to_fp32": " / ".join(f"{c['kl_to_fp32']:.2e}" for c in caches if "kl_to_fp32" in c)
               if cp == "bf16" else "0",
               "cache_wall_s": " / ".join(str(c["wall_s"]) for c in caches if c["cache"] == cp)} for cp in PRECISIONS]
        md = "\n\n".join([
            f"# float32 vs bf16 ({scope})" + ("" if done else " - INCOMPLETE (interrupted)"),
            f"CPU: {cpu}, {os.cpu_count()} cores; {speed}.",
            "## Teacher inference and cached logits (per seed; the bf16 cache against the float32 one)",
            table(tv, list(tv[0])),
            "## Student validation accuracy (best epoch; per seed, then mean) by cache precision x student precision",
            table(cells, ["cache", "student", "val_acc", "val_acc_mean", "seeds", "epoch_s_median"])])
        save("precision", {"scope": scope, "cpu": cpu, "native_bf16": native, "seeds": args.seeds, "complete": done,
                           "teacher": teacher, "caches": caches, "students": students, "cells": cells,
                           "wall_s": round(time.time() - t0, 1)}, md)

    for seed in args.seeds:  # the caches first (cheap), then the students cell by cell, both seeds each
        logits: dict[str, np.ndarray] = {}
        for cp, amp in PRECISIONS.items():
            name = f"{args.prefix}-{stem}-s{seed}-{cp}"
            paths[seed, cp] = write_config(base, name, teacher_run, seed, args)
            s = run_stage("cache", paths[seed, cp], [f"teacher.amp={amp}"])  # reused when done
            logits[cp] = np.load(ROOT / "runs" / name / "cache" / "logits.npy")
            caches.append({"seed": seed, "cache": cp, "teacher_val_acc": s["teacher_val_acc"],
                           "precision": s["precision"], "wall_s": s.get("wall_s")})
        caches[-1].update(agreement(logits["fp32"], logits["bf16"]))
        report(False)
    for cp, sp in [] if args.report_only else args.train or args.cells:
        for seed in args.seeds:
            r = run_stage("student", paths[seed, cp], [f"teacher.amp={PRECISIONS[cp]}", f"student.amp={PRECISIONS[sp]}",
                                                       f"student.dir=student-{sp}"])
            print(json.dumps({"seed": seed, "cache": cp, "student": sp, "val_acc": r["val_acc"]}), flush=True)
            report(False)
    report(len(students) == len(args.cells) * len(args.seeds))


if __name__ == "__main__":
    main()
