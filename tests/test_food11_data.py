"""HW13's archive unpacked by ``make food11-unpack`` (the second half of ``make food11-data``) reads the same
whether it has a top-level ``Food-11/`` folder or not: a data root holding a single folder with the layout inside
is followed, and the log says so."""
from __future__ import annotations

import logging
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from pipeline.data.layout import LayoutError, discover

from tests.conftest import make_hw13

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("unzip") is None,
                                reason="needs make and unzip")


def _zip(tree: Path, archive: Path, top: str, extra: tuple[str, ...] = ()) -> None:
    """Zip ``tree``'s files under ``top`` ('' = at the archive's top level), plus empty ``extra`` folders."""
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(tree.rglob("*")):
            if f.is_file():
                z.write(f, str(Path(top) / f.relative_to(tree)) if top else str(f.relative_to(tree)))
        for name in extra:
            z.writestr(f"{name}/._placeholder", b"")


@pytest.mark.parametrize("top, extra", [("", ()), ("Food-11", ()), ("Food-11", ("__MACOSX",))],
                         ids=["flat", "top-level-folder", "top-level-folder+macosx"])
def test_the_unpacked_archive_is_found_in_both_shapes(tmp_path, caplog, top, extra):
    tree = make_hw13(tmp_path / "generated", n_train=4, n_val=2, n_eval=3)
    shutil.copy(REPO_ROOT / "Makefile", tmp_path / "Makefile")
    food11 = tmp_path / "data" / "food11"
    food11.mkdir(parents=True)
    _zip(tree, food11 / "ml2023spring-hw13.zip", top, extra)
    out = subprocess.run(["make", "--no-print-directory", "food11-unpack"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not list(food11.glob("*.zip"))
    with caplog.at_level(logging.INFO, logger="pipeline.data.layout"):
        layout = discover(food11)  # where configs/food11-hw13.yaml's data.root (data/food11) points
    assert layout.kind == "hw13"
    assert (len(layout.train), len(layout.val), len(layout.test)) == (12, 6, 3)
    assert layout.sample_submission is not None and layout.sample_submission.is_file()
    followed = [r.getMessage() for r in caplog.records if "holds a single folder" in r.getMessage()]
    if top:
        assert layout.root == food11 / top
        assert followed == [f"data root {food11} holds a single folder, {top}/, with the data inside: reading {food11 / top}"]
    else:
        assert layout.root == food11 and not followed


def test_the_outer_sample_submission_is_used_when_the_folder_has_none(tmp_path):
    tree = make_hw13(tmp_path / "root" / "Food-11", n_train=2, n_val=1, n_eval=2)
    (tree / "sample_submission.csv").rename(tmp_path / "root" / "sample_submission.csv")
    layout = discover(tmp_path / "root")
    assert layout.sample_submission == tmp_path / "root" / "sample_submission.csv"


def test_two_candidate_folders_are_named_not_guessed(tmp_path):
    make_hw13(tmp_path / "root" / "a", n_train=2, n_val=1, n_eval=1)
    make_hw13(tmp_path / "root" / "b", n_train=2, n_val=1, n_eval=1)
    with pytest.raises(LayoutError, match=r"2 folders inside have one \(a, b\): set data.root"):
        discover(tmp_path / "root")
