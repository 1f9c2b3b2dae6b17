"""The two Kaggle calls this pipeline makes, through the ``kaggle`` package (imported lazily: it authenticates at
import and needs ``six``): submit a CSV to a competition, list the competition's submissions.

Every failure becomes one ``SubmissionError`` line that says what to do (``UPLOAD_FAILURES``: a table of the
answers Kaggle gives, first match wins). The credentials never appear in a message: only the server's answer
(its status and message) is quoted, and the key is not part of it.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from .submission import CRED_HELP, SubmissionError, check_upload

RULES_URL = "https://www.kaggle.com/competitions/{slug}/rules"


class Failure(NamedTuple):
    """One kind of answer: ``matches(status, message)`` (status None: no HTTP answer at all) and the advice
    (``{slug}``, ``{status}``, ``{msg}`` filled in)."""
    name: str
    matches: Callable[[Optional[int], str], bool]
    advice: str


def _limit(status: Optional[int], msg: str) -> bool:
    m = msg.lower()
    return status == 429 or "allowance" in m or ("limit" in m and "submission" in m)


UPLOAD_FAILURES: list[Failure] = [
    Failure("wrong key", lambda s, m: s == 401,
            "Kaggle refused the credentials ({status} {msg}): check the key: KAGGLE_USERNAME/KAGGLE_KEY or "
            "kaggle.json must hold a current API token (kaggle.com -> Settings -> API -> Create New Token)"),
    Failure("rules not accepted", lambda s, m: s == 403 and "rule" in m.lower(),
            "the competition's rules are not accepted ({status} {msg}): accept them at " + RULES_URL
            + " (logged in as the key's user), then upload again"),
    Failure("daily limit", _limit,
            "the daily submission limit is reached ({status} {msg}): wait until it resets (00:00 UTC), then upload again"),
    Failure("unknown competition", lambda s, m: s == 404,
            "competition {slug!r} was not found on Kaggle ({status} {msg}): check submit.competition (the slug in "
            "the competition's URL, e.g. ml2023spring-hw13)"),
    Failure("forbidden", lambda s, m: s == 403,
            "Kaggle refused ({status} {msg}): join the competition and accept its rules at " + RULES_URL
            + ", and check that the key belongs to that account"),
    Failure("server error", lambda s, m: s is not None and s >= 500,
            "Kaggle's server failed ({status} {msg}): the problem is on Kaggle's side; try again later"),
    Failure("upload refused", lambda s, m: s == 0,
            "the file upload was refused ({msg}): try again later"),
    Failure("no answer", lambda s, m: s is None,
            "could not reach Kaggle ({msg}): check the network connection, then try again"),
    Failure("other answer", lambda s, m: True, "Kaggle answered ({status} {msg})"),
]
FALLBACK = Failure("client error", lambda s, m: True, "the kaggle client failed: {msg}")


def explain(exc: BaseException, competition: str) -> tuple[str, str]:
    """``(kind, one-line advice)`` for an exception the kaggle client raised (``requests``' HTTPError carries
    Kaggle's status and message; ConnectionError and Timeout mean no answer)."""
    import requests

    status = getattr(getattr(exc, "response", None), "status_code", None)
    msg = " ".join(str(exc).split()) or type(exc).__name__
    msg = msg if len(msg) <= 200 else msg[:197] + "..."  # requests' connection errors run to 500 characters
    if status is None and not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return FALLBACK.name, f"the kaggle client failed: {type(exc).__name__}: {msg}"
    f = next(f for f in UPLOAD_FAILURES if f.matches(status, msg))
    return f.name, f.advice.format(slug=competition, status=status or "", msg=msg).replace("( ", "(")


def _api() -> Any:
    """A kaggle ``KaggleApi`` authenticated now, from the environment as it is (KAGGLE_USERNAME/KAGGLE_KEY,
    kaggle.json in KAGGLE_CONFIG_DIR or ~/.kaggle, an access token), not as it was when ``kaggle`` was imported."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi  # importing kaggle authenticates its own ``api``
    except ImportError as exc:
        raise SubmissionError(f"the kaggle package is not importable ({exc}); pip install kaggle six") from None
    except (OSError, SystemExit, ValueError, Exception) as exc:  # noqa: BLE001 - kaggle 1.x raised at import
        raise SubmissionError(f"{CRED_HELP} ({type(exc).__name__})") from None
    api = KaggleApi()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its help text; ours is CRED_HELP
            api.authenticate()
    except (SystemExit, Exception) as exc:  # noqa: BLE001
        raise SubmissionError(f"{CRED_HELP} ({type(exc).__name__})") from None
    return api


def submit(path: Path, competition: str, description: str, *, kept: str = "") -> dict[str, Any]:
    """Upload ``path`` to ``competition`` with ``description``; returns ``{"competition", "ref", "message",
    "description"}``. ``kept``: appended to a failure's advice (where the CSV is, how to retry)."""
    check_upload(competition)
    api = _api()
    try:
        res = api.competition_submit(str(path), description, competition, quiet=True)
    except Exception as exc:  # noqa: BLE001 - requests' HTTPError, ConnectionError, ...
        raise SubmissionError(f"upload to {competition!r} failed: {explain(exc, competition)[1]}{kept}") from None
    message = str(getattr(res, "message", res) or "")
    if message == getattr(api, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", "Could not submit to competition"):
        advice = explain(_Answer(0, message), competition)[1]
        raise SubmissionError(f"upload to {competition!r} failed: {advice}{kept}")
    return {"competition": competition, "ref": getattr(res, "ref", None), "message": message,
            "description": description}


def submissions(competition: str, limit: int = 100) -> list[dict[str, Any]]:
    """The competition's submissions of the key's team, newest first: ``{"date", "description", "public_score",
    "status", "ref", "file_name"}`` (``date``: ISO, UTC)."""
    check_upload(competition)
    api = _api()
    try:
        subs = api.competition_submissions(competition, page_size=limit) or []
    except Exception as exc:  # noqa: BLE001
        raise SubmissionError(f"listing the submissions of {competition!r} failed: {explain(exc, competition)[1]}") from None
    rows = []
    for s in subs:
        date = getattr(s, "date", None)
        status = getattr(s, "status", None)
        rows.append({"date": date.isoformat(sep=" ", timespec="minutes") if date else "",
                     "description": getattr(s, "description", "") or "",
                     "public_score": getattr(s, "public_score", "") or "",
                     "status": getattr(status, "name", str(status or "")).lower(),
                     "ref": getattr(s, "ref", None), "file_name": getattr(s, "file_name", "") or ""})
    return rows


class _Answer(Exception):
    """A failure the client reported as a result instead of raising (a refused file upload)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.response = type("R", (), {"status_code": status})()


DESCRIPTION_MAX = 255  # characters Kaggle keeps of a submission's description


def description(message: str, *, run: str, config: str, student: str, params: int, val_acc: float,
                ci: list[float]) -> str:
    """The submission's description: the user's message, then the run it came from (``run=<name>``, which
    ``distil submissions`` matches), its config, student and validation accuracy with the 95% interval."""
    tail = (f" | run={run} config={config} student={student} ({params:,} params) "
            f"val_acc={val_acc:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")
    return message[:max(0, DESCRIPTION_MAX - len(tail))] + tail


def record_upload(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` (one upload) to ``folder/uploads.json``, the run's list of uploads; returns it."""
    import json

    from .atomic import write_json

    p = Path(folder) / "uploads.json"
    try:
        uploads = json.loads(p.read_text()) if p.is_file() else []
    except ValueError:
        uploads = []
    write_json(p, [*(uploads if isinstance(uploads, list) else []), record])
    return record
