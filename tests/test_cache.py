"""The teacher cache is keyed: a stale, partial or missing cache is refused with the rebuild command."""
import json

import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.context import open_data, pixels
from pipeline.stages.cache import expected_key, needed
from pipeline.teacher_cache import StaleCacheError, load_cache
from tests.conftest import tiny_config


@pytest.fixture
def built(tmp_path, hw13, capsys):
    cfg_path = tiny_config(tmp_path, hw13)
    for stage in ("teacher", "cache"):
        assert main([stage, "--config", str(cfg_path)]) == 0, capsys.readouterr().err
    return cfg_path


def _key(cfg_path, *overrides):
    cfg = load_config(cfg_path, list(overrides))
    return cfg, expected_key(cfg, pixels(cfg, open_data(cfg), "train").key), needed(cfg)


def test_cache_holds_teacher_outputs_per_view(built):
    cfg, key, need = _key(built)
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    n = len(open_data(cfg).train)
    assert c.logits.shape == (n, 2, 3) and c.views.shape == (n, 2, 5)
    assert (c.views[:, 0] == [0, 0, 24, 24, 0]).all()  # view 0 is the whole image
    man = json.loads((cfg.run_dir / "cache" / "manifest.json").read_text())
    assert man["key"]["teacher_sha256"] and len(man["files"]) == n and "torch" in man["versions"]


def test_changed_teacher_is_refused_with_rebuild_hint(built, capsys):
    cfg = load_config(built)
    ck = cfg.run_dir / "teacher" / "best.pt"
    state = torch.load(ck, weights_only=False)
    state["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, ck)
    assert main(["student", "--config", str(built)]) == 2
    err = capsys.readouterr().err
    assert "stale" in err and "teacher_sha256" in err and "python -m pipeline cache --config" in err
    # rebuilding fixes it
    assert main(["cache", "--config", str(built)]) == 0
    assert main(["student", "--config", str(built)]) == 0


def test_changed_views_config_is_refused(built):
    cfg, key, need = _key(built, "cache.views=3")
    with pytest.raises(StaleCacheError, match="transform"):
        load_cache(cfg.run_dir / "cache", key, need, "rebuild")


def test_half_written_cache_is_refused_then_rebuilt(built, capsys):
    cfg, key, need = _key(built)
    logits = cfg.run_dir / "cache" / "logits.npy"
    good = np.load(logits).copy()
    with open(logits, "r+b") as fh:
        fh.truncate(200)
    with pytest.raises(StaleCacheError, match="incomplete"):
        load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    assert main(["cache", "--config", str(built)]) == 0
    assert '"reused": false' in capsys.readouterr().out
    np.testing.assert_allclose(np.load(logits), good, atol=1e-5)


def test_missing_cache(tmp_path, built):
    cfg, key, need = _key(built)
    with pytest.raises(StaleCacheError, match="no teacher cache"):
        load_cache(tmp_path / "nowhere", key, need, "make cache")


def test_cached_logits_equal_an_online_forward(built):
    from pipeline.data.datasets import Normalize
    from pipeline.data.views import render_view
    from pipeline.models.teacher import teacher_from_checkpoint

    cfg, key, need = _key(built)
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    model, meta = teacher_from_checkpoint(cfg.run_dir / "teacher" / "best.pt")
    px = pixels(cfg, open_data(cfg), "train").pixels
    i, v = 5, 1
    x = torch.from_numpy(render_view(np.asarray(px[i]), c.views[i, v], meta["img_size"]))[None]
    with torch.inference_mode():
        out = model(Normalize(meta["mean"], meta["std"])(x))
    np.testing.assert_allclose(out[0].numpy(), c.logits[i, v], atol=1e-4)


def test_cache_for_other_losses_is_refused_then_superset_accepted(built, capsys):
    cfg, key, need = _key(built, "student.losses=[{name: cosine}]")
    with pytest.raises(StaleCacheError, match="does not hold feat"):
        load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    # a cache built with extra arrays serves every method
    assert main(["cache", "--config", str(built), "cache.store=[feat, map]", "cache.feature_layer=2"]) == 0
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    assert c.feat is not None and c.map is not None
    assert main(["student", "--config", str(built)]) == 0  # the plain kd student takes the superset cache
    cfg2, key2, need2 = _key(built, "student.losses=[{name: fitnet}]", "cache.feature_layer=3")
    with pytest.raises(StaleCacheError, match="from layer 2.*asks for 3"):
        load_cache(cfg2.run_dir / "cache", key2, need2, "rebuild")


def test_unlabelled_images_join_the_cache_after_the_training_rows(built, capsys):
    cfg, key, need = _key(built)
    before = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    logits, views = np.array(before.logits), np.array(before.views)
    assert main(["student", "--config", str(built), "cache.unlabeled=true"]) == 2
    assert "unlabeled_key" in capsys.readouterr().err  # the cache without them is refused
    assert main(["cache", "--config", str(built), "cache.unlabeled=true"]) == 0
    n, n_eval = len(open_data(cfg).train), len(open_data(cfg).test)
    man = json.loads((cfg.run_dir / "cache" / "manifest.json").read_text())
    assert man["shapes"]["logits"] == [n + n_eval, 2, 3] and len(man["files"]) == n + n_eval
    assert man["files"][n].endswith("evaluation/0000.jpg") and "unlabeled_key" in man["key"]
    after = np.load(cfg.run_dir / "cache" / "logits.npy")
    np.testing.assert_allclose(after[:n], logits, atol=1e-5)  # the training rows and their views are unchanged
    np.testing.assert_array_equal(np.load(cfg.run_dir / "cache" / "views.npy")[:n], views)
    assert main(["student", "--config", str(built), "cache.unlabeled=true"]) == 0
    # the larger cache also serves a student without them (it reads the training rows only)
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    np.testing.assert_allclose(c.logits[:n], logits, atol=1e-5)
    assert main(["student", "--config", str(built), "student.dir=labelled-only"]) == 0
    assert main(["cache", "--config", str(built)]) == 0
    assert '"reused": true' in capsys.readouterr().out
    # CE-only students ignore them (no teacher targets to learn from), so they need no cache at all
    assert main(["student", "--config", str(built), "cache.unlabeled=true", "student.losses=[{name: ce}]",
                 "student.dir=ce"]) == 0


def test_unlabelled_images_need_an_evaluation_folder(built, capsys):
    import shutil

    shutil.rmtree(load_config(built).data_root / "evaluation")
    assert main(["cache", "--config", str(built), "cache.unlabeled=true"]) != 0
    err = capsys.readouterr().err
    assert "cache.unlabeled" in err and "evaluation" in err
