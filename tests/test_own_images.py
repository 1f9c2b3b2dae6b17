"""Own images: the ``folders`` layout (``photos/<class>/*.jpg``), the stratified seeded validation split,
``distil init`` on every layout, and README's "Your own images" commands run as written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import make_hw13, tiny_config
from pipeline.cli import main
from pipeline.config import REPO_ROOT, load_config
from pipeline.data import LayoutError, discover, open_data
from pipeline.data.layout import LAYOUTS
from pipeline.data.sets import stratified_holdout

COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def make_photos(root: Path, counts: tuple[int, ...] = (10, 12, 14), names: tuple[str, ...] = ("cat", "dog", "fox"),
                size: tuple[int, int] = (30, 40), seed: int = 0) -> Path:
    """``root/<class>/img<n>.jpg``: class c tinted with COLORS[c] (a tiny model can learn it)."""
    rng = np.random.default_rng(seed)
    for c, (name, n) in enumerate(zip(names, counts)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(np.array(COLORS[c % 3], np.float32) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"img{i}.jpg")
    return root


def make_imagefolder(root: Path) -> Path:
    make_photos(root / "train")
    make_photos(root / "val", counts=(2, 2, 2), seed=1)
    return root


LAYOUT_MAKERS = {"hw13": make_hw13, "imagefolder": make_imagefolder, "folders": make_photos}


def test_every_layout_has_a_maker():
    assert set(LAYOUT_MAKERS) == set(LAYOUTS.names())


def test_folders_layout_is_detected_and_read(tmp_path):
    lay = discover(make_photos(tmp_path / "photos"))  # old code: "no training/ or train/ folder"
    assert lay.kind == "folders" and lay.class_names == ["cat", "dog", "fox"]
    assert np.bincount(lay.train.labels).tolist() == [10, 12, 14] and lay.val is None and lay.test is None


def test_folders_layout_reads_a_test_folder_and_refuses_one_class(tmp_path):
    root = make_photos(tmp_path / "photos")
    make_photos(tmp_path / "t", counts=(3,), names=("x",))
    (root / "test").mkdir()
    for f in (tmp_path / "t" / "x").iterdir():
        f.rename(root / "test" / f.name)
    lay = discover(root)
    assert lay.class_names == ["cat", "dog", "fox"] and len(lay.test) == 3
    with pytest.raises(LayoutError, match="at least two"):
        discover(make_photos(tmp_path / "one", counts=(4,), names=("cat",)))


def test_stratified_holdout_keeps_every_class_and_is_seeded():
    labels = np.array([0] * 20 + [1] * 5 + [2] * 2 + [3])
    hold = stratified_holdout(labels)
    assert np.bincount(labels[hold], minlength=4).tolist() == [2, 1, 1, 0]
    np.testing.assert_array_equal(hold, stratified_holdout(labels))
    assert not np.array_equal(hold, stratified_holdout(labels, seed=1))


def test_open_data_holds_out_a_stratified_split_that_the_data_key_sees(tmp_path):
    cfg = load_config(tiny_config(tmp_path, make_photos(tmp_path / "photos")))
    lay = open_data(cfg)
    assert np.bincount(lay.val.labels).tolist() == [1, 1, 1]  # old code's every-10th: classes by file order
    assert not set(lay.val.files) & set(lay.train.files) and len(lay.train) + len(lay.val) == 36
    again = open_data(cfg)
    assert again.val.files == lay.val.files
    from pipeline.data.pixels import split_key

    moved = lay.train.subset(np.ones(len(lay.train), bool))
    moved.files = moved.files[1:] + lay.val.files[:1]  # another split of the same images: another key
    assert split_key(moved, 24) != split_key(lay.train, 24)


@pytest.mark.parametrize("layout", sorted(LAYOUT_MAKERS))
def test_init_prints_what_it_found_and_writes_a_config_that_loads(tmp_path, layout, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    LAYOUT_MAKERS[layout](tmp_path / "data")
    assert main(["init", "data", "--out", "configs/mine.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"layout: {layout}" in out and "classes (3)" in out and "image sizes" in out
    assert ("stratified" in out) == (layout == "folders")
    cfg = load_config("configs/mine.yaml")
    assert cfg.name == "mine" and cfg.data.root == "data" and cfg.data_root == (tmp_path / "data").resolve()
    # the unlabelled test images, where there are some, are distilled on too (a lever that generalises)
    assert cfg.cache.unlabeled == ("unlabelled images (the submit stage" in out)
    assert main(["init", "data", "--out", "configs/mine.yaml"]) == 2  # an existing config is not replaced
    assert "--force" in capsys.readouterr().err


def test_init_refuses_a_folder_without_classes_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty"), "--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "class folders" in err and not (tmp_path / "x.yaml").exists()


@pytest.mark.slow
def test_own_photos_run_ends_after_the_student_and_predicts(tmp_path, capsys):
    """No test/ folder: submit says there is nothing to submit and how to predict (exit 0); predict labels them."""
    cfg = tiny_config(tmp_path, make_photos(tmp_path / "photos"), student={"epochs": 1})
    for stage in ("teacher", "cache", "student", "submit"):
        assert main([stage, "--config", str(cfg)]) == 0, stage  # old code: submit exited 2
    out = capsys.readouterr().out
    assert '"submission": null' in out and "predict IMAGES_OR_FOLDER --student" in out
    assert not (tmp_path / "subs").exists()
    assert main(["predict", str(tmp_path / "photos" / "cat"), "--config", str(cfg), "--topk", "2"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "file,class,probability,class_2,probability_2" and len(rows) == 11
    assert all(r.split(",")[1] in ("cat", "dog", "fox") for r in rows[1:])


def readme_own_images_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own images", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's 'Your own images' section has no bash block"
    return [ln.split("  #")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_own_images_section_names_init_and_predict():
    cmds = readme_own_images_commands()
    assert [shlex.split(c)[1] for c in cmds] == ["init", "all", "predict"]


@pytest.mark.slow
def test_readme_own_images_commands_run_as_written(tmp_path):
    """The three lines of README's 'Your own images', as written, in a folder with generated photos/."""
    make_photos(tmp_path / "photos")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    outs = []
    for cmd in readme_own_images_commands():
        argv = shlex.split(cmd)
        assert argv[0] == "distil"
        res = subprocess.run([sys.executable, "-m", "pipeline", *argv[1:]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, f"{cmd}\n{res.stderr[-3000:]}"
        outs.append(res.stdout)
    assert "layout: folders" in outs[0] and "stratified" in outs[0]
    assert yaml.safe_load((tmp_path / "configs" / "photos.yaml").read_text())["data"]["root"] == "photos"
    assert '"submission": null' in outs[1] and (tmp_path / "runs" / "photos" / "student" / "student.safetensors").is_file()
    rows = outs[2].strip().splitlines()
    assert rows[0].startswith("file,class,probability") and len(rows) == 11
