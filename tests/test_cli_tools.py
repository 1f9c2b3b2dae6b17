"""The CLI's tools that are not stages (demo-data, idx-data, init, predict): a failure they expect is one line,
``error: <what and the fix>``, and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import gzip
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main


def _idx(path: Path, arr: np.ndarray) -> None:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(head + arr.astype(np.uint8).tobytes())


def _no_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from pipeline.data import demo

    monkeypatch.setattr(demo, "build_demo", functools.partial(demo.build_demo, source=tmp_path / "no-fmnist"))
    return ["demo-data", "--out", str(tmp_path / "demo")]


def _idx_counts_differ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    src = tmp_path / "src"
    src.mkdir()
    for p in ("train", "t10k"):
        _idx(src / f"{p}-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
        _idx(src / f"{p}-labels-idx1-ubyte.gz", np.zeros(2))  # 3 images, 2 labels: ValueError
    return ["idx-data", "--source", str(src), "--out", str(tmp_path / "out")]


def _idx_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["idx-data", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]


def _init_no_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (tmp_path / "empty").mkdir()
    return ["init", str(tmp_path / "empty"), "--out", str(tmp_path / "x.yaml")]


def _predict_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["predict", str(tmp_path), "--config", str(tmp_path / "nope.yaml")]


CASES = {  # what goes wrong -> (the command line it builds, what the one line names)
    "demo-data without Fashion-MNIST": (_no_fashion_mnist, "no-fmnist"),
    "idx-data with more images than labels": (_idx_counts_differ, "3 images but 2 labels"),
    "idx-data without IDX files": (_idx_missing, "point --source at"),
    "init on a folder without classes": (_init_no_classes, "class folders"),
    "predict with a missing config": (_predict_no_config, "nope.yaml"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_tools_expected_failure_is_one_error_line_and_exit_2(case, tmp_path, monkeypatch, capsys):
    build, names = CASES[case]
    argv = build(tmp_path, monkeypatch)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and names in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not out
