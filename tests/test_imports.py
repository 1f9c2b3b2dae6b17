"""Every module of the package imports on its own: no import circles, no module that works only after another."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import pipeline
from pipeline.config import REPO_ROOT

# one interpreter for all modules (a fresh one each costs ~3-6 s of torch import): before each module every
# ``pipeline`` module is dropped from sys.modules, so the package is imported from scratch each time, in the order
# that module's own imports give (third-party modules stay loaded; an import circle is within the package)
# First, in the fresh interpreter: the CLI's start (its parser, every stage registered) and loading a config import
# none of the heavy libraries only some stages need (each CLI process, e.g. a reused stage under `make`, pays them).
SCRIPT = """
import importlib, sys, traceback
failed = []
from pipeline.cli import _parser
from pipeline.config import load_config
_parser()
load_config("demo")
for lib in ("timm", "torchvision", "albumentations", "pandas", "matplotlib"):
    if lib in sys.modules:
        failed.append(f"distil's start and load_config import {lib} (import it where a model or augmentation is built)")
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.") if m.name != "pipeline.__main__")


def test_the_package_has_its_modules():
    names = modules()
    assert {"pipeline.config_file", "pipeline.stages.student", "pipeline.teacher_cache"} <= set(names)


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    res = subprocess.run([sys.executable, "-c", SCRIPT, *modules()], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, f"modules that do not import alone, or heavy imports at start:\n{res.stdout}{res.stderr[-2000:]}"


def _imported_modules(path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_teacher_cache_knows_files_not_losses():
    """The cache module is told which outputs to hold (field specs); it never reads the loss configuration."""
    mods = _imported_modules(REPO_ROOT / "pipeline" / "teacher_cache.py")
    assert not [m for m in mods if "losses" in m], mods


def test_stages_reach_teacher_outputs_through_one_object():
    """No stage assembles cache keys, views or field lists itself: the student stage calls ``open_teacher``, the
    cache stage ``teacher_cache.plan``."""
    import re

    for path in sorted((REPO_ROOT / "pipeline" / "stages").glob("*.py")):
        text = path.read_text()
        for name in ("needed", "views_for", "mixes_for", "recorded_views", "expected_key", "cache_key", "load_cache"):
            assert not re.search(rf"\b{name}\(", text), f"{path.name} calls {name}()"
