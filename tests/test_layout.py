import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.data import open_data
from pipeline.data import LayoutError, discover
from tests.conftest import make_hw13, tiny_config


def test_hw13_layout_labels_and_ids(hw13):
    lay = discover(hw13)
    assert lay.kind == "hw13" and lay.num_classes == 3
    assert len(lay.train) == 24 and len(lay.val) == 9 and len(lay.test) == 6
    assert {f.name: int(l) for f, l in zip(lay.train.files, lay.train.labels)}["2_5.jpg"] == 2
    assert lay.test.ids == [f"{i:04d}" for i in range(6)] and lay.test.labels is None
    assert lay.sample_submission == hw13 / "sample_submission.csv"


def test_imagefolder_layout(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("val", 1)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8)).save(tmp_path / split / c / f"{i}.png")
    lay = discover(tmp_path)
    assert lay.kind == "imagefolder" and lay.class_names == ["cat", "dog"]
    assert lay.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and lay.test is None


def test_missing_training_folder_names_root(tmp_path):
    with pytest.raises(LayoutError, match=str(tmp_path) + r".*no training/"):
        discover(tmp_path)
    with pytest.raises(LayoutError, match="does not exist; set data.root"):
        discover(tmp_path / "nope")
    # a shipped config's folder: the message says how that data is made
    with pytest.raises(LayoutError, match=r"food11 does not exist; download it with `make food11-data`"):
        discover(tmp_path / "data" / "food11")


def test_unparseable_name_is_named(hw13):
    (hw13 / "training" / "apple.jpg").write_bytes(b"x")
    with pytest.raises(LayoutError, match=r"apple\.jpg: cannot read a label.*<label>_<n>\.jpg"):
        discover(hw13)


def test_label_outside_classes_txt(hw13):
    (hw13 / "classes.txt").write_text("a\nb\n")
    with pytest.raises(LayoutError, match=r"2_0\.jpg: label 2 is outside 0\.\.1"):
        discover(hw13)


def test_empty_class(tmp_path):
    root = make_hw13(tmp_path / "d")
    for f in (root / "training").glob("1_*.jpg"):
        f.unlink()
    with pytest.raises(LayoutError, match="class 1 .* has no training images"):
        discover(root)


def test_duplicate_evaluation_ids(hw13):
    (hw13 / "evaluation" / "0001.png").write_bytes(b"x")
    with pytest.raises(LayoutError, match="duplicate id '0001'"):
        discover(hw13)


def test_windows_path_in_name(hw13):
    (hw13 / "training" / "food\\3_1.jpg").write_bytes(b"x")
    with pytest.raises(LayoutError, match="backslash"):
        discover(hw13)


def test_non_image_files_are_ignored(hw13):
    (hw13 / "training" / "notes.txt").write_text("hi")
    (hw13 / "training" / ".DS_Store").write_text("hi")
    assert len(discover(hw13).train) == 24


def test_missing_validation_is_held_out(tmp_path):
    root = make_hw13(tmp_path / "d", n_val=0)
    (root / "validation").rmdir()
    cfg = load_config(tiny_config(tmp_path, root))
    lay = open_data(cfg)
    assert len(lay.val) == 3 and len(lay.train) == 21
    assert not set(lay.val.files) & set(lay.train.files)


def test_limit_keeps_every_class(hw13):
    lay = discover(hw13, limit_per_split=6)
    assert len(lay.train) == 6 and set(np.unique(lay.train.labels)) == {0, 1, 2}
    assert len(lay.test) == 6


def test_a_stray_subfolder_among_flat_images_is_a_named_mixture(hw13):
    (hw13 / "training" / "extra").mkdir()
    (hw13 / "training" / "extra" / "x.jpg").write_bytes((hw13 / "training" / "0_0.jpg").read_bytes())
    with pytest.raises(LayoutError, match=r"training mixes 24 image file\(s\).*\['extra'\].*data.layout: hw13"):
        discover(hw13)
    assert len(discover(hw13, "hw13").train) == 24  # told which layout, it reads the flat files


@pytest.mark.parametrize("kind", ["fifo", "dir", "broken-link", "link-loop"])
def test_entries_that_are_not_image_files_are_listed_never_read(hw13, kind, caplog):
    import os

    p = hw13 / "training" / "0_50.jpg"
    if kind == "fifo":
        os.mkfifo(p)  # opening it for reading would block forever
    elif kind == "dir":
        p.mkdir()
    elif kind == "broken-link":
        p.symlink_to(hw13 / "nowhere.jpg")
    else:
        p.symlink_to(hw13 / "training" / "0_51.jpg")
        (hw13 / "training" / "0_51.jpg").symlink_to(p)
    with pytest.raises(LayoutError, match=r"(?s)unreadable image entr.*0_50.jpg.*data.skip_bad: true"):
        discover(hw13)
    lay = discover(hw13, skip_bad=True)
    assert p not in lay.train.files and len(lay.train) == 24
    assert "skipping" in caplog.text and "0_50.jpg" in caplog.text


def test_a_lonely_label_without_classes_txt_is_warned_about_loudly(hw13, caplog):
    (hw13 / "training" / "3_5.jpg").write_bytes((hw13 / "training" / "0_0.jpg").read_bytes())  # typo for 2_5?
    lay = discover(hw13)
    assert lay.num_classes == 4
    assert "CLASS 3 HAS ONLY 1 TRAINING IMAGE" in caplog.text and "3_5.jpg" in caplog.text
    caplog.clear()
    (hw13 / "classes.txt").write_text("a\nb\nc\nd\n")
    discover(hw13)
    assert "CLASS 3" not in caplog.text  # an explicit class list: no guess to warn about
