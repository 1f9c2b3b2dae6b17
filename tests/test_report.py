"""The run report: built from a real (tiny) run, rendered in headless Chromium, key elements present."""
import shutil
import subprocess

import pytest

from pipeline.cli import main
from tests.conftest import tiny_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(_prebuilt, tmp_path_factory):
    """A tiny run's report, built once for the tests here (they only read it): the session's teacher and cache
    (copied), then student and report."""
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(_prebuilt / "data", root / "data")
    shutil.copytree(_prebuilt / "runs", root / "runs")
    cfg = tiny_config(root, root / "data")
    for stage in ("student", "report"):
        assert main([stage, "--config", str(cfg)]) == 0, stage
    return root / "runs" / "tiny" / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    for key in ('id="summary"', 'id="budget"', 'id="architecture"', 'id="layers"', "Mult-Adds", "Param #",
                "DepthwiseSeparable", "student confusion matrix",
                "teacher confusion matrix", "95% interval (Wilson)", "9 images)", "training curves", "distillation terms", "per-class", "data:image/png;base64,"):
        assert key in text, key
    assert "src=\"http" not in text and "href=\"http" not in text  # nothing to fetch
    assert sorted(p.name for p in (report.parent / "report").glob("*.png")) == [
        "confusion_student.png", "confusion_teacher.png", "curves.png", "mistakes.png", "terms.png"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="budget"' in dom.stdout and dom.stdout.count("<img") >= 5 and "Per-class accuracy" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a rendered page with plots, not a blank one
