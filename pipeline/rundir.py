"""A run's folder ``runs/<name>/``: one sub-folder per stage (with the resolved config beside its
artifacts), ``done.json`` per finished stage, ``summary.json`` for the whole run, and the command
lines that re-run a stage (for messages)."""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from . import distributed, provenance
from .atomic import NotWritableError, finish_switch, remove_stale_temps, switch, write_json
from .config import Config
from .confidence import accuracy_interval
from .locks import held


log = logging.getLogger(__name__)

RECORDS = ("config.yaml", "metrics.csv")  # what describes a trained model: written beside it, switched in with it
# files made from a stage's deployable file by a later tool: removed when the stage trains new weights
DERIVED = {"student": ("student.onnx", "student.int8.onnx", "export.json")}


def drop_derived(folder: Path, kind: Any) -> None:
    """Remove what a later tool built from the ``kind`` stage's model in ``folder`` (``DERIVED``): it is not of the
    model that replaced it."""
    for name in DERIVED.get(str(kind), ()):
        (folder / name).unlink(missing_ok=True)


def program() -> str:
    """How to call distil again, as the user can type it here: ``distil`` when it is on PATH, else the
    console script or interpreter of this process (``.venv/bin/distil``) relative to the current folder."""
    bindir = Path(sys.executable).parent
    script = bindir / "distil"
    if script.is_file():
        if shutil.which("distil") == str(script):
            return "distil"
        return relative_to_cwd(script)
    return f"{relative_to_cwd(Path(sys.executable))} -m pipeline"


def relative_to_cwd(p: Path) -> str:
    """``p`` relative to the working directory when it is inside it, else as it is."""
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


class RunDir:
    """``runs/<name>`` of a config; ``config_path`` and ``overrides`` are how the user asked for it."""

    def __init__(self, cfg: Config, config_path: Optional[str] = None, overrides: Sequence[str] = (), force: bool = False,
                 callbacks: Sequence[Callable[[dict[str, Any]], None]] = ()):
        """``callbacks``: called with each epoch's metrics row of the stage's engine (``runner.run_stage``)."""
        self.cfg, self.root = cfg, cfg.run_dir
        self.callbacks = list(callbacks)
        self.config_path = config_path or f"configs/{cfg.name}.yaml"
        self.overrides = list(overrides)
        self.force = force  # start the stage over: no resume, no reuse
        self._locks = ExitStack()
        self._held: set[str] = set()
        self.read_only = False  # a reading stage found the runs folder read-only (see reading())

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._locks.close()

    def stage(self, name: str, save_config: bool = True) -> Path:
        """``runs/<name>/<stage>/``, created and locked for this process (another run writing it is
        waited for), with the resolved config written beside its artifacts. Call it once the stage's
        checks have passed, so a refused run leaves the finished run's record as it was."""
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        if distributed.is_main():
            lock = d / ".lock"
            if str(lock) not in self._held:
                self._locks.enter_context(held(lock, f"{self.relative(d)}"))
                self._held.add(str(lock))
            remove_stale_temps(d)  # ours now (locked): what a killed or disk-full write left, before writing anything
            remove_stale_temps(provenance.pending(d))
            if finish_switch(provenance.pending(d), d, provenance.RECORD):  # a kill part-way through a decided switch
                drop_derived(d, (provenance.read_record(d) or {}).get("provenance", {}).get("stage"))
                log.warning("%s: finished switching to the model an interrupted run had finished "
                            "(pending/done.json)", self.relative(d))
            if save_config:
                self.cfg.save(d / "config.yaml")
        return d

    def reading(self, name: str) -> Optional[Path]:
        """``stage(name)`` for a stage that only reads the run (``submit`` without an upload): where the runs folder
        cannot be written (read-only mount, another user's), None and a warning instead of an error, and
        ``update_summary`` leaves summary.json as it is. No writer can hold a lock there that this process could not
        see: ``provenance.being_written`` probes it read-only."""
        try:
            return self.stage(name)
        except NotWritableError as exc:
            log.warning("%s. This stage only reads the run: it goes on, without updating summary.json", exc)
            self.read_only = True
            return None

    def command(self, stage: str, force: bool = False) -> str:
        """The command line that re-runs ``stage`` with the same config and overrides (``--force``: over)."""
        cfg_path = self.config_path
        try:
            cfg_path = str(Path(cfg_path).resolve().relative_to(Path.cwd()))
        except ValueError:
            pass
        return " ".join([program(), stage, "--config", shlex.quote(cfg_path), *(["--force"] if force else []),
                         *map(shlex.quote, self.overrides)])

    def teacher_command(self) -> str:
        """The command that trains (or repairs) the teacher this run uses (another run's with ``teacher_from``)."""
        if self.cfg.teacher_from:
            return f"{program()} teacher --config configs/{self.cfg.teacher_from}.yaml"
        return self.command("teacher")

    def require(self, *folders: Path, today: Optional[dict[str, Optional[str]]] = None) -> None:
        """Accept the upstream stage folders ``folders`` only when finished, not being written, whole and current
        (``today``: content keys of the inputs now); else ``provenance.ProvenanceError`` (pipeline/provenance.py)."""
        for f in folders:
            provenance.require(self.cfg.path(self.cfg.runs_dir), f, today or {}, self.rebuild_command, own=self.root,
                               mine=frozenset(Path(p).parent.resolve() for p in self._held))

    def rebuild_command(self, folder: Path, kind: str, alone: bool = False) -> str:
        """The one command that rebuilds the stage ``kind`` in ``folder`` and every stage after it (``alone``:
        the command that runs that stage again, as it is)."""
        from .stages import pipeline_order

        what = kind if alone else f"all --from {kind}" if kind in pipeline_order() else "all --force"
        if Path(folder).resolve().parent == self.root.resolve():
            return self.command(what)
        return f"{program()} {what} --config configs/{Path(folder).parent.name}.yaml"

    def finish(self, out: Path, section: Optional[str], result: dict[str, Any], trained: bool = True,
               kind: Optional[str] = None, inputs: Optional[dict[str, Optional[str]]] = None,
               upstream: Sequence[Path] = ()) -> dict[str, Any]:
        """Record a finished stage: ``<out>/done.json`` and the ``summary.json`` section (if any), rank 0 only.
        A model the stage trained waits in ``pending/`` (``provenance.pending``): it and its record replace the old
        pair back to back (``_switch``), so a failure before leaves the old pair. ``trained=False`` with nothing
        pending (a finished stage run again) checks the deployable file is still the recorded one and keeps the wall
        time of the run that did the work. ``kind``: the record gets its provenance (``provenance.stamp``:
        ``inputs``' content keys, the ``upstream`` folders' identities); a new model drops what was derived from
        the old one (``DERIVED``)."""
        new = provenance.pending(out)
        switching = kind in provenance.ARTIFACTS and (new / provenance.ARTIFACTS[kind]).is_file()
        if not trained and not switching:
            before = provenance.read_record(out) or {}
            if kind is not None and before and distributed.is_main():  # reused: still the recorded file?
                torn = provenance.check_torn(out, before)
                if torn:
                    raise provenance.ProvenanceError(f"{self.relative(out)}: {torn}; start it over with: "
                                                     f"{self.command(section or kind, force=True)}")
            if "wall_s" in before:  # what the work recorded (images, views, ...), updated by today's result
                result = {**before, **result, "wall_s": before["wall_s"], "reused": True}
        if "val_acc" in result and isinstance(result.get("val_images"), int):  # the accuracy's 95% interval
            result = {**result, "val_acc_ci95": accuracy_interval(float(result["val_acc"]), result["val_images"])}
        if kind is not None:
            result = {**result, "provenance": provenance.stamp(self.cfg.path(self.cfg.runs_dir), new if switching else out,
                                                               kind, inputs or {}, list(upstream))}
        if distributed.is_main():
            if switching:
                self._switch(out, new, result)
            else:
                write_json(out / "done.json", result)
                self._settle_records(out, new, trained)
            if switching or trained:
                drop_derived(out, kind)
            if section:
                self.update_summary(section, {k: v for k, v in result.items() if k != "provenance"})
        return result

    @staticmethod
    def _settle_records(out: Path, new: Path, trained: bool) -> None:
        """No model to switch in: the config.yaml and metrics.csv a run wrote to ``new`` (``pending/``, beside a
        finished model) move in when it trained, else (a finished run run again) they are dropped."""
        if not new.is_dir():
            return
        for name in RECORDS:
            p = new / name
            if p.is_file():
                os.replace(p, out / name) if trained else p.unlink()
        try:
            new.rmdir()
        except OSError:  # something else is in it: left for the next run to switch or start over
            pass

    def _switch(self, out: Path, new: Path, record: dict[str, Any]) -> None:
        """Replace the deployable model in ``out`` by the one in ``new`` (its weights, then its description, config
        and metrics) and ``out/done.json`` by ``record`` (``atomic.switch``: decided once ``new/done.json`` is
        written; a kill part-way is completed by the stage's next run, ``stage``); ``new`` is removed."""
        switch(new, out, provenance.RECORD, (json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode())

    def update_summary(self, section: str, values: Any) -> dict[str, Any]:
        """Merge ``{section: values}`` into ``summary.json`` (atomically)."""
        p = self.root / "summary.json"
        if self.read_only:
            return self.summary()
        self.root.mkdir(parents=True, exist_ok=True)
        with held(self.root / ".summary.lock", f"{self.relative(p)}"):  # read-modify-write: one process at a time
            data: dict[str, Any] = {}
            if p.is_file():
                try:
                    data = json.loads(p.read_text())
                except ValueError:
                    data = {}
            data[section] = values
            data["name"] = self.cfg.name
            write_json(p, data)
        return data

    def summary(self) -> dict[str, Any]:
        p = self.root / "summary.json"
        try:
            return json.loads(p.read_text()) if p.is_file() else {}
        except ValueError:
            return {}

    def relative(self, p: Path) -> str:
        """``p`` relative to the working directory when it is inside it (for what the user reads)."""
        try:
            return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(p)
