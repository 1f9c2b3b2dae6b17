"""Bounded inputs (issue 27, hole 9 and 10 and the weak rows): a small file cannot make the loader build
something huge, and no message echoes a huge value."""
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config


def _alias_bomb(levels: int, width: int = 9) -> str:
    """``&l1 [*l0, *l0, ...]`` nested ``levels`` deep: a few hundred bytes that expand to width**levels items."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    lines.append(f"teacher: {{epochs: *l{levels - 1}}}")
    return "\n".join(lines) + "\n"


def test_nested_aliases_are_refused_in_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(8))  # 9**8 = 43 million items once expanded
    assert path.stat().st_size < 600
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert str(path) in msg and "alias" in msg
    assert len(msg) < 500 and msg.count("\n") == 0


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("data: {root: somewhere}\nteacher: {epochs: &e 3, batch_size: 4}\nstudent: {epochs: *e}\n")
    cfg = load_config(path)
    assert cfg.teacher.epochs == cfg.student.epochs == 3


def test_a_huge_bad_value_is_quoted_short(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("data: {root: x}\nteacher: {epochs: [" + ", ".join(["1"] * 20_000) + "]}\n"
                    "student: {augment: " + "z" * 50_000 + "}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "teacher.epochs" in msg and "student.augment" in msg
    assert len(msg) < 2_000


def test_a_huge_label_in_a_file_name_is_refused_naming_the_file(hw13):
    from pipeline.data import LayoutError, discover

    (hw13 / "training" / "3000000000_1.jpg").write_bytes((hw13 / "training" / "0_0.jpg").read_bytes())
    with pytest.raises(LayoutError, match=r"3000000000_1\.jpg: label 3000000000 .*rename") as e:
        discover(hw13)
    assert len(str(e.value)) < 400


def test_a_gap_in_labels_names_the_file_with_the_largest_label(hw13):
    from pipeline.data import LayoutError, discover

    (hw13 / "training" / "50000_1.jpg").write_bytes((hw13 / "training" / "0_0.jpg").read_bytes())
    with pytest.raises(LayoutError, match=r"class 3 .*has no training images.*50000_1\.jpg has label 50000.*"
                                          r"only 4 distinct labels"):
        discover(hw13)


@pytest.mark.parametrize("stem", ["\u0661_5", "\u0662_5", "1_\u0665", "\uff11_5"])  # Arabic-Indic 1/2/5, full-width 1
def test_only_ascii_digits_are_labels(hw13, stem):
    from pipeline.data import LayoutError, discover

    (hw13 / "training" / f"{stem}.jpg").write_bytes((hw13 / "training" / "0_0.jpg").read_bytes())
    with pytest.raises(LayoutError, match="cannot read a label"):
        discover(hw13)


@pytest.mark.parametrize("text,key", [
    ("teacher: {epochs: 1000000000000000000000}", "teacher.epochs"),
    ("student: {epochs: 1000000}", "student.epochs"),
    ("student: {batch_size: 100000000}", "student.batch_size"),
    ("cache: {batch_size: 100000000}", "cache.batch_size"),
    ("teacher: {warmup_epochs: 1.0e+30}", "teacher.warmup_epochs"),
    ("seed: 1099511627776", "seed"),
    ("cache: {views: 100000}", "cache.views"),
])
def test_numbers_have_sane_upper_bounds(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: x}\n" + text + "\n")
    with pytest.raises(ConfigError, match=rf"{key}: .*less than or equal to") as e:
        load_config(path)
    assert str(path) in str(e.value)


def test_cache_checks_the_sum_of_its_arrays_before_creating_any(tmp_path, monkeypatch):
    """Hole 6: each array fits the free space alone, all of them do not: refused before any file is made."""
    import shutil

    import numpy as np

    from pipeline import atomic
    from pipeline.atomic import DiskFullError
    from pipeline.fields import FieldSpec
    from pipeline.teacher_cache import CacheWriter

    specs = [FieldSpec("logits"), FieldSpec("feat"), FieldSpec("map", layer=-1)]
    shapes = dict(zip([s.name for s in specs], [(11,), (64,), (4, 2, 2)]))
    writer = CacheWriter(tmp_path / "cache", {}, specs, np.zeros((10, 64, 5), np.float32), None)
    sizes = [10 * 64 * int(np.prod(shapes[s.name])) * np.dtype(s.storage).itemsize for s in specs]
    free = max(sizes) * 1.5  # > each, < their sum
    assert free < sum(sizes)
    real = shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=int(free)))
    with pytest.raises(DiskFullError, match=r"no space left on .*cache.*the cache's arrays \(logits .*feat .*map@-1"):
        with writer.arrays(shapes):
            pass
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_rerun_removes_stale_temps_before_writing_its_config(tmp_path, hw13):
    """Hole 6: a killed (or disk-full) cache build's hidden temps go when the stage folder is taken, before
    config.yaml is written (which the full disk would refuse)."""
    from pipeline.rundir import RunDir
    from tests.conftest import tiny_config

    cfg = load_config(tiny_config(tmp_path, hw13))
    folder = cfg.run_dir / "cache"
    folder.mkdir(parents=True)
    stale = [folder / ".feat.npy.abc123.tmp", folder / ".map.npy.def456.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 1000)
    with RunDir(cfg) as rd:
        assert rd.stage("cache") == folder
        assert not any(p.exists() for p in stale) and (folder / "config.yaml").is_file()


@pytest.mark.parametrize("make,why", [
    (lambda f: f.truncate(1 << 30), "more than an image may be"),  # a sparse 1 GiB "jpeg"
    (lambda f: f.write(b"\0" * 4096), "not an image file"),
])
def test_a_file_is_refused_by_size_and_header_before_it_is_hashed(tmp_path, hw13, monkeypatch, make, why):
    import importlib

    from pipeline.data import open_data
    from pipeline.data.pixels import BadImageError
    from pipeline.data.sets import pixels
    from tests.conftest import tiny_config

    bad = hw13 / "training" / "0_99.jpg"
    with open(bad, "wb") as fh:
        make(fh)
    pixel_module = importlib.import_module("pipeline.data.pixels")
    real = pixel_module.sha256_file

    def sha256_file(path, *a, **k):
        assert Path(path) != bad, "the bad file was hashed whole"
        return real(path, *a, **k)

    monkeypatch.setattr(pixel_module, "sha256_file", sha256_file)
    cfg = load_config(tiny_config(tmp_path, hw13))
    with pytest.raises(BadImageError, match=rf"0_99\.jpg: .*{why}"):
        pixels(cfg, open_data(cfg), "train")
