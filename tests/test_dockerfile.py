"""No Docker engine runs here: the Dockerfile is checked with hadolint instead (installed by the test extras)."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(exe).exists(), "hadolint missing: pip install -e '.[test]'"
    res = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_runs_the_demo_by_default():
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["make"]' in text and "dataset-fashion-mnist" in text and ".venv/.installed" in text
