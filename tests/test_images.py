import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.data import open_data, pixels
from pipeline.data import BadImageError
from pipeline.data.images import load_square
from tests.conftest import tiny_config


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "I;16", "CMYK"])
def test_modes_are_converted_to_rgb(tmp_path, mode):
    p = tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg"
    if mode == "I;16":
        Image.fromarray(np.full((10, 12), 65535, dtype=np.uint16)).save(p)
    else:
        Image.new(mode, (12, 10)).save(p)
    arr = load_square(p, 8)
    assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8
    if mode == "I;16":
        assert arr.min() == 255  # full-scale 16-bit -> white, not clipped garbage


def test_huge_jpeg_is_decoded_small(tmp_path):
    p = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(p)
    arr = load_square(p, 32)
    assert arr.shape == (32, 32, 3) and abs(int(arr[..., 1].mean()) - 200) < 3


def _corrupt(hw13):
    bad = {
        "training/0_100.jpg": b"",  # zero bytes
        "training/1_100.jpg": b"this is not an image",
        "validation/2_100.jpg": None,  # truncated jpeg
    }
    good = (hw13 / "training" / "0_0.jpg").read_bytes()
    for rel, data in bad.items():
        (hw13 / rel).write_bytes(good[: len(good) // 2] if data is None else data)
    return bad


def test_bad_images_are_listed_then_stop(tmp_path, hw13):
    _corrupt(hw13)
    cfg = load_config(tiny_config(tmp_path, hw13))
    lay = open_data(cfg)
    with pytest.raises(BadImageError) as e:
        pixels(cfg, lay, "train")
    msg = str(e.value)
    assert "0_100.jpg" in msg and "1_100.jpg" in msg and "skip_bad" in msg
    with pytest.raises(BadImageError, match="2_100.jpg"):
        pixels(cfg, lay, "val")


def test_bad_images_skipped_when_asked(tmp_path, hw13, caplog):
    _corrupt(hw13)
    cfg = load_config(tiny_config(tmp_path, hw13), ["data.skip_bad=true"])
    lay = open_data(cfg)
    px = pixels(cfg, lay, "train")
    assert len(px.pixels) == 24 and len(px.split) == 24
    assert all("_100" not in f.name for f in px.split.files)
    assert "skipping unreadable image" in caplog.text
    # a second call reuses the cache and gives the same files
    again = pixels(cfg, lay, "train")
    assert again.split.files == px.split.files and np.array_equal(np.asarray(again.pixels), np.asarray(px.pixels))


def test_bad_evaluation_image_keeps_its_id(tmp_path, hw13):
    (hw13 / "evaluation" / "0003.jpg").write_bytes(b"")
    cfg = load_config(tiny_config(tmp_path, hw13), ["data.skip_bad=true"])
    px = pixels(cfg, open_data(cfg), "test")
    assert px.split.ids == [f"{i:04d}" for i in range(6)] and np.asarray(px.pixels[3]).max() == 0


def test_half_written_pixel_cache_is_rebuilt(tmp_path, hw13):
    cfg = load_config(tiny_config(tmp_path, hw13))
    lay = open_data(cfg)
    px = pixels(cfg, lay, "train")
    arr = px.pixels.filename
    ref = np.array(px.pixels)
    with open(arr, "r+b") as fh:
        fh.truncate(100)  # simulate a crash that cut the file
    again = pixels(cfg, lay, "train")
    assert np.array_equal(np.asarray(again.pixels), ref)


def test_pixel_key_follows_content_not_paths_or_mtimes(tmp_path, hw13):
    import os
    import shutil

    cfg = load_config(tiny_config(tmp_path, hw13))
    key = pixels(cfg, open_data(cfg), "train").key
    copy = tmp_path / "copy" / "data"
    shutil.copytree(hw13, copy)  # a re-provisioned data set: new paths, new mtimes, same bytes
    for f in (copy / "training").iterdir():
        os.utime(f, (1, 1))
    moved = load_config(tiny_config(tmp_path, copy))
    assert pixels(moved, open_data(moved), "train").key == key
    f = copy / "training" / "0_0.jpg"
    f.write_bytes(f.read_bytes() + b"\0")  # one changed byte: a different data set
    assert pixels(moved, open_data(moved), "train").key != key


def test_stacked_pixels_read_rows_across_parts():
    from pipeline.data.pixels import StackedPixels

    a, b = np.zeros((2, 4, 4, 3), np.uint8), np.ones((3, 4, 4, 3), np.uint8)
    s = StackedPixels([a, b])
    assert len(s) == 5 and s.shape == (5, 4, 4, 3)
    assert s[1].max() == 0 and s[2].min() == 1 and s[-1].min() == 1
    assert s[1:3].shape == (2, 4, 4, 3) and s[1:3][1].min() == 1
    with pytest.raises(IndexError):
        s[5]
    with pytest.raises(ValueError, match="image shape"):
        StackedPixels([a, np.zeros((1, 5, 5, 3), np.uint8)])


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 ("rotate 90° clockwise to show") is decoded
    as it is shown."""
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = (255, 0, 0)  # stored: red on the left half, wide image
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / "sideways.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    shown = load_square(p, 40)  # shown: tall image, red on the top half
    assert shown[:15, :, 0].mean() > 200 and shown[-15:, :, 0].mean() < 50
