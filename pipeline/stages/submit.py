"""``submit`` stage: predict the evaluation images with the student and write (and optionally upload) the CSV."""
from __future__ import annotations

import time
from typing import Any, Optional

from .. import context as ctx
from ..checkpoint import load_checkpoint
from ..config import Config
from ..data.datasets import Normalize
from ..engine import device
from ..models import check_budget, create_student
from ..predict import accuracy, predict_pixels
from ..submission import SubmissionError, check_file, upload, write_submission


def load_student(path: Any, budget: int) -> tuple[Any, dict[str, Any]]:
    """Rebuild a student from ``best.pt`` and gate it again (the checkpoint may come from elsewhere)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise SubmissionError(f"no student checkpoint at {path}; run the student stage first (make student CONFIG=...)")
    ck = load_checkpoint(Path(path))
    if ck.get("kind") != "student":
        raise SubmissionError(f"{path} is not a student checkpoint (kind={ck.get('kind')!r})")
    model = create_student(ck["arch"], ck["num_classes"], **ck["kwargs"])
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise SubmissionError(f"{path}: weights do not fit student {ck['arch']!r}: {str(exc)[:300]}") from None
    check_budget(model, budget, f"student checkpoint {path}")
    return model, ck


def run(cfg: Config, config_path: Optional[str] = None, upload_to_kaggle: bool = False) -> dict[str, Any]:
    t0 = time.time()
    ctx.stage_dir(cfg, "submit")
    layout = ctx.open_data(cfg)
    if layout.test is None:
        raise SubmissionError(f"{layout.root}: no evaluation/ (or test/) folder of unlabelled images to predict")
    test = ctx.pixels(cfg, layout, "test")
    dev = device()
    model, ck = load_student(cfg.run_dir / cfg.student.dir / "best.pt", cfg.student.budget)
    model.to(dev)
    norm = Normalize(ck["mean"], ck["std"]).to(dev)
    kw = {"workers": cfg.data.workers, "tta": cfg.submit.tta}
    labels = predict_pixels(model, test.pixels, ck["img_size"], norm, dev, **kw).argmax(1)
    val = ctx.pixels(cfg, layout, "val")  # the accuracy this very inference (tta or not) gets on held-out labels
    val_acc = accuracy(predict_pixels(model, val.pixels, ck["img_size"], norm, dev, **kw), val.split.labels)
    path = cfg.submission_path
    df = write_submission(path, test.split.ids, labels, num_classes=layout.num_classes, sample_path=layout.sample_submission)
    result: dict[str, Any] = {"path": str(path), "rows": len(df), "validated_against": str(layout.sample_submission),
                              "student_params": ck["params"], "tta": cfg.submit.tta, "val_acc": round(val_acc, 4), "wall_s": round(time.time() - t0, 1)}
    if upload_to_kaggle:
        check_file(path, num_classes=layout.num_classes, sample_path=layout.sample_submission)
        result["kaggle"] = upload(path, cfg.submit.competition, cfg.submit.message)
    ctx.update_summary(cfg, "submit", result)
    ctx.update_summary(cfg, "submission", str(path))
    return result
