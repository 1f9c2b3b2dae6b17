"""Command line: ``distil <stage> --config configs/X.yaml [key=value ...]`` (or ``python -m pipeline``)."""
from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from .config import ConfigError
from .runner import run_stage

DEFAULT_CONFIG = "configs/demo.yaml"


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def version() -> str:
    """The installed distribution's version (``pip show distil``), else the package's ``__version__``."""
    from importlib import metadata

    from . import __version__

    try:
        return metadata.version("distil")
    except metadata.PackageNotFoundError:
        return __version__


def _parser() -> argparse.ArgumentParser:
    from .stages import STAGES, ordered, pipeline_order

    p = argparse.ArgumentParser(prog="distil", description="distil: " + " -> ".join(pipeline_order()))
    p.add_argument("--version", action="version", version=f"distil {version()}")
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for s in [*ordered(), "all"]:
        help_ = STAGES.meta(s)["help"] if s != "all" else "run " + ", ".join(pipeline_order()) + " in order"
        sp = sub.add_parser(s, help=help_, description=help_)
        sp.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        sp.add_argument("overrides", nargs="*", help="key=value overrides, e.g. student.epochs=3")
        sp.add_argument("-v", "--verbose", action="store_true")
        sp.add_argument("--force", action="store_true",
                        help="start over: no resume from last.pt, no reuse of a finished cache")
        if s in ("submit", "all"):
            sp.add_argument("--upload", action="store_true", help="also upload to Kaggle (sets submit.upload=true)")
        if s == "all":
            sp.add_argument("--from", dest="start", choices=pipeline_order(), default=None,
                            help="start over from this stage down (--force for it and every stage after it)")
    d = sub.add_parser("demo-data", help="build the Fashion-MNIST demo set in the HW13 layout")
    d.add_argument("--out", default="data/demo-fmnist")
    x = sub.add_parser("idx-data", help="write IDX files (MNIST) as class folders (train/, val/) of PNGs")
    x.add_argument("--source", default="../shared/datasets/mnist", help="folder with the four IDX files")
    x.add_argument("--out", default="data/mnist")
    i = sub.add_parser("init", help="look at a data folder (layout, classes, counts, sizes) and write a config for it")
    i.add_argument("path", help="the data folder: HW13, train/<class>/ (+ val/), or <class>/*.jpg")
    i.add_argument("--out", default=None, help="config to write (default configs/<folder name>.yaml)")
    i.add_argument("--force", action="store_true", help="replace --out when it exists")
    q = sub.add_parser("predict", help="label images or a folder with a run's student: CSV of file, class, probability")
    q.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    q.add_argument("--config", default=DEFAULT_CONFIG, help=f"the run whose student to use (default {DEFAULT_CONFIG})")
    q.add_argument("--student", default=None, metavar="FOLDER", help="the student folder instead (runs/<name>/student)")
    q.add_argument("--topk", type=int, default=1, help="also the next classes and their probabilities (default 1)")
    q.add_argument("--format", default="auto", choices=["auto", "safetensors", "onnx"],
                   help="auto: student.onnx when exported and current, else student.safetensors")
    q.add_argument("--out", default=None, help="write the CSV here (default: print it)")
    c = sub.add_parser("compare", help="table of runs: teacher/student accuracy, params, wall time")
    c.add_argument("runs", nargs="+")
    k = sub.add_parser("submissions", help="the competition's Kaggle submissions beside the local runs they came from")
    k.add_argument("--competition", default="ml2023spring-hw13", help="competition slug (default ml2023spring-hw13)")
    k.add_argument("--runs", default="runs", help="folder of the runs (default runs/)")
    w = sub.add_parser("sweep", help="search student settings on one cached teacher with Optuna (parallel workers)",
                       description="Trials are student runs under runs/<name>/sweeps/<study>/; see configs/sweeps/")
    w.add_argument("--config", default=DEFAULT_CONFIG)
    w.add_argument("--space", required=True, help="search-space YAML (configs/sweeps/*.yaml)")
    w.add_argument("--trials", type=int, default=16, help="trials in the study, all workers together")
    w.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    w.add_argument("--storage", default=None, help="Optuna RDB URL shared by machines (default: a journal file in the run)")
    w.add_argument("--show", action="store_true", help="print the best trials and stop")
    w.add_argument("--best-config", default=None, metavar="PATH", help="write the best trial's config to PATH and stop")
    w.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    w.add_argument("overrides", nargs="*")
    w.add_argument("-v", "--verbose", action="store_true")
    return p


def _errors() -> tuple[type[BaseException], ...]:
    from .atomic import DiskFullError, NotWritableError
    from .checkpoint import ResumeError
    from .data import BadImageError, LayoutError
    from .engine import NonFiniteLoss
    from .losses import LossConfigError
    from .models import ArtifactError, BudgetError
    from .models.teacher import TeacherError
    from .submission import SubmissionError
    from .provenance import ProvenanceError
    from .teacher_cache import StaleCacheError

    return (ProvenanceError, ConfigError, LayoutError, BadImageError, BudgetError, StaleCacheError, SubmissionError, ArtifactError,
            TeacherError, ResumeError, NonFiniteLoss, LossConfigError, DiskFullError, NotWritableError, FileNotFoundError)


def compare(runs: Sequence[str]) -> str:
    """The Markdown table of ``distil compare`` (pipeline/comparison.py)."""
    from .comparison import compare as table

    return table(runs)


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import Sweep, SweepError

    try:
        sw = Sweep(args.config, args.space, args.overrides, args.storage)
        if args.show:
            print(sw.table())
        elif args.best_config:
            print(f"wrote {sw.best_config(args.best_config)}")
        elif args.worker:
            sw.work(args.trials)
        else:
            sw.run(args.trials, args.workers)
            print(sw.table())
    except KeyboardInterrupt:
        print("error: sweep interrupted (Ctrl-C); the study is kept: rerun the same command to go on", file=sys.stderr)
        return 130
    except (SweepError, *_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


Tool = Callable[[argparse.Namespace], int]


def _one_line_errors(errors: Callable[[], tuple[type[BaseException], ...]] = _errors) -> Callable[[Tool], Tool]:
    """A tool that prints ``error: <message>`` and exits 2 on one of ``errors()`` (default: the errors the stages
    turn into one line) instead of a traceback; ``errors`` is called only when something is raised (lazy imports)."""
    def wrap(tool: Tool) -> Tool:
        @functools.wraps(tool)
        def run(args: argparse.Namespace) -> int:
            try:
                return tool(args)
            except errors() as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
        return run
    return wrap


@_one_line_errors(lambda: (FileNotFoundError,))
def _demo_data(args: argparse.Namespace) -> int:
    from .data.demo import build_demo

    print(f"demo data ready at {build_demo(Path(args.out))}")
    return 0


@_one_line_errors(lambda: (FileNotFoundError, ValueError))
def _idx_data(args: argparse.Namespace) -> int:
    from .data.demo import build_idx_folders

    print(f"class folders ready at {build_idx_folders(Path(args.source), Path(args.out))}")
    return 0


@_one_line_errors()
def _init(args: argparse.Namespace) -> int:
    from .survey import describe, survey, write_config

    out = Path(args.out or f"configs/{Path(args.path).resolve().name}.yaml")
    found = survey(args.path)
    print(describe(found))
    write_config(found, args.path, out, args.force)
    print(f"wrote {out}\nnext: distil all --config {out}   (or: make CONFIG={out})")
    return 0


@_one_line_errors()
def _predict(args: argparse.Namespace) -> int:
    from .config import load_config
    from .deployment import predict_images

    if args.student:
        folder = Path(args.student)
    else:
        cfg = load_config(args.config)
        folder = cfg.run_dir / cfg.student.dir
    text = predict_images(args.images, folder, args.topk, args.format, Path(args.out) if args.out else None)
    if args.out:
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _compare(args: argparse.Namespace) -> int:
    print(compare(args.runs))
    return 0


def _submissions(args: argparse.Namespace) -> int:
    from .leaderboard import show
    from .submission import SubmissionError

    try:
        print(show(args.competition, Path(args.runs)))
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# the commands that are not pipeline stages (those come from the stage registry), by name
TOOLS: dict[str, Tool] = {
    "demo-data": _demo_data, "idx-data": _idx_data, "init": _init, "predict": _predict, "compare": _compare, "sweep": _sweep,
    "submissions": _submissions}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:  # start-up imports torch and every stage: seconds in which Ctrl-C must not print a traceback
        args = _parser().parse_args(argv)
        setup_logging(getattr(args, "verbose", False))
        tool = TOOLS.get(args.stage)
        if tool is not None:
            return tool(args)
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C) while starting; nothing was written. Rerun the same command", file=sys.stderr)
        return 130
    from .engine import Interrupted

    overrides = list(args.overrides) + (["submit.upload=true"] if getattr(args, "upload", False) else [])
    try:
        result = run_stage(args.stage, args.config, overrides, args.force, start=getattr(args, "start", None))
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"error: interrupted (Ctrl-C) during {args.stage}; nothing half-written was kept. "
              "Rerun the same command to continue", file=sys.stderr)
        return 130
    except _errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:  # unknown registry names
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.stage != "params":
        print(json.dumps(result, indent=2, default=str))
    return 0
