"""Batched inference: plain and mirrored (test-time augmentation) logits."""
import numpy as np
import torch
from torch import nn

from pipeline.predict import accuracy, predict_logits


def _loader(x: torch.Tensor) -> list:
    return [{"image": x[:3], "target": torch.zeros(3)}, {"image": x[3:], "target": torch.zeros(len(x) - 3)}]


def test_tta_averages_the_image_and_its_mirror():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 6, 2))  # not mirror-invariant
    norm = nn.Identity()
    xf = x.float()
    plain = predict_logits(model, _loader(xf), norm, torch.device("cpu"))
    tta = predict_logits(model, _loader(xf), norm, torch.device("cpu"), tta=True)
    with torch.no_grad():
        want = ((model(xf) + model(xf.flip(-1))) / 2).numpy()
        one_batch = model(xf).numpy()
    # batches of 3 + 2 vs one batch of 5: float32 matmuls are not bit-stable across batch shapes,
    # so compare at float32 precision (logits here are O(100): 1e-4 relative)
    np.testing.assert_allclose(plain, one_batch, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(tta, want, rtol=1e-4, atol=1e-3)
    # what the test is about: TTA differs from the plain logits by half the mirror's difference
    assert np.abs(plain - tta).min() > 1e-2
    np.testing.assert_allclose(tta - plain, (want - one_batch), rtol=1e-3, atol=1e-3)


def test_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]], dtype=np.float32)
    assert accuracy(logits, np.array([1, 0, 0])) == 2 / 3
    assert np.isnan(accuracy(logits[:0], np.array([], dtype=int)))
