"""Command line: ``python -m pipeline <stage> --config configs/X.yaml [key=value ...]``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .config import REPO_ROOT, ConfigError, load_config

STAGES = ("teacher", "cache", "student", "submit", "export", "report", "params", "all")
DEFAULT_CONFIG = "configs/demo.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="distil: teacher -> cache -> student -> submit")
    sub = p.add_subparsers(dest="stage", required=True)
    for s in STAGES:
        sp = sub.add_parser(s, help=f"run the {s} stage" if s != "all" else "run every stage in order")
        sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. student.epochs=3")
        sp.add_argument("-v", "--verbose", action="store_true")
        if s in ("submit", "all"):
            sp.add_argument("--upload", action="store_true", help="also upload to Kaggle (needs credentials)")
    d = sub.add_parser("demo-data", help="build the Fashion-MNIST demo set in the HW13 layout")
    d.add_argument("--out", default="data/demo-fmnist")
    c = sub.add_parser("compare", help="table of runs: teacher/student accuracy, params, wall time")
    c.add_argument("runs", nargs="+")
    return p


def _errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import ResumeError
    from .data import BadImageError, LayoutError
    from .distill import LossConfigError
    from .engine import NonFiniteLoss
    from .models import BudgetError
    from .models.teacher import TeacherError
    from .submission import SubmissionError
    from .teacher_cache import StaleCacheError

    return (ConfigError, LayoutError, BadImageError, BudgetError, StaleCacheError, SubmissionError,
            TeacherError, ResumeError, NonFiniteLoss, LossConfigError, FileNotFoundError)


def run_stage(stage: str, config: str, overrides: Sequence[str] = (), upload: bool = False) -> dict:
    from . import context as ctx
    from .stages import cache, export, params, report, student, submit, teacher

    from . import dist

    cfg = load_config(config, list(overrides))
    dist.init()
    ctx.setup_torch(cfg.seed)
    if stage == "all":
        out = {}
        for name in ("teacher", "cache", "student", "submit"):
            out[name] = run_stage(name, config, overrides, upload)
        return out
    mod = {"teacher": teacher, "cache": cache, "student": student, "submit": submit, "export": export,
           "report": report, "params": params}[stage]
    if stage == "submit":
        return mod.run(cfg, config, upload_to_kaggle=upload)
    return mod.run(cfg, config)


def compare(runs: Sequence[str]) -> str:
    from pathlib import Path

    rows = ["| run | teacher | teacher acc | student | params | student acc | train s (teacher/cache/student) |",
            "|---|---|---|---|---|---|---|"]
    for r in runs:
        p = Path(r) / "summary.json"
        if not p.is_file():
            rows.append(f"| {r} | (no summary.json) | | | | | |")
            continue
        s = json.loads(p.read_text())
        t, c, st = s.get("teacher", {}), s.get("cache", {}), s.get("student", {})
        rows.append(f"| {s.get('name', r)} | {t.get('name', '-')} | {t.get('val_acc', float('nan')):.4f} | {st.get('name', '-')} "
                    f"| {st.get('params', '-')} | {st.get('val_acc', float('nan')):.4f} | "
                    f"{t.get('train_s', '-')}/{c.get('wall_s', '-')}/{st.get('train_s', '-')} |")
    return "\n".join(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from .context import setup_logging

    setup_logging(getattr(args, "verbose", False))
    if args.stage == "demo-data":
        from .data.demo import build_demo

        try:
            out = build_demo(REPO_ROOT / args.out if not args.out.startswith("/") else args.out)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"demo data ready at {out}")
        return 0
    if args.stage == "compare":
        print(compare(args.runs))
        return 0
    from .engine import Interrupted

    try:
        result = run_stage(args.stage, args.config, args.overrides, getattr(args, "upload", False))
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # unknown registry names
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.stage != "params":
        print(json.dumps(result, indent=2, default=str))
    return 0
