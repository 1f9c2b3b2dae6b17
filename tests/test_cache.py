"""The teacher cache is keyed: a stale, partial or missing cache is refused with the rebuild command."""
import json

import numpy as np
import pytest
import torch
from conftest import TOLERANCE, teacher_forward

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.data import open_data, pixels
from pipeline.fields import LOGITS
from pipeline.precision import resolve
from pipeline.losses.terms import teacher_specs
from pipeline.teacher_cache import StaleCacheError, expected_key, load_cache


def _key(cfg_path, *overrides):
    cfg = load_config(cfg_path, list(overrides))
    return cfg, expected_key(cfg, pixels(cfg, open_data(cfg), "train").key), teacher_specs(cfg)


def test_cache_holds_teacher_outputs_per_view(built):
    cfg, key, need = _key(built)
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    n = len(open_data(cfg).train)
    assert c.arrays['logits'].shape == (n, 2, 3) and c.views.shape == (n, 2, 5)
    assert (c.views[:, 0] == [0, 0, 24, 24, 0]).all()  # view 0 is the whole image
    man = json.loads((cfg.run_dir / "cache" / "manifest.json").read_text())
    assert man["key"]["teacher_sha256"] and len(man["files"]) == n and "torch" in man["versions"]


@pytest.mark.slow
def test_changed_teacher_is_refused_with_rebuild_hint(built, capsys):
    cfg = load_config(built)
    from safetensors.torch import load_file, save_file

    ck = cfg.run_dir / "teacher" / "teacher.safetensors"
    state = load_file(ck)
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, ck)
    assert main(["student", "--config", str(built)]) == 2
    err = capsys.readouterr().err
    # the teacher file no longer matches its own record: named, with the stage that rebuilds from there down
    assert "teacher.safetensors is not the one its done.json records" in err and "distil teacher --config" in err
    # a retrained teacher (another learning rate) makes the cache stale: refused, then rebuilt
    lr = "teacher.lr=0.002"
    assert main(["teacher", "--config", str(built), "--force", lr]) == 0
    capsys.readouterr()
    assert main(["student", "--config", str(built), lr]) == 2
    err = capsys.readouterr().err
    assert "cache" in err and "distil" in err and "Traceback" not in err
    assert main(["cache", "--config", str(built), "--force", lr]) == 0
    assert main(["student", "--config", str(built), lr]) == 0


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


@pytest.mark.precision
def test_cached_logits_equal_an_online_forward(built):
    from pipeline.data.datasets import Normalize
    from pipeline.data.views import render_view
    from pipeline.models import load_teacher

    cfg, key, need = _key(built)
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    model, meta = load_teacher(cfg.run_dir / "teacher")
    px = pixels(cfg, open_data(cfg), "train").pixels
    i, v = 5, 1
    x = torch.from_numpy(render_view(np.asarray(px[i]), c.views[i, v], meta["img_size"]))[None]
    out, tol = teacher_forward(model, Normalize(meta["mean"], meta["std"])(x), cfg.teacher.amp)
    np.testing.assert_allclose(out[0], c.arrays['logits'][i, v], **tol)


@pytest.mark.slow
def test_cache_for_other_losses_is_refused_then_superset_accepted(built, capsys):
    cfg, key, need = _key(built, "student.losses=[{name: cosine}]")
    with pytest.raises(StaleCacheError, match="does not hold feat"):
        load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    # a cache built with extra arrays serves every method
    assert main(["cache", "--config", str(built), "cache.store=[feat, map]", "cache.feature_layer=2"]) == 0
    c = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    assert set(c.arrays) == {"feat", "logits"} and c.manifest["contents"]["stored"] == ["feat", "logits", "map@2"]
    assert main(["student", "--config", str(built)]) == 0  # the plain kd student takes the superset cache
    cfg2, key2, need2 = _key(built, "student.losses=[{name: fitnet}]", "cache.feature_layer=3")
    with pytest.raises(StaleCacheError, match=r"does not hold map@3 \(holds feat, logits, map@2\)"):
        load_cache(cfg2.run_dir / "cache", key2, need2, "rebuild")


@pytest.mark.slow
def test_unlabelled_images_join_the_cache_after_the_training_rows(built, capsys):
    cfg, key, need = _key(built)
    before = load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    logits, views = np.array(before.arrays['logits']), np.array(before.views)
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
    np.testing.assert_allclose(c.arrays['logits'][:n], logits, atol=1e-5)
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


@pytest.mark.slow
@pytest.mark.precision
def test_ensemble_cache_is_the_mean_of_its_teachers_and_is_keyed_on_all_of_them(built, tmp_path):
    """cache.ensemble: the cache holds the mean of the teachers' logits (each at its own image size); replacing
    one member's weights makes the cache stale; feature losses and an online teacher are refused at load."""
    import shutil

    import yaml

    from pipeline import teacher_cache as tcache
    from pipeline.config import ConfigError

    runs = tmp_path / "runs"
    other = tmp_path / "other.yaml"  # a second teacher: another seed and image size, in its own run
    raw = yaml.safe_load(built.read_text())
    raw["seed"], raw["teacher"]["img_size"] = 1, 24
    other.write_text(yaml.safe_dump(raw))
    assert main(["teacher", "--config", str(other)]) == 0
    ens = tmp_path / "ens.yaml"
    raw = yaml.safe_load(built.read_text())
    raw["teacher_from"], raw["cache"]["ensemble"] = "tiny", ["other"]
    ens.write_text(yaml.safe_dump(raw))
    assert main(["cache", "--config", str(ens)]) == 0
    assert main(["student", "--config", str(ens), "student.epochs=1"]) == 0

    cfg, cfg_other = load_config(ens), load_config(other)
    need = [LOGITS]
    got = np.load(runs / "ens" / "cache" / "logits.npy")
    a = np.load(runs / "tiny" / "cache" / "logits.npy")
    # the second teacher, run by hand on the ensemble's view 1 of every image at its own size (24 px)
    from pipeline.data import distill_set
    from pipeline.data.datasets import Normalize
    from pipeline.data.views import render_view
    from pipeline.models import load_teacher

    model, meta = load_teacher(cfg_other.teacher_dir)
    layout = open_data(cfg)
    images = distill_set(cfg, layout, pixels(cfg, layout, "train"), False)
    views = np.load(runs / "ens" / "cache" / "views.npy")
    x = np.stack([render_view(np.asarray(images.pixels[i]), views[i, 1], meta["img_size"]) for i in range(len(images))])
    b1, tol = teacher_forward(model, Normalize(meta["mean"], meta["std"])(torch.from_numpy(x)), cfg.teacher.amp)
    np.testing.assert_allclose(got[:, 1], (a[:, 1] + b1) / 2, **tol)
    man = json.loads((runs / "ens" / "cache" / "manifest.json").read_text())
    assert [m["run"] for m in man["key"]["ensemble"]] == ["other"]

    shutil.copy(runs / "tiny" / "teacher" / "teacher.safetensors", runs / "other" / "teacher" / "teacher.safetensors")
    with pytest.raises(StaleCacheError, match="ensemble"):
        key = tcache.expected_key(cfg, images.pixel_key)
        load_cache(runs / "ens" / "cache", key, need, "rebuild")
    with pytest.raises(ConfigError, match="cache.ensemble averages the teachers' logits only"):
        load_config(ens, ["student.losses=[{name: cosine}]"])
    with pytest.raises(ConfigError, match="needs student.teacher_mode: cached"):
        load_config(ens, ["student.teacher_mode=online"])


@pytest.mark.slow
@pytest.mark.precision
def test_onnxruntime_backend_caches_what_torch_caches(built, tmp_path):
    """cache.backend: onnxruntime exports the teacher with every stored field as an output; its cache matches
    PyTorch's to float rounding, and a student trains from it."""
    import shutil

    ref = tmp_path / "runs" / "tiny" / "cache"
    torch_logits = np.load(ref / "logits.npy")
    shutil.copytree(ref, tmp_path / "torch-cache")
    over = ["cache.backend=onnxruntime", "cache.store=[feat]"]
    assert main(["cache", "--config", str(built), "--force", *over]) == 0
    # onnxruntime runs float32; the torch cache ran in the teacher's amp: the tolerance is that precision's
    tol = TOLERANCE[resolve(load_config(built).teacher.amp, torch.device("cpu"), "cache").name]
    np.testing.assert_allclose(np.load(ref / "logits.npy"), torch_logits, **tol)
    assert np.load(ref / "feat.npy").shape[:2] == torch_logits.shape[:2]
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["cache"]["precision"] == "onnxruntime fp32"
    assert main(["student", "--config", str(built), *over, "student.epochs=1"]) == 0


@pytest.mark.parametrize("override,leaf", [("seed=1", "transform.seed: cache has 0, config asks 1"),
                                           ("cache.views=3", "transform.views: cache has 2, config asks 3")])
def test_a_stale_cache_names_each_differing_leaf_with_its_values_whole(built, override, leaf):
    """The refusal names the leaf keys that differ (``transform.seed``), not a cut repr of both sides."""
    cfg, key, need = _key(built, override)
    with pytest.raises(StaleCacheError) as err:
        load_cache(cfg.run_dir / "cache", key, need, "rebuild")
    assert leaf in str(err.value) and "mean" not in str(err.value)


def test_a_long_value_is_shown_whole_up_to_a_bound():
    from pipeline.differences import VALUE_CHARS, leaf_changes, shown

    assert leaf_changes({"t": {"a": [1, 2], "b": 0}}, {"t": {"a": [1, 3], "b": 0}}) == [("t.a.1", 2, 3)]
    assert shown("x" * 200) == repr("x" * 200)  # whole: no 40-character cut
    long = shown("y" * 5000)
    assert len(long) < VALUE_CHARS + 40 and long.endswith("(5002 characters)")
