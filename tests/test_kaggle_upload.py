"""Uploading to Kaggle, end to end, offline: the REAL kaggle client (run by ``distil`` and ``make`` in a
subprocess) talks to the Kaggle twin (tests/kaggle_twin.py), a local server that answers like Kaggle and can
refuse the way Kaggle does. Nothing here reaches the network."""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import REPO_ROOT
from pipeline.kaggle_client import UPLOAD_FAILURES, explain
from tests.conftest import tiny_config
from tests.kaggle_twin import KAGGLE_VERSION, KAGGLESDK_VERSION, KEY, KaggleTwin

SLUG = "ml2023spring-hw13"


def test_the_installed_kaggle_client_is_the_one_the_twin_speaks_to():
    """The twin answers the calls of kaggle 2.2.5 / kagglesdk 0.1.38; a new client may call other endpoints or
    find its server elsewhere, so a version change must be looked at (then the twin and these constants updated)."""
    got = importlib.metadata.version("kaggle"), importlib.metadata.version("kagglesdk")
    assert got == (KAGGLE_VERSION, KAGGLESDK_VERSION), (
        f"installed kaggle {got[0]} / kagglesdk {got[1]}, but the Kaggle twin (tests/kaggle_twin.py) was written "
        f"against kaggle {KAGGLE_VERSION} / kagglesdk {KAGGLESDK_VERSION}: check the client's submit and list calls "
        "and how KAGGLE_API_ENVIRONMENT=LOCALHOST picks its endpoint, then update the twin's KAGGLE_VERSION")
    from kagglesdk.kaggle_env import KaggleEnv, get_endpoint

    assert get_endpoint(KaggleEnv.LOCAL) == "http://localhost"  # what the twin's proxy trick relies on


# --- the error table ----------------------------------------------------------------------------------

class _Response:
    def __init__(self, status: int):
        self.status_code = status


def _http_error(status: int, message: str) -> Exception:
    import requests

    return requests.HTTPError(message, response=_Response(status))


ANSWERS = {  # one answer Kaggle gives for each kind of failure in the table (the table is checked complete)
    "wrong key": (401, "Unauthenticated", "check the key"),
    "rules not accepted": (403, "You cannot submit until you accept the competition rules",
                           f"accept them at https://www.kaggle.com/competitions/{SLUG}/rules"),
    "daily limit": (400, "Submission not allowed: Your team has used its daily Submission allowance (5) today",
                    "wait until it resets"),
    "unknown competition": (404, "NotFound", "check submit.competition"),
    "forbidden": (403, "Permission 'competitions.participate' was denied", "join the competition"),
    "server error": (503, "Service Unavailable", "try again later"),
    "upload refused": (0, "Could not submit to competition", "upload was refused"),
    "no answer": (None, "Connection refused", "check the network connection"),
    "other answer": (418, "teapot", "Kaggle answered (418 teapot)"),
}


@pytest.mark.parametrize("failure", UPLOAD_FAILURES, ids=lambda f: f.name)
def test_each_kind_of_refusal_has_one_line_of_advice(failure):
    import requests

    status, message, advice = ANSWERS[failure.name]
    exc = requests.ConnectionError(message) if status is None else _http_error(status, message)
    kind, text = explain(exc, SLUG)
    assert kind == failure.name and advice in text and "\n" not in text, text


# --- end to end through the twin ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(_prebuilt, tmp_path_factory) -> Path:
    """A tiny run with a trained student (built once for this module); returns its config."""
    root = tmp_path_factory.mktemp("kaggle-run")
    shutil.copytree(_prebuilt / "data", root / "data")
    shutil.copytree(_prebuilt / "runs", root / "runs")
    cfg = tiny_config(root, root / "data", student={"epochs": 1})
    assert main(["student", "--config", str(cfg)]) == 0
    return cfg


@pytest.fixture
def twin():
    with KaggleTwin(competitions={SLUG}) as t:
        yield t


def _env(twin: KaggleTwin, tmp_path: Path, key: str | None = None) -> dict[str, str]:
    env = twin.env(tmp_path / "home", key=key)
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return env


@pytest.fixture
def at_twin(twin, tmp_path, monkeypatch):
    """Point this process's real kaggle client at the twin (``key``: another key than the twin's): the
    environment of ``KaggleTwin.env``, and what ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` gives ``KaggleApi`` when
    kaggle is imported under it (``args = ["--local"]``), for a process that imported kaggle before."""
    def point(key: str | None = None) -> KaggleTwin:
        env = twin.env(tmp_path / "home", key=key)
        for var in [v for v in os.environ if v not in env]:
            monkeypatch.delenv(var)
        for var, value in env.items():
            if os.environ.get(var) != value:
                monkeypatch.setenv(var, value)
        from kaggle.api.kaggle_api_extended import KaggleApi

        monkeypatch.setattr(KaggleApi, "args", ["--local"])
        monkeypatch.setattr(KaggleApi, "config_dir", env["KAGGLE_CONFIG_DIR"])
        monkeypatch.setattr(KaggleApi, "config", str(Path(env["KAGGLE_CONFIG_DIR"]) / "kaggle.json"))
        return twin
    return point


def distil(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=cwd or REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def _files_text(*folders: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for f in folders for p in Path(f).rglob("*") if p.is_file())


@pytest.mark.slow
def test_distil_submit_upload_sends_the_csv_and_names_the_run(trained, twin, tmp_path):
    root = trained.parent
    out = distil(_env(twin, tmp_path), "submit", "--config", str(trained), "--upload")
    assert out.returncode == 0, out.stderr[-3000:]
    csv = root / "subs" / "tiny.csv"
    assert list(twin.uploads.values()) == [csv.read_bytes()]  # the bytes that arrived are the CSV's
    [sub] = twin.submissions[SLUG]
    summary = json.loads((root / "runs" / "tiny" / "summary.json").read_text())
    s = summary["submit"]
    lo, hi = s["val_acc_ci95"]
    assert s["kaggle"]["description"] == sub["description"]
    for part in ("distil submission | run=tiny", f"config={trained}", "student=dwsep (", " params)",
                 f"val_acc={s['val_acc']:.4f} [{lo:.4f}, {hi:.4f}]"):
        assert part in sub["description"], (part, sub["description"])
    assert s["kaggle"]["message"].startswith("Successfully submitted") and s["kaggle"]["ref"] == sub["ref"]
    [record] = json.loads((root / "runs" / "tiny" / "submit" / "uploads.json").read_text())
    assert record["description"] == sub["description"] and len(record["csv_sha256"]) == 64
    # the key used with the twin is nowhere: not in the run, the CSV's folder, the output or the log
    assert KEY not in _files_text(root / "runs", root / "subs") + out.stdout + out.stderr


FAILURES = {  # twin failure -> (what the user must read, overrides)
    "bad_key": ("check the key", ()),
    "rules": (f"accept them at https://www.kaggle.com/competitions/{SLUG}/rules", ()),
    "unknown": ("check submit.competition", ("submit.competition=no-such-competition",)),
    "limit": ("wait until it resets", ()),
    "server": ("try again later", ()),
    "upload": ("upload was refused", ()),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_each_refusal_is_one_line_saying_what_to_do_and_the_csv_is_kept(trained, at_twin, failure, capsys, caplog):
    advice, overrides = FAILURES[failure]
    wrong = "not-the-key-0123456789abcdef"
    twin = at_twin(key=wrong if failure == "bad_key" else None)  # a real wrong key: the twin checks it
    if failure not in ("bad_key", "unknown"):  # unknown: a slug the twin does not have
        twin.fail = failure
    csv = trained.parent / "subs" / "tiny.csv"
    capsys.readouterr()
    assert main(["submit", "--config", str(trained), "--upload", *overrides]) == 2
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and advice in errors[0], err[-3000:]
    assert "Traceback" not in err and f"the CSV is kept at {csv}" in errors[0], errors[0]
    assert "upload it again with:" in errors[0] and "submit.upload=true" in errors[0]
    assert csv.is_file() and csv.read_bytes().startswith(b"Id,Category\n")
    if failure in ("limit", "server"):  # refused after the upload: what arrived was the CSV
        assert list(twin.uploads.values()) == [csv.read_bytes()]
    assert not twin.submissions.get(SLUG)
    text = out + err + caplog.text + _files_text(trained.parent / "runs", trained.parent / "subs")
    assert KEY not in text and wrong not in text


def test_no_answer_at_all_says_check_the_network(trained, at_twin, capsys):
    twin = at_twin()
    twin.__exit__(None, None, None)  # the server is gone: the proxy refuses connections, as a dead network does
    assert main(["submit", "--config", str(trained), "--upload"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "could not reach Kaggle" in err and "check the network connection" in err, err
    assert (trained.parent / "subs" / "tiny.csv").is_file()


@pytest.mark.slow
def test_make_submit_kaggle_uploads_through_the_twin(trained, twin, tmp_path):
    """``make submit KAGGLE=1`` on the tiny run: every stage (reused) is asked for the upload, submit uploads."""
    env = _env(twin, tmp_path)
    out = subprocess.run(["make", "-C", str(REPO_ROOT), "-o", ".venv/.installed", "submit", f"CONFIG={trained}",
                          "KAGGLE=1", f"COMPETITION={SLUG}", f"DISTIL={sys.executable} -m pipeline"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-3000:])
    csv = trained.parent / "subs" / "tiny.csv"
    assert list(twin.uploads.values()) == [csv.read_bytes()]
    [sub] = twin.submissions[SLUG]
    assert "run=tiny" in sub["description"] and "student=dwsep" in sub["description"]
    assert KEY not in out.stdout + out.stderr


# --- distil submissions -------------------------------------------------------------------------------

def _run(root: Path, name: str, val_acc: float, ci: list[float], uploads: list[dict] | None = None) -> None:
    d = root / name
    (d / "submit").mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"name": name, "submit": {"val_acc": val_acc, "val_acc_ci95": ci}}))
    if uploads is not None:
        (d / "submit" / "uploads.json").write_text(json.dumps(uploads))


def test_distil_submissions_puts_kaggle_beside_the_local_runs(at_twin, tmp_path, capsys):
    twin = at_twin()
    runs = tmp_path / "runs"
    exact = "final | run=a config=configs/a.yaml student=dwsep (60,000 params) val_acc=0.8100 [0.7800, 0.8400]"
    _run(runs, "a", 0.9, [0.88, 0.92], uploads=[{"description": exact, "val_acc": 0.81, "val_acc_ci95": [0.78, 0.84]}])
    _run(runs, "b", 0.70, [0.65, 0.75])
    day = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    twin.add_submission(SLUG, exact, "0.82000", day)
    twin.add_submission(SLUG, "try | run=b config=configs/b.yaml", "0.80000", day + dt.timedelta(hours=1))
    twin.add_submission(SLUG, "by hand", None, day + dt.timedelta(hours=2), status="PENDING")
    assert main(["submissions", "--competition", SLUG, "--runs", str(runs)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("| date (UTC) | description | public score | status | run | val acc |")
    rows = [[c.strip() for c in line.split(" | ")] for line in lines[2:]]
    assert len(rows) == 3  # newest first
    assert rows[0][0] == "| 2026-05-01 14:00" and rows[0][3:5] == ["pending", "-"]
    assert rows[1][1:5] == ["try \\| run=b config=configs/b.yaml", "0.80000", "complete", "b (by name)"]
    assert rows[1][5:] == ["0.7000", "[0.6500, 0.7500]", "no, above", "|"]  # worse than a: no mark
    # matched exactly by the recorded upload: that upload's accuracy, not the run's later one
    assert rows[2][2:] == ["0.82000", "complete", "a", "0.8100", "[0.7800, 0.8400]", "yes", "best |"]
    assert KEY not in out + err


def test_distil_submissions_with_a_wrong_key_is_one_line(at_twin, tmp_path, capsys):
    at_twin(key="wrong-key-abcdef")
    assert main(["submissions", "--competition", SLUG, "--runs", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert err.count("error:") == 1 and "check the key" in err, err
    assert "wrong-key-abcdef" not in out + err
