"""Kaggle submission CSVs: ``Id,Category``, Id = 4-digit zero-padded file stem, integer label.

Every CSV is validated before it is written and again before it is uploaded; CSVs are read with
``dtype=str`` so ids keep their zero padding.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from .atomic import write_text

if TYPE_CHECKING:
    import pandas as pd

HEADER = ["Id", "Category"]


class SubmissionError(ValueError):
    """A submission (or sample submission) is malformed; the message names the file and the problem."""


def format_id(stem: str) -> str:
    """``"7"`` -> ``"0007"``; non-numeric stems are kept as they are."""
    return stem.zfill(4) if stem.isdigit() else stem


def read_csv(path: Path) -> pd.DataFrame:
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not a readable CSV ({exc})") from None


def validate(df: pd.DataFrame, *, num_classes: int, sample: Optional[pd.DataFrame] = None, src: str = "submission") -> None:
    """Raise ``SubmissionError`` unless ``df`` (all str columns) is a valid submission."""
    if list(df.columns) != HEADER:
        raise SubmissionError(f"{src}: header is {','.join(map(str, df.columns))!r}, expected 'Id,Category'")
    ids, cats = df["Id"].astype(str), df["Category"].astype(str)
    if (ids.str.strip() == "").any():
        raise SubmissionError(f"{src}: {int((ids.str.strip() == '').sum())} row(s) have an empty Id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise SubmissionError(f"{src}: duplicate Id {dup.iloc[0]!r} ({len(dup)} duplicates)")
    # ASCII digits only, no leading zeros (Kaggle scores '01' and a full-width '１' as wrong), in range
    bad = cats[~cats.str.fullmatch(r"0|[1-9][0-9]*", flags=re.ASCII)]
    if len(bad):
        raise SubmissionError(f"{src}: Category {bad.iloc[0]!r} (row {bad.index[0] + 2}) is not a plain non-negative "
                              "integer (ASCII digits, no sign, no leading zero)")
    long = cats[cats.str.len() > len(str(num_classes))]
    if len(long):
        raise SubmissionError(f"{src}: Category {long.iloc[0][:30]!r} (row {long.index[0] + 2}) is outside 0..{num_classes - 1}")
    big = cats[cats.astype(np.int64) >= num_classes]
    if len(big):
        raise SubmissionError(f"{src}: Category {big.iloc[0]} (row {big.index[0] + 2}) is outside 0..{num_classes - 1}")
    if sample is not None:
        want = sample["Id"].astype(str)
        unpadded = ids[ids.str.fullmatch(r"\d+") & (ids.str.len() < want.str.len().max())]
        if len(unpadded) and set(want) != set(ids):
            raise SubmissionError(
                f"{src}: Id {unpadded.iloc[0]!r} lost its zero padding (sample uses e.g. {want.iloc[0]!r}); "
                "read and write ids as strings (pandas: dtype=str)")
        missing, extra = set(want) - set(ids), set(ids) - set(want)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} id(s) missing, e.g. {sorted(missing)[0]!r}")
            if extra:
                parts.append(f"{len(extra)} id(s) not in the sample, e.g. {sorted(extra)[0]!r}")
            raise SubmissionError(f"{src}: {'; '.join(parts)}")


def read_sample(path: Optional[Path]) -> Optional[pd.DataFrame]:
    """The competition's sample submission; its header must be exactly ``Id,Category``, the format this
    pipeline writes (a sample with other columns describes another competition's format)."""
    if path is None:
        return None
    df = read_csv(path)
    if list(df.columns) != HEADER:
        raise SubmissionError(f"{path}: sample submission header is {','.join(map(str, df.columns))!r}, expected "
                              "'Id,Category'; this is not an HW13-style sample submission (wrong file, or another "
                              "competition's format)")
    dup = df["Id"][df["Id"].duplicated()]
    if len(dup):
        raise SubmissionError(f"{path}: sample submission repeats Id {str(dup.iloc[0])[:40]!r} ({len(dup)} repeated "
                              "rows); every Id must appear once: fix or re-download the sample")
    return df


def write_submission(path: Path, ids: Sequence[str], labels: np.ndarray, *, num_classes: int,
                     sample_path: Optional[Path] = None) -> pd.DataFrame:
    """Validate then atomically write ``path``; rows follow the sample's order when there is one."""
    import pandas as pd

    df = pd.DataFrame({"Id": [format_id(i) for i in ids], "Category": [str(int(v)) for v in labels]})
    sample = read_sample(sample_path)
    if sample is not None:
        order = {k: n for n, k in enumerate(sample["Id"])}
        df = df.assign(_o=df["Id"].map(order)).sort_values("_o", na_position="last", kind="stable").drop(columns="_o")
        df = df.reset_index(drop=True)
    validate(df, num_classes=num_classes, sample=sample, src=str(path))
    write_text(path, df.to_csv(index=False, lineterminator="\n"))
    return df


def check_file(path: Path, *, num_classes: int, sample_path: Optional[Path] = None) -> pd.DataFrame:
    """Validate an existing CSV (before upload)."""
    if not Path(path).is_file():
        raise SubmissionError(f"{path}: no such submission; run the submit stage first")
    df = read_csv(path)
    validate(df, num_classes=num_classes, sample=read_sample(sample_path), src=str(path))
    return df


CRED_HELP = ("Kaggle credentials not found or refused: put kaggle.json (from kaggle.com -> Settings -> API) in "
             "~/.kaggle/kaggle.json (chmod 600), save an API token to ~/.kaggle/access_token, or set "
             "KAGGLE_API_TOKEN (or KAGGLE_USERNAME and KAGGLE_KEY)")


def find_credentials() -> Optional[str]:
    """Where kaggle credentials would come from, or None (checked before the API is touched)."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle"))
    for name in ("kaggle.json", "access_token"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def check_upload(competition: str) -> None:
    """Refuse an upload that cannot happen (bad competition slug, no credentials) before any work is done."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", competition):
        raise SubmissionError(f"competition slug {competition!r} is not valid (e.g. ml2023spring-hw13): "
                              "set submit.competition (make ... COMPETITION=<slug>)")
    if find_credentials() is None:
        raise SubmissionError(CRED_HELP)


def upload(path: Path, competition: str, message: str, *, kept: str = "") -> dict[str, Any]:
    """Submit ``path`` with the kaggle API (imported lazily: it authenticates at import); returns
    ``{"competition", "ref", "message", "description"}``. A refusal is one ``SubmissionError`` line saying what to
    do (pipeline/kaggle_client.py), with ``kept`` (where the CSV is kept) appended."""
    from .kaggle_client import submit

    return submit(path, competition, message, kept=kept)
