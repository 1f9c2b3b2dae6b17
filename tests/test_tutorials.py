"""The tutorials' nets, optimisers, schedules, plain views and adapters that the seed reproductions use."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import ConfigError, load_config
from pipeline.data.datasets import AUGMENTATIONS, AugmentedImages
from pipeline.fields import ADAPTERS
from pipeline.losses.criterion import Criterion
from pipeline.losses.terms import bind_terms
from pipeline.models import STUDENTS, count_params, create_student
from pipeline.models.teacher import TeacherError, create_teacher
from pipeline.optim import OPTIMIZERS, SCHEDULES, optimization

TUTORIAL = [n for n in STUDENTS.names() if STUDENTS.meta(n).get("tutorial")]
# name -> (classes, image size, parameter count published with the tutorial or computed from its layers)
PUBLISHED = {"tutorial_deepnn": (10, 32, 1_186_986), "tutorial_lightnn": (10, 32, 267_738),
             "mnist_teacher": (10, 28, 6_508_298), "mnist_student": (10, 28, 220), "xray_student": (2, 224, 100_474)}


def test_every_tutorial_net_is_listed_with_its_count():
    assert sorted(TUTORIAL) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_tutorial_nets_have_the_published_size_and_timms_interface(name):
    classes, size, params = PUBLISHED[name]
    m = create_student(name, classes, size).eval()
    assert count_params(m) == params
    x = torch.rand(2, 3, size, size)
    final, maps = m.forward_intermediates(x, indices=[-1])
    assert torch.equal(maps[0], final)
    assert m(x).shape == (2, classes)
    torch.testing.assert_close(m.forward_head(final), m(x))
    assert m.forward_head(final, pre_logits=True).shape == (2, final[0].numel())  # flattened, as the tutorial


def test_one_channel_nets_read_the_first_channel_of_greyscale_rgb():
    m = create_student("mnist_student", 10, 28).eval()
    g = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(m(g.expand(-1, 3, -1, -1)), m(g))


def test_a_tutorial_net_is_a_teacher_from_scratch_or_from_its_own_file(tmp_path):
    from safetensors.torch import save_file

    t = create_teacher("tutorial_lightnn", 10, img_size=32, drop_rate=0.1)  # auto: from scratch
    assert isinstance(t, nn.Module) and t(torch.rand(1, 3, 32, 32)).shape == (1, 10)
    save_file(t.state_dict(), str(tmp_path / "w.safetensors"))
    again = create_teacher("tutorial_lightnn", 10, weights=str(tmp_path / "w.safetensors"), img_size=32)
    for a, b in zip(t.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)  # used as it is, head included: never re-initialised
    with pytest.raises(TeacherError, match="does not fit 'tutorial_lightnn' with 11 classes"):
        create_teacher("tutorial_lightnn", 11, weights=str(tmp_path / "w.safetensors"), img_size=32)
    with pytest.raises(TeacherError, match="no hub weights"):
        create_teacher("tutorial_lightnn", 10, pretrained="hub")


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_lowers_a_quadratic(name):
    w = nn.Parameter(torch.tensor([[3.0, -2.0]]))
    cfg = load_config("configs/demo.yaml", [f"student.optimizer={name}", "student.lr=0.05", "student.weight_decay=0",
                                            "student.schedule=constant", "student.epochs=1"])
    opt, sched = optimization(cfg.student, [w], 50)
    for _ in range(50):
        opt.zero_grad()
        w.pow(2).sum().backward()
        opt.step()
        sched.step()
    assert w.detach().pow(2).sum() < 13 * 0.5


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_schedules_warm_up_then_follow_their_shape(name):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = SCHEDULES.get(name)(opt, 100, 10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == (pytest.approx(1.0) if name == "constant" else pytest.approx(0.0, abs=1e-3))


def test_unknown_optimizer_schedule_augment_and_adapter_fail_at_load():
    for override, msg in [("student.optimizer=adamm", "optimizer 'adamm' is not one of adam, adamw, sgd"),
                          ("teacher.schedule=linear", "schedule 'linear' is not one of constant, cosine"),
                          ("teacher.augment=flip", "augment 'flip' is not one of crop_flip_jitter, none"),
                          ("student.adapters={map: {kind: conv5x5}}", "adapter kind 'conv5x5' is not one of"),
                          ("student.adapters={logits: {kind: linear}}", "'logits' is not a field with an adapter"),
                          ("student.mean=[0.5, 0.5, 0.5]", "set mean and std together")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
            load_config("configs/demo.yaml", [override])


def test_no_augmentation_is_the_validation_image():
    from pipeline.data.datasets import PlainImages

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    aug = AugmentedImages(pix, np.array([0, 1, 2]), 32, augment="none")
    plain = PlainImages(pix, np.array([0, 1, 2]), 32)
    for i in range(3):
        assert torch.equal(aug[i]["image"], plain[i]["image"])
    assert set(AUGMENTATIONS.names()) == {"crop_flip_jitter", "none"}


@pytest.mark.parametrize("kind", ADAPTERS.names())
def test_every_adapter_makes_student_and_teacher_comparable(kind):
    maps = kind.startswith("conv")
    c_s, c_t = (16, 32) if kind != "identity" else (16, 16)
    s = torch.randn(4, c_s, 8, 8) if maps else torch.randn(4, c_s)
    t = torch.randn(4, c_t, 4, 4) if maps else torch.randn(4, c_t)
    for bn in (False, True) if kind != "pool" and kind != "identity" else (False,):
        a = ADAPTERS.get(kind)(c_s, c_t, bn)
        s2, t2 = a(s, t)
        assert s2.shape == t2.shape
        n_bn = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in a.modules())
        assert n_bn == int(bn)


def test_pool_adapter_is_the_tutorials_avg_pool1d_and_conv3x3_has_its_parameter_count():
    t = torch.randn(4, 2048)
    _, pooled = ADAPTERS.get("pool")(1024, 2048)(torch.randn(4, 1024), t)
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool1d(t, 2))
    reg = ADAPTERS.get("conv3x3")(16, 32, False)  # the tutorial's nn.Conv2d(16, 32, kernel_size=3, padding=1)
    assert sum(p.numel() for p in reg.parameters()) == 16 * 32 * 9 + 32
    with pytest.raises(ValueError, match="multiple of the student's"):
        ADAPTERS.get("pool")(1000, 2048)


def test_criterion_builds_the_configured_adapter():
    cfg = load_config("configs/seeds/cifar10-regressor.yaml", ["data.root=/nonexistent"])
    crit = Criterion(bind_terms(cfg), {"logits": 10, "map@-1": 16}, {"logits": 10, "map@-1": 32}, cfg.student.adapters)
    convs = [m for m in crit.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] and not any(isinstance(m, nn.BatchNorm2d) for m in crit.modules())
    out = crit({"logits": torch.randn(4, 10), "map@-1": torch.randn(4, 16, 8, 8)}, {"map@-1": torch.randn(4, 32, 8, 8)},
               {"target": torch.arange(4), "target_mix": torch.full((4,), -1), "lam": torch.ones(4)})
    assert set(out) == {"loss", "ce", "fitnet"}


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("configs/seeds/*.yaml")))
def test_seed_configs_load(path):
    cfg = load_config(path)
    classes = 2 if "xray" in path else 10
    assert cfg.student.budget >= count_params(create_student(cfg.student.model, classes, cfg.student.img_size,
                                                             **cfg.student.kwargs))


def _class_folders(root, classes, n_train, n_val, size, seed=0):
    """Class-folder data whose classes differ in brightness (learnable at once)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                base = 60 + 120 * c
                img = np.clip(rng.normal(base, 25, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_the_xray_config_runs_teacher_cache_student_on_generated_images(tmp_path):
    """configs/seeds/xray-kd.yaml as shipped (the 4-channel student at 224 px, CE + KD alpha 0.25, T 1), on a
    generated 2-class folder set; only the data, the run folder, the epochs and the teacher's weights (none:
    offline) and image size (64 px: seconds on a CPU) are overridden."""
    import json

    from pipeline.cli import main

    data = _class_folders(tmp_path / "xray", ["NORMAL", "PNEUMONIA"], 6, 3, 64)
    over = [f"data.root={data}", f"runs_dir={tmp_path / 'runs'}", "teacher.pretrained=none", "teacher.epochs=1", "teacher.img_size=64",
            "student.epochs=1", "teacher.batch_size=8", "student.batch_size=8"]
    for stage in ("teacher", "cache", "student"):
        assert main([stage, "--config", "configs/seeds/xray-kd.yaml", *over]) == 0
    done = json.loads((tmp_path / "runs" / "xray-kd" / "student" / "student.json").read_text())
    assert done["arch"] == "xray_student" and done["img_size"] == 224 and done["params"] == 100_474


def test_idx_data_writes_class_folders_of_the_exact_pixels(tmp_path):
    import gzip

    from PIL import Image

    from pipeline.cli import main
    from pipeline.data.layout import discover

    rng = np.random.default_rng(0)

    def idx(path, arr):
        head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        with gzip.open(path, "wb") as fh:
            fh.write(head + arr.astype(np.uint8).tobytes())

    src = tmp_path / "src"
    src.mkdir()
    imgs = {p: rng.integers(0, 256, (n, 28, 28)) for p, n in (("train", 12), ("t10k", 5))}
    labels = {"train": np.arange(12) % 3, "t10k": np.array([0, 1, 2, 0, 1])}
    for p in ("train", "t10k"):
        idx(src / f"{p}-images-idx3-ubyte.gz", imgs[p])
        idx(src / f"{p}-labels-idx1-ubyte.gz", labels[p])
    assert main(["idx-data", "--source", str(src), "--out", str(tmp_path / "out")]) == 0
    layout = discover(tmp_path / "out", "imagefolder")
    assert (len(layout.train), len(layout.val), layout.num_classes) == (12, 5, 3)
    first = np.asarray(Image.open(tmp_path / "out" / "train" / "0" / "00000.png"))
    assert np.array_equal(first, imgs["train"][0])  # lossless
    assert main(["idx-data", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 2


@pytest.mark.parametrize("how", ["pre_logits", "pooled", "flatten"])
def test_feat_from_reads_the_embedding_the_pool_or_the_flattened_map(how):
    from pipeline.fields import FieldSpec, forward_specs

    m = create_student("dwsep", 10).eval()
    x = torch.rand(2, 3, 32, 32)
    final = m.forward_features(x)
    spec = FieldSpec("feat", feat_from=how)
    feat = forward_specs(m, x, [spec])[spec.name]
    want = {"pre_logits": m.forward_head(final, pre_logits=True), "pooled": final.mean((2, 3)),
            "flatten": final.flatten(1)}[how]
    torch.testing.assert_close(feat, want)


def test_the_cached_feat_is_keyed_by_how_it_was_read(built):
    from pipeline.cli import main
    from pipeline.data import distill_set, open_data, pixels
    from pipeline.losses.terms import teacher_specs
    from pipeline.teacher_cache import StaleCacheError, expected_key, load_cache

    assert main(["cache", "--config", str(built), "cache.store=[feat]", "cache.feat_from=pooled"]) == 0
    cfg = load_config(built, ["cache.store=[feat]", "cache.feat_from=flatten", "student.losses=[{name: cosine}]"])
    layout = open_data(cfg)
    images = distill_set(cfg, layout, pixels(cfg, layout, "train"), False)
    with pytest.raises(StaleCacheError, match=r"does not hold feat@flatten \(holds feat@pooled, logits\)"):
        load_cache(cfg.run_dir / "cache", expected_key(cfg, images.pixel_key), teacher_specs(cfg), "rebuild")
    with pytest.raises(ConfigError, match="feat_from 'flat' is not one of flatten, pooled, pre_logits"):
        load_config(built, ["student.feat_from=flat"])
