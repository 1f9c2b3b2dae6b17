"""The repository keeps the design card's top-level layout."""
from __future__ import annotations

import tomllib

from pipeline.config import REPO_ROOT

CARD_TOP_LEVEL = ("pyproject.toml", "README.md", "pipeline", "configs", "tests", "submissions", "Dockerfile")


def test_the_cards_top_level_entries_exist():
    missing = [name for name in CARD_TOP_LEVEL if not (REPO_ROOT / name).exists()]
    assert not missing, f"the design card's top level lacks {missing}"
    assert (REPO_ROOT / "pipeline" / "__init__.py").is_file()


def test_the_package_is_pipeline_and_the_command_distil():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "distil"
    assert project["project"]["scripts"]["distil"] == "pipeline.cli:main"
    # every package on disk is listed (a new sub-package must not be left out of the wheel), plus the shipped configs
    on_disk = sorted(".".join(p.parent.relative_to(REPO_ROOT).parts) for p in (REPO_ROOT / "pipeline").rglob("__init__.py"))
    configs = ["pipeline.configs", *(f"pipeline.configs.{d.name}" for d in (REPO_ROOT / "configs").iterdir() if d.is_dir())]
    assert sorted(project["tool"]["setuptools"]["packages"]) == sorted([*on_disk, *configs])
    assert project["tool"]["setuptools"]["package-dir"] == {"pipeline.configs": "configs"}
