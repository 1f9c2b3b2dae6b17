"""Consistent mixing: a recorded view may be a CutMix/mixup image; the teacher is cached on exactly that image
and the student replays the same pixels."""
import cv2
import numpy as np
import pytest
import torch
from conftest import teacher_forward

from pipeline.cli import main
from pipeline.config import ConfigError, load_config
from pipeline.data import distill_set, open_data, pixels
from pipeline.data.datasets import Normalize, ViewImages
from pipeline.data.views import MIXES, mix_images, render_view, sample_mixes, sample_views
from pipeline.models import load_teacher
from pipeline.fields import LOGITS
from pipeline.teacher_cache import StaleCacheError, expected_key, load_cache
from pipeline.teachers import CachedTeacher


@pytest.mark.parametrize("kind", MIXES.names())
def test_mixes_never_touch_view_0_never_pair_an_image_with_itself_and_lam_is_the_own_share(kind):
    rng = np.random.default_rng(0)
    views = sample_views(20, 4, 32, 0.5, rng)
    mixes = sample_mixes(views, kind, 1.0, 1.0, rng)
    assert (mixes[:, 0, 0] == -1).all() and (mixes[:, 1:, 0] >= 0).all()
    assert (mixes[:, 1:, 0] != np.arange(20)[:, None]).all()
    a = np.zeros((32, 32, 3), np.uint8)
    b = np.full((32, 32, 3), 200, np.uint8)
    for row in mixes[:, 1:].reshape(-1, 7):
        m = mix_images(a, b, row)
        own_share = 1 - m.astype(np.float64).mean() / 200  # a is 0, b is 200: the share of a in the result
        assert own_share == pytest.approx(row[2], abs=0.07)  # CutMix: up to the box's pixel rounding


@pytest.mark.slow
@pytest.mark.precision
def test_the_teacher_is_cached_on_the_mixed_image_the_student_replays(built, tmp_path):
    over = ["cache.mix=cutmix", "cache.mix_prob=1.0", "cache.views=3"]
    assert main(["cache", "--config", str(built), *over]) == 0
    cfg = load_config(built, over)
    layout = open_data(cfg)
    images = distill_set(cfg, layout, pixels(cfg, layout, "train"), False)
    key = expected_key(cfg, images.pixel_key)
    cache = load_cache(cfg.run_dir / "cache", key, [LOGITS], "rebuild")
    assert cache.mixes is not None and (cache.mixes[:, 1:, 0] >= 0).all()
    model, meta = load_teacher(cfg.teacher_dir)
    size = meta["img_size"]
    teacher_view = ViewImages(images.pixels, images.labels, cache.views, size, fixed_view=1, mixes=cache.mixes)
    student_view = ViewImages(images.pixels, images.labels, cache.views, size, fixed_view=1, mixes=cache.mixes,
                              teacher=CachedTeacher(cache, [LOGITS], "sha"))
    for i in range(len(images)):
        t, s = teacher_view[i], student_view[i]
        assert torch.equal(t["image"], s["image"])  # the same pixels at the same size
        p = int(cache.mixes[i, 1, 0])
        assert s["target_mix"] == images.labels[p] and s["lam"] == pytest.approx(float(cache.mixes[i, 1, 2]))
        # and the partner's pixels really are in the box
        other = render_view(np.asarray(images.pixels[p]), cache.views[p, int(cache.mixes[i, 1, 1])], size)
        x0, y0, x1, y1 = (int(round(v * size)) for v in cache.mixes[i, 1, 3:7])
        assert np.array_equal(t["image"].numpy()[y0:y1, x0:x1], other[y0:y1, x0:x1])
    x = torch.stack([teacher_view[i]["image"] for i in range(len(images))])
    want, tol = teacher_forward(model, Normalize(meta["mean"], meta["std"])(x), cfg.teacher.amp)
    np.testing.assert_allclose(cache.arrays["logits"][:, 1], want, **tol)
    # at the student's own size the replay is the teacher's image resized (box edges round per size)
    small = ViewImages(images.pixels, images.labels, cache.views, 16, fixed_view=1, mixes=cache.mixes)[0]["image"]
    resized = cv2.resize(teacher_view[0]["image"].numpy(), (16, 16), interpolation=cv2.INTER_AREA)
    assert np.abs(small.numpy().astype(int) - resized.astype(int)).mean() < 12
    assert main(["student", "--config", str(built), *over, "student.epochs=1"]) == 0


def test_mixing_settings_key_the_cache_and_typos_fail_at_load(built):
    assert main(["cache", "--config", str(built), "cache.mix=mixup"]) == 0
    cfg = load_config(built, ["cache.mix=mixup", "cache.mix_alpha=0.2"])
    layout = open_data(cfg)
    images = distill_set(cfg, layout, pixels(cfg, layout, "train"), False)
    with pytest.raises(StaleCacheError, match="transform"):
        load_cache(cfg.run_dir / "cache", expected_key(cfg, images.pixel_key), [LOGITS], "x")
    with pytest.raises(ConfigError, match="cache.mix 'cutmx' is not one of none, cutmix, mixup"):
        load_config(built, ["cache.mix=cutmx"])


def test_fresh_view_sampling_shows_every_view_once_per_cycle():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    views = sample_views(5, 4, 16, 0.5, rng)
    ds = ViewImages(px, np.zeros(5, int), views, 8, seed=3, fresh=True)
    seen = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        seen.append([ds[i]["view"] for i in range(5)])
    seen = np.array(seen)  # (epochs, images)
    for i in range(5):
        assert sorted(seen[:4, i]) == [0, 1, 2, 3] and sorted(seen[4:, i]) == [0, 1, 2, 3]
    assert not (seen[:, 0] == seen[:, 1]).all()  # each image has its own order


def test_float16_logits_halve_the_cache_and_key_it(built):
    assert main(["cache", "--config", str(built), "cache.logits_dtype=float16"]) == 0
    cfg = load_config(built, ["cache.logits_dtype=float16"])
    arr = np.load(cfg.run_dir / "cache" / "logits.npy", mmap_mode="r")
    assert arr.dtype == np.float16
    layout = open_data(cfg)
    images = distill_set(cfg, layout, pixels(cfg, layout, "train"), False)
    plain = load_config(built)
    with pytest.raises(StaleCacheError, match="logits_dtype"):
        load_cache(cfg.run_dir / "cache", expected_key(plain, images.pixel_key), [LOGITS], "x")
    assert main(["student", "--config", str(built), "cache.logits_dtype=float16", "student.view_sampling=fresh",
                 "student.epochs=1"]) == 0
