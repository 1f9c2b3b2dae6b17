"""The evaluation folder (HW13's ``evaluation/``, or ``test/``): what ``submit`` predicts, checked before any
training (the teacher and student stages call ``check_evaluation``) rather than found wrong after it."""
from __future__ import annotations

from .layout import DataLayout, LayoutError
from .pixels import image_problem


def check_evaluation(layout: DataLayout, skip_bad: bool = False) -> None:
    """Raise (``SubmissionError`` for the sample itself, ``LayoutError`` for the folder) when ``submit`` would
    refuse what it is given: a sample submission it cannot read, a sample without the folder of images it lists,
    a file in that folder that cannot be an image (size and first bytes only; ``skip_bad`` predicts a placeholder
    for it instead), or ids that differ between the folder and the sample. One line, naming the folder and the fix."""
    from ..submission import format_id, read_sample

    sample = read_sample(layout.sample_submission)
    if layout.test is None:
        if sample is not None:
            raise LayoutError(f"{layout.root} has {layout.sample_submission.name} but no evaluation/ (or test/) folder "
                              "of the images it lists: submit would have nothing to predict. Add that folder, or remove "
                              "the sample submission to train without submitting")
        return
    folder = layout.test.files[0].parent
    if not skip_bad:
        for f in layout.test.files:
            why = image_problem(f)
            if why:
                raise LayoutError(f"{f}: {why}; submit predicts every image in {folder}: fix or replace it, or set "
                                  "data.skip_bad: true (it predicts a black placeholder for it)")
    if sample is not None:
        ids, want = {format_id(i) for i in layout.test.ids}, set(sample["Id"].astype(str))
        missing, extra = sorted(want - ids), sorted(ids - want)
        if missing or extra:
            parts = ([f"{len(missing)} id(s) it lists have no image (e.g. {missing[0][:40]!r})"] if missing else []) + \
                    ([f"{len(extra)} image(s) it does not list (e.g. {extra[0][:40]!r})"] if extra else [])
            raise LayoutError(f"{folder} does not match {layout.sample_submission}: {'; '.join(parts)}. Fix the "
                              "folder or the sample (submit writes one row per id of the sample)")
