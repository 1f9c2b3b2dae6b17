"""``pip install .`` (not editable) works from any folder: shipped configs are package data found by name, relative
config paths and runs/ are read from / written to the working directory, and torch is a range, not a pin."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, ConfigError, load_config
from pipeline.config_file import find_config, shipped_configs
from test_own_images import make_photos

TINY = ["teacher.model=test_efficientnet", "teacher.pretrained=none", "teacher.img_size=32", "teacher.epochs=1",
        "teacher.batch_size=8", "cache.views=1", "student.epochs=1", "student.batch_size=8", "student.img_size=16",
        "student.kwargs.width=0.25", "data.image_size=24"]


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "configs/demo.yaml", "seeds/mnist-kd"])
def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    found = find_config(name)
    assert found.is_file() and found.parent.is_relative_to(shipped_configs())
    cfg = load_config(name)
    assert cfg.name == Path(name).stem.removesuffix(".yaml")
    # its relative paths are the working directory's, not the clone's
    assert cfg.run_dir == tmp_path.resolve() / "runs" / cfg.name
    assert cfg.data_root.is_relative_to(tmp_path.resolve())


def test_a_file_in_the_working_directory_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text((shipped_configs() / "demo.yaml").read_text().replace(
        "data/demo-fmnist", "mine"))
    assert find_config("demo.yaml") == Path("demo.yaml") and load_config("demo.yaml").data.root == "mine"
    with pytest.raises(ConfigError, match=r"nope\.yaml not found.*shipped: .*demo"):
        load_config("nope.yaml")


def _wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the project's sources (the clone gets no build/ or egg-info)."""
    src = tmp_path / "src"
    for name in ("pipeline", "configs"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, text=True)
    (whl,) = (tmp_path / "dist").glob("distil-*.whl")
    return whl


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    whl = _wheel(tmp_path)
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    shipped = {f"pipeline/configs/{p.relative_to(REPO_ROOT / 'configs').as_posix()}"
               for p in (REPO_ROOT / "configs").rglob("*.yaml")}
    assert shipped and shipped <= names  # every shipped config, sub-folders included
    assert "pipeline/stages/student.py" in names and not any(n.startswith("tests/") for n in names)
    torch_req = next(line for line in meta.splitlines() if line.startswith("Requires-Dist: torch") and "vision" not in line)
    assert "==" not in torch_req and "<3" in torch_req, torch_req  # a range: a notebook's CUDA torch is kept

    target, work = tmp_path / "site", tmp_path / "work"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(whl)],
                   check=True, capture_output=True, text=True)
    make_photos(work / "photos", counts=(6, 6))
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}

    def distil(*args: str) -> subprocess.CompletedProcess:
        res = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=work, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, f"distil {' '.join(args)}\n{res.stderr[-3000:]}"
        return res

    where = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(target)  # the installed copy, not the clone
    assert "largest dwsep width" in distil("params", "--config", "demo").stdout
    assert "layout: folders" in distil("init", "photos").stdout
    assert "nothing to submit" in distil("all", "--config", "configs/photos.yaml", *TINY).stdout  # up to the student
    assert (work / "runs" / "photos" / "student" / "student.safetensors").is_file()
    assert not (REPO_ROOT / "runs" / "photos").exists()
