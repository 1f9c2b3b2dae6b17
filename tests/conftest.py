"""Tiny, deterministic fixtures: generated images in the HW13 layout under tmp_path."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

COLORS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def make_hw13(root: Path, n_train: int = 8, n_val: int = 3, n_eval: int = 6, size: int = 20, seed: int = 0,
              classes: int = 3) -> Path:
    """Write training/<c>_<n>.jpg, validation/, evaluation/0000.jpg, sample_submission.csv, classes.txt.

    Class c is a noisy image tinted with COLORS[c], so even a tiny model can learn it."""
    rng = np.random.default_rng(seed)
    for sub in ("training", "validation", "evaluation"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def img(c: int) -> Image.Image:
        base = np.array(COLORS[c % len(COLORS)], dtype=np.float32)
        arr = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr)

    for c in range(classes):
        for n in range(n_train):
            img(c).save(root / "training" / f"{c}_{n}.jpg")
        for n in range(n_val):
            img(c).save(root / "validation" / f"{c}_{n}.jpg")
    for n in range(n_eval):
        img(n % classes).save(root / "evaluation" / f"{n:04d}.jpg")
    (root / "sample_submission.csv").write_text("Id,Category\n" + "".join(f"{n:04d},0\n" for n in range(n_eval)))
    return root


def tiny_config(tmp_path: Path, data_root: Path, **sections) -> Path:
    """A config that trains a random-init timm test model and a narrow student in seconds."""
    cfg = {
        "runs_dir": str(tmp_path / "runs"),
        "submissions_dir": str(tmp_path / "subs"),
        "data": {"root": str(data_root), "image_size": 24},
        "teacher": {"model": "test_efficientnet", "pretrained": "none", "img_size": 32, "epochs": 2,
                    "batch_size": 8, "lr": 3.0e-3},
        "cache": {"views": 2, "batch_size": 16},
        "student": {"model": "dwsep", "kwargs": {"width": 0.25}, "img_size": 16, "epochs": 2, "batch_size": 8},
    }
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture
def hw13(tmp_path: Path) -> Path:
    return make_hw13(tmp_path / "data")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


# how close two computations of the same numbers must agree, by the precision the pipeline ran in (a float32
# forward against one under bf16 autocast differs by ~3e-3 on the tiny teacher: bf16 keeps 8 mantissa bits)
TOLERANCE = {"fp32": {"rtol": 1e-4, "atol": 1e-4}, "bf16": {"rtol": 3e-2, "atol": 3e-2},
             "fp16": {"rtol": 5e-3, "atol": 5e-3}}


def teacher_forward(model: torch.nn.Module, x: torch.Tensor, amp: str) -> tuple[np.ndarray, dict]:
    """The teacher's float32 outputs (B, ...) on normalised ``x`` (B, 3, H, W), under the autocast ``amp`` (the
    teacher's ``amp``, as the cache ran it) resolves to on this CPU, and the tolerance of that precision
    (``DISTIL_CPU_BF16=1`` makes ``auto`` bf16 here: ``.ci/run`` runs the ``precision`` tests both ways)."""
    from pipeline.precision import resolve

    prec = resolve(amp, torch.device("cpu"), "cache")
    with torch.inference_mode(), prec.autocast():
        out = model(x).float().numpy()
    return out, TOLERANCE[prec.name]


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder ``build(folder)`` filled once per test session, shared by the xdist workers (the pattern of
    pytest-xdist's docs: the first worker to need it builds it under a file lock, the others read it). Read it,
    never change it; copy what a test changes."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, the workers' common folder
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def _prebuilt(tmp_path_factory) -> Path:
    """Teacher and cache of the default tiny config, built once per session for all workers (copied by ``built``)."""
    from pipeline.cli import main

    def build(root: Path) -> None:
        cfg = tiny_config(root, make_hw13(root / "data"))
        for stage in ("teacher", "cache"):
            assert main([stage, "--config", str(cfg)]) == 0

    return built_once(tmp_path_factory, "prebuilt", build)


@pytest.fixture
def built(tmp_path: Path, _prebuilt: Path) -> Path:
    """A fresh copy of a tiny run whose teacher and cache are done: data under ``tmp_path/data``, runs under
    ``tmp_path/runs``; returns its config. Tests may change anything in it."""
    shutil.copytree(_prebuilt / "data", tmp_path / "data")
    shutil.copytree(_prebuilt / "runs", tmp_path / "runs")
    return tiny_config(tmp_path, tmp_path / "data")


# The heaviest tests (seconds of CPU, most in the processes they start), heaviest first. `make test` runs on two
# xdist workers that take tests one at a time (--maxschedchunk 1) in collection order: starting these first keeps
# a long test from being the tail that one worker runs alone at the end. A name not here sorts by its `slow` mark;
# a renamed test only loses its place. LAST: tests that read what a HEAVIEST one built once for the session
# (``built_once``): at the end they find it built instead of waiting for the other worker to build it.
HEAVIEST = (
    "test_package.py::test_the_wheel_installs_and_runs_from_another_folder",
    "test_kaggle_upload.py::test_make_submit_kaggle_uploads_through_the_twin",
    "test_distributed.py::test_ddp_on_two_processes_equals_one_process_at_the_same_global_batch",
    "test_distributed.py::test_two_process_cache_equals_one_process_cache_and_student_trains",
    "test_own_images.py::test_readme_own_images_commands_run_as_written",
    "test_sweep.py::test_racing_workers_start_exactly_the_trials_asked_for",
    "test_sweep.py::test_two_workers_share_one_study_without_losing_or_repeating_trials",
    "test_engine.py::test_sigterm_during_a_cli_run_saves_and_says_how_to_resume",
    "test_kaggle_notebook.py::test_the_notebook_guide_runs_as_written",
    "test_reliability.py::test_data_changed_after_training_is_refused_then_rerun",
    "test_sweep.py::test_a_killed_worker_leaves_its_trial_marked_failed",
)
LAST = (
    "test_distributed.py::test_batchnorm_statistics_are_averaged_over_ranks_before_validation_and_checkpoint",
    "test_distributed.py::test_a_layer_no_loss_reaches_does_not_stop_ddp",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``HEAVIEST`` first, then the other ``slow`` tests, then the rest in their usual order, ``LAST`` last."""
    def rank(item: pytest.Item) -> int:
        name = item.nodeid.split("/")[-1]
        if name in HEAVIEST:
            return HEAVIEST.index(name)
        if name in LAST:
            return len(HEAVIEST) + 3
        return len(HEAVIEST) + (1 if item.get_closest_marker("slow") else 2)

    items.sort(key=rank)  # stable: ties keep their order
