"""``submit`` stage: predict the evaluation images with the student and write (and optionally upload) the CSV."""
from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Any

from . import STAGES
from .. import distributed
from ..atomic import sha256_file
from ..config import Config
from ..confidence import accuracy_interval
from ..data import open_data, pixels
from ..data.datasets import Normalize
from ..engine import device
from ..models import load_student
from ..precision import resolve
from ..predict import accuracy, predict_pixels
from ..rundir import RunDir, program, relative_to_cwd
from ..kaggle_client import description, record_upload
from ..submission import SubmissionError, check_file, upload, write_submission

log = logging.getLogger(__name__)


@STAGES.register("submit", order=4, pipeline=True, help="predict the evaluation images, write and validate the CSV")
def run(cfg: Config, rd: RunDir) -> dict[str, Any]:
    t0 = time.time()  # submit.upload's credentials were checked by run_stage, before any stage's work
    layout = open_data(cfg)
    if layout.test is None:  # own photos: the run ends with the student; predict labels any images
        how = f"{program()} predict IMAGES_OR_FOLDER --student {shlex.quote(relative_to_cwd(cfg.run_dir / cfg.student.dir))}"
        result = {"submission": None, "reason": f"{layout.root} has no evaluation/ (or test/) folder of unlabelled "
                  "images: nothing to submit", "student": rd.relative(cfg.run_dir / cfg.student.dir),
                  "student_val_acc": rd.summary().get("student", {}).get("val_acc"), "predict": how}
        log.info("nothing to submit: %s has no unlabelled test images. The student is in %s; label images with: %s",
                 layout.root, result["student"], how)
        rd.update_summary("submit", result)
        return result
    rd.require(cfg.run_dir / cfg.student.dir, today={"train images": pixels(cfg, layout, "train").key})
    dev = device()
    model, meta = load_student(cfg.run_dir / cfg.student.dir, cfg.student.budget, f"run it first: {rd.command('student')}")
    test = pixels(cfg, layout, "test")
    out = rd.stage("submit") if cfg.submit.upload else rd.reading("submit")  # reading: works in a read-only runs/
    model.to(dev)
    norm = Normalize(meta["mean"], meta["std"]).to(dev)
    precision = resolve(cfg.student.amp, dev, "student")  # the precision the student was validated in
    kw = {"workers": cfg.data.workers, "tta": cfg.submit.tta}
    with precision.autocast():
        labels = predict_pixels(model, test.pixels, meta["img_size"], norm, dev, **kw).argmax(1)
        val = pixels(cfg, layout, "val")  # the accuracy this very inference (tta or not) gets on held-out labels
        val_acc = accuracy(predict_pixels(model, val.pixels, meta["img_size"], norm, dev, **kw), val.split.labels)
    path = cfg.submission_path
    df = write_submission(path, test.split.ids, labels, num_classes=layout.num_classes, sample_path=layout.sample_submission)
    result: dict[str, Any] = {"path": rd.relative(path), "rows": len(df),
                              "validated_against": rd.relative(layout.sample_submission) if layout.sample_submission else None,
                              "student_params": meta["params"], "tta": cfg.submit.tta, "val_acc": round(val_acc, 4),
                              "val_images": len(val.split.labels),
                              "val_acc_ci95": accuracy_interval(val_acc, len(val.split.labels)),
                              "wall_s": round(time.time() - t0, 1)}
    rd.update_summary("submit", result)
    rd.update_summary("submission", rd.relative(path))
    if cfg.submit.upload and distributed.is_main():  # once (not per torchrun rank); the CSV is kept whatever Kaggle answers
        check_file(path, num_classes=layout.num_classes, sample_path=layout.sample_submission)
        text = description(cfg.submit.message, run=cfg.name, config=rd.relative(Path(rd.config_path)),
                           student=meta["arch"], params=meta["params"], val_acc=val_acc, ci=result["val_acc_ci95"])
        kept = f"; the CSV is kept at {rd.relative(path)}; upload it again with: {rd.command('submit')}"
        sent = upload(path, cfg.submit.competition, text, kept=kept)
        result["kaggle"] = record_upload(out, {**sent, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                                               "csv": rd.relative(path), "csv_sha256": sha256_file(path),
                                               "val_acc": result["val_acc"], "val_acc_ci95": result["val_acc_ci95"]})
        rd.update_summary("submit", result)
    return result
