"""A sweep's search space: the YAML schema (``SweepSpace``), its loading and its check against the config.

    study: food10-mini-kd            # optional (default: the space file's stem)
    objectives: [val_acc]            # or [val_acc, macs | params | train_s]: a Pareto front (no pruning then)
    trial_seconds: 600               # optional: each trial's epochs from its measured step time (trial_time.py)
    fit_budget: true                 # optional: each trial's student.kwargs.width = the largest under student.budget
    pruner: median                   # median | asha | none
    sampler: tpe                     # tpe | random
    fixed: {student.epochs: 20}      # overrides every trial gets
    params:                          # float / int (low, high, step, log) or categorical (choices)
      student.losses.1.kwargs.temperature: {type: float, low: 1.0, high: 8.0, log: true}
      student.kwargs.width: {type: float, low: 0.6, high: 1.1}
      student.model: {type: categorical, choices: [dwsep, ghost]}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import ConfigError, load_config, yaml_load

OBJECTIVES = {"val_acc": "maximize", "macs": "minimize", "params": "minimize", "train_s": "minimize"}


class SweepError(ValueError):
    """A sweep's search space or storage is invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ParamSpec(_Strict):
    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _complete(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs choices: [...]")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        return self

    def values_to_check(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.type == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)


class SweepSpace(_Strict):
    study: Optional[str] = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    objectives: list[Literal["val_acc", "macs", "params", "train_s"]] = Field(default_factory=lambda: ["val_acc"],
                                                                                min_length=1)
    # each trial trains for as many epochs as fit this many seconds of its own steps (at most student.epochs)
    trial_seconds: Optional[float] = Field(None, gt=0, le=7 * 24 * 3600)
    # each trial's student.kwargs.width is set to the largest whose count fits student.budget (models.students.widest),
    # so shapes compare at the budget: a sampled shape over it is scaled down, not pruned, and one under it scaled up
    fit_budget: bool = False
    pruner: Literal["median", "asha", "none"] = "median"
    sampler: Literal["tpe", "random"] = "tpe"
    fixed: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, ParamSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _first_is_accuracy(self) -> "SweepSpace":
        if self.objectives[0] != "val_acc":
            raise ValueError("the first objective must be val_acc")
        if self.trial_seconds is not None and self.pruner != "none":  # epoch N is another point of each schedule
            raise ValueError("trial_seconds gives trials different epoch counts, so a pruner would compare epoch N "
                             "of schedules of different lengths: set pruner: none")
        if self.fit_budget and "student.kwargs.width" in {*self.params, *self.fixed}:
            raise ValueError("fit_budget sets student.kwargs.width for every trial: leave it out of params and fixed")
        return self


def override_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def load_space(path: str | Path) -> SweepSpace:
    """Read and validate a search-space YAML (unknown keys, bad types, duplicate keys fail, naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"search space {path} not found (shipped: {', '.join(sorted(p.name for p in Path('configs/sweeps').glob('*.yaml')))})")
    try:
        raw = yaml_load(path.read_text())
        space = SweepSpace.model_validate(raw)
    except yaml.YAMLError as exc:
        raise SweepError(f"search space {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise SweepError(f"invalid search space {path}:\n" + "\n".join(lines)) from None
    for key in [*space.params, *space.fixed]:
        if not key.startswith("student."):
            raise SweepError(f"search space {path}: {key!r}: a sweep trains students on one teacher and one cache, "
                             "so only student.* keys can vary (run another config for other teachers or caches)")
    return space


def check_space(space: SweepSpace, config: str, overrides: Sequence[str], src: str) -> None:
    """Every parameter's extreme values (and every choice) must give a valid config: fail before any trial."""
    base = list(overrides) + [f"{k}={override_value(v)}" for k, v in space.fixed.items()]
    if space.fit_budget:
        import inspect

        from .models import STUDENTS

        spec = space.params.get("student.model")
        for name in (spec.values_to_check() if spec else [load_config(config, base).student.model]):
            if name in STUDENTS and "width" not in inspect.signature(STUDENTS.get(name)).parameters:
                raise SweepError(f"search space {src}: fit_budget scales student.kwargs.width, but student {name!r} "
                                 "has no width keyword: drop fit_budget or that student")
    for key, spec in space.params.items():
        for v in spec.values_to_check():
            try:
                load_config(config, base + [f"{key}={override_value(v)}"])
            except ConfigError as exc:
                raise SweepError(f"search space {src}: {key} = {v!r} does not give a valid config:\n{exc}") from None


