"""``distil sweep``: search student settings on one cached teacher with Optuna.

The teacher and its cache are computed once; every trial is a normal student run under
``runs/<name>/sweeps/<study>/trial-NNNN/`` (resumable, atomic, budget-gated). Trials report validation
accuracy each epoch to Optuna's pruner. Several workers — ``--workers K`` processes here, or the same
command on other machines — share one study through Optuna's storage: a journal file by default, any
RDB URL (``sqlite:///x.db``, ``postgresql://...``) for many machines.

The search space is YAML: its schema and an example are in ``search_space.py``.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .config import ConfigError, load_config, yaml_load
from .search_space import OBJECTIVES, SweepError, check_space, load_space, override_value
from .runner import cores, run_stage

log = logging.getLogger(__name__)


def storage_for(url: Optional[str], folder: Path) -> Any:
    """Optuna storage: an RDB URL as given (with heartbeats, so a dead worker's trial is failed), else a
    journal file in ``folder`` that processes on this machine share."""
    import optuna

    if url:
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
        except Exception as exc:  # noqa: BLE001 - driver missing, unreachable server, bad URL
            raise SweepError(f"storage {url!r}: {type(exc).__name__}: {exc}") from None
    from optuna.storages.journal import JournalFileBackend

    folder.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "journal.log")))


class Sweep:
    """One study over ``space`` for the student of ``config`` (+ ``overrides``)."""

    def __init__(self, config: str, space_path: str, overrides: Sequence[str] = (), storage: Optional[str] = None):
        self.config, self.space_path, self.overrides = config, space_path, list(overrides)
        self.space = load_space(space_path)
        self.cfg = load_config(config, self.overrides)
        self.name = self.space.study or Path(space_path).stem
        self.folder = self.cfg.run_dir / "sweeps" / self.name
        self.storage_url = storage
        self._storage: Any = None

    def study(self) -> Any:
        """The study (created on first use, in the storage)."""
        import optuna

        if self._storage is None:
            self._storage = storage_for(self.storage_url, self.folder)
        pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                  "asha": optuna.pruners.SuccessiveHalvingPruner(),
                  "none": optuna.pruners.NopPruner()}[self.space.pruner]
        study = optuna.create_study(storage=self._storage, study_name=self.name, load_if_exists=True,
                                    sampler=optuna.samplers.RandomSampler(), pruner=pruner,
                                    directions=[OBJECTIVES[o] for o in self.space.objectives])
        # each worker its own sampler seed, and a study taken up again (a rerun with more --trials) a new one:
        # samplers seeded alike propose the same points (their random start-up ignores the trials already told)
        worker = int(os.environ.get("DISTIL_SWEEP_WORKER", "0"))
        seed = (self.cfg.seed * 1000 + worker) * 100_003 + len(study.get_trials(deepcopy=False))
        study.sampler = (optuna.samplers.RandomSampler(seed=seed) if self.space.sampler == "random"
                         else optuna.samplers.TPESampler(seed=seed, multivariate=True))
        return study

    def trial_dir(self, number: int) -> Path:
        return self.folder / f"trial-{number:04d}"

    # ---- one trial -------------------------------------------------------
    def objective(self, trial: Any) -> Any:
        import optuna

        from .models import BudgetError, check_budget, check_count, create_student, predicted_params

        values = {k: spec.suggest(trial, k) for k, spec in self.space.params.items()}
        folder = self.trial_dir(trial.number)
        over = (self.overrides + [f"{k}={override_value(v)}" for k, v in {**self.space.fixed, **values}.items()]
                + [f"student.dir={folder.relative_to(self.cfg.run_dir)}"])
        trial.set_user_attr("overrides", over)
        cfg = load_config(self.config, over)
        try:
            if self.space.fit_budget:  # the shape at the budget: its width scaled to the largest that fits
                over = over + [f"student.kwargs.width={self._fit_width(cfg, trial.number)}"]
                trial.set_user_attr("overrides", over)
                cfg = load_config(self.config, over)
            counted = predicted_params(cfg.student.model, self.num_classes, cfg.student.kwargs)
            if counted is not None:  # gated from its kwargs before it is built
                check_count(counted, cfg.student.budget, f"trial {trial.number} student")
            student = create_student(cfg.student.model, self.num_classes, cfg.student.img_size, **cfg.student.kwargs)
            params = check_budget(student, cfg.student.budget, f"trial {trial.number} student", cfg.student.img_size)
        except BudgetError as exc:  # never trained: pruned with the reason
            trial.set_user_attr("pruned_reason", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        macs = _macs(student, cfg.student.img_size)
        trial.set_user_attr("params", params)
        trial.set_user_attr("macs", macs)
        if self.space.trial_seconds is not None:  # equal training time, not equal epochs
            over = over + [f"student.epochs={self._epochs_within(student, cfg)}"]
            trial.set_user_attr("overrides", over)
        single = len(self.space.objectives) == 1

        def report(row: dict[str, Any]) -> None:
            if single:
                trial.report(row["val_acc"], row["epoch"])
                if trial.should_prune():
                    trial.set_user_attr("pruned_reason", f"pruner stopped it after epoch {row['epoch']}")
                    raise optuna.TrialPruned(f"epoch {row['epoch']}: val_acc {row['val_acc']:.4f}")

        result = run_stage("student", self.config, over, callbacks=[report])
        trial.set_user_attr("val_acc", result["val_acc"])
        trial.set_user_attr("train_s", result["train_s"])
        trial.set_user_attr("epochs", result["epochs"])
        got = {"val_acc": result["val_acc"], "macs": macs, "params": params, "train_s": result["train_s"]}
        out = [got[o] for o in self.space.objectives]
        return out[0] if len(out) == 1 else out

    @functools.cached_property
    def layout(self) -> Any:
        from .data import open_data

        return open_data(self.cfg)

    @property
    def num_classes(self) -> int:
        return self.layout.num_classes

    def _fit_width(self, cfg: Any, number: int) -> float:
        """The largest ``student.kwargs.width`` of this trial's student under the budget (``BudgetError`` if none)."""
        from .models import BudgetError
        from .models.students import widest

        sc = cfg.student
        found = widest(sc.model, self.num_classes, sc.kwargs, sc.budget, sc.img_size)
        if found is None:
            raise BudgetError(f"trial {number} student: no width from 0.05 fits the budget of {sc.budget:,}")
        return found[0]

    def _epochs_within(self, student: Any, cfg: Any) -> int:
        """The trial's epochs under ``trial_seconds``: measured on this student (``trial_time``)."""
        from .trial_time import trial_epochs

        epochs, step_s, steps = trial_epochs(cfg, student, self.layout, self.space.trial_seconds)
        log.info("sweep %s: %.3f s a step x %d steps: %d epochs in %.0f s", self.name, step_s, steps, epochs,
                 self.space.trial_seconds)
        return epochs

    # ---- workers ----------------------------------------------------------
    def fail_dead_trials(self, study: Any, min_age_s: float = 30.0) -> list[int]:
        """Mark RUNNING trials whose worker died (their trial lock is free) as FAIL; returns their numbers."""
        from datetime import datetime

        from filelock import FileLock, Timeout
        from optuna.trial import TrialState

        dead = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            age = (datetime.now() - t.datetime_start).total_seconds() if t.datetime_start else 0.0
            lock = self.trial_dir(t.number) / ".trial.lock"
            if age < min_age_s and not lock.exists():
                continue
            fl = FileLock(str(lock))
            try:
                fl.acquire(timeout=0)
            except Timeout:
                continue  # its worker is alive
            try:  # a worker holds the lock until its trial is told: a free lock on a RUNNING trial is a dead worker,
                # unless the worker told and released it since the list above was read
                if study._storage.get_trial(t._trial_id).state != TrialState.RUNNING:
                    continue
                study._storage.set_trial_user_attr(t._trial_id, "failed_reason", "its worker died (trial lock free); "
                                                   f"resume its run by hand from {self.trial_dir(t.number)}/last.pt")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                dead.append(t.number)
            finally:
                fl.release()
        if dead:
            log.warning("sweep %s: trials %s were left running by a dead worker: marked failed", self.name, dead)
        return dead

    def work(self, n_trials: int) -> None:
        """One worker: run trials until the study holds ``n_trials`` (of any state).

        Counting the trials and asking for a new one happen under one file lock beside the study, so workers on
        this machine never start more than ``n_trials`` between them (Optuna's ``MaxTrialsCallback`` counts after
        a trial ends: two workers finishing together each started one more). Workers on other machines sharing an
        RDB storage can still overshoot by one trial each."""
        import optuna
        from filelock import FileLock
        from optuna.trial import TrialState

        from .locks import held

        study = self.study()
        self.fail_dead_trials(study)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.folder.mkdir(parents=True, exist_ok=True)
        ask_lock = FileLock(str(self.folder / ".ask.lock"))
        while True:
            with ask_lock:
                if len(study.get_trials(deepcopy=False)) >= n_trials:
                    return
                trial = study.ask()
            # the trial's lock is held until the trial is told, so another worker's fail_dead_trials never takes a
            # trial that is just finishing for one whose worker died
            with held(self.trial_dir(trial.number) / ".trial.lock", f"sweep trial {trial.number}"):
                try:
                    values = self.objective(trial)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                except ConfigError as exc:  # this trial's values give no valid config: the next trial may
                    log.warning("sweep %s: trial %d failed: %s", self.name, trial.number, exc)
                    study.tell(trial, state=TrialState.FAIL)
                except BaseException:
                    study.tell(trial, state=TrialState.FAIL)
                    raise
                else:
                    study.tell(trial, values)

    def run(self, n_trials: int, workers: int = 1) -> Any:
        """Train the teacher (when there is none) and build the cache once (reused when it matches), then
        ``workers`` processes run trials."""
        from .models.artifacts import artifact_ok

        check_space(self.space, self.config, self.overrides, self.space_path)
        if self.cfg.student.reads_teacher():
            if not artifact_ok(self.cfg.teacher_dir, "teacher"):
                run_stage("teacher", self.config, self.overrides)
            run_stage("cache", self.config, self.overrides)  # reused when it matches the teacher and data
        self.study()  # create it once, before the workers load it
        if workers <= 1:
            self.work(n_trials)
        else:
            cmd = [sys.executable, "-m", "pipeline", "sweep", "--config", self.config, "--space", self.space_path,
                   "--trials", str(n_trials), "--worker", *(["--storage", self.storage_url] if self.storage_url else []),
                   *self.overrides]
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores() // workers))}
            procs = [subprocess.Popen(cmd, env={**env, "DISTIL_SWEEP_WORKER": str(i)}) for i in range(workers)]
            codes = [p.wait() for p in procs]
            if any(codes):
                raise SweepError(f"sweep workers exited with {codes}; the study is kept: rerun the same command to go on")
        return self.study()

    # ---- results ----------------------------------------------------------
    def table(self, top: int = 10) -> str:
        from optuna.trial import TrialState

        study = self.study()
        trials = study.get_trials(deepcopy=False)
        done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.values[0])
        rest = [t for t in trials if t.state != TrialState.COMPLETE]
        keys = list(self.space.params)
        head = ["trial", "state", "val_acc", "params", "MMACs", "epochs", "train_s", *keys]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in [*done[:top], *rest]:
            val = t.user_attrs.get("val_acc")
            macs = t.user_attrs.get("macs")
            cells = [str(t.number), t.state.name.lower(), f"{val:.4f}" if val is not None else "",
                     str(t.user_attrs.get("params", "")), f"{macs / 1e6:.2f}" if macs else "",
                     str(t.user_attrs.get("epochs", "")), _fmt(t.user_attrs.get("train_s", "")),
                     *[_fmt(t.params.get(k)) for k in keys]]
            rows.append("| " + " | ".join(cells) + " |")
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
        return f"study {self.name} ({', '.join(f'{v} {k}' for k, v in counts.items())}):\n" + "\n".join(rows)

    def best_config(self, out: Path) -> Path:
        """Write the best trial's config: the base config plus its overrides, pointing at its trained student."""
        from .atomic import write_text
        from .config_file import _set_dotted

        study = self.study()
        best = max((t for t in study.get_trials(deepcopy=False) if t.values), key=lambda t: t.values[0], default=None)
        if best is None:
            raise SweepError(f"study {self.name} has no completed trial yet")
        raw: dict[str, Any] = {}
        base = os.path.relpath(Path(self.config).resolve(), Path(out).resolve().parent)
        cfg = load_config(self.config, best.user_attrs["overrides"])
        resolved = cfg.model_dump(mode="json")
        for item in best.user_attrs["overrides"]:
            k, v = item.split("=", 1)
            parts = k.split(".")
            whole = next((i for i, p in enumerate(parts) if p.isdigit()), None)
            if whole is not None:  # a list item (losses.1..., kwargs.channels.0): the whole list, as resolved
                k, value = ".".join(parts[:whole]), resolved
                for p in parts[:whole]:
                    value = value[p]
                _set_dotted(raw, k, value, str(out))
            else:
                _set_dotted(raw, k, yaml_load(v), str(out))
        head = (f"# best trial {best.number} of sweep {self.name}: val_acc {best.values[0]:.4f}\n"
                f"# submit it: .venv/bin/distil submit --config {out}\n")
        write_text(out, head + yaml.safe_dump({"base": base, "name": self.cfg.name, **raw}, sort_keys=False))
        return Path(out)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def _macs(model: Any, img_size: int) -> int:
    import torchinfo

    return int(torchinfo.summary(model, input_size=(1, 3, img_size, img_size), verbose=0).total_mult_adds)

