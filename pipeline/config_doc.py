"""The config reference, generated from the schema in ``pipeline/config.py`` so it cannot drift from it.

``python -m pipeline.config_doc > docs/config.md`` writes it; ``tests/test_config_doc.py`` checks that the committed
file equals what this module prints now.
"""
from __future__ import annotations

import json
import sys
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import AdapterConfig, CacheConfig, Config, DataConfig, LossTerm, StudentConfig, SubmitConfig, TeacherConfig

# (heading, the model, what the section is for); the order of docs/config.md
SECTIONS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("top level", Config, "The run as a whole; `data:` is the only section a config must have."),
    ("data", DataConfig, "Where the images are and how they are decoded (`pipeline/data/`)."),
    ("teacher", TeacherConfig, "The teacher stage: a timm model (or one of the registry's nets) fine-tuned on the task."),
    ("cache", CacheConfig, "The cache stage: the frozen teacher's outputs on K recorded views of every training image."),
    ("student", StudentConfig, "The student stage: the budgeted student, distilled from the cache."),
    ("student.losses[]", LossTerm, "One weighted loss term (`pipeline/losses/`, registry `LOSSES`); `kwargs` are "
     "checked against the loss function's signature."),
    ("student.adapters.<field>", AdapterConfig, "The trainable adapter from the student's tensor to the teacher's "
     "(`feat` or `map`); never part of the deployed student."),
    ("submit", SubmitConfig, "The submit stage: predictions on the evaluation images, a checked CSV, an optional upload."),
)


def type_name(annotation: Any) -> str:
    """A short, readable name of a field's type: ``int``, ``auto | bf16``, ``float or null``, ``list of str``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {type_name(args[0])} to {type_name(args[1])}" if args else "map"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"`{annotation.__name__}`"
    return getattr(annotation, "__name__", str(annotation))


def default_of(info: FieldInfo) -> str:
    """The default as YAML-ish JSON (``0.001``, ``null``, ``[]``), or ``required``."""
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    return f"`{json.dumps(value)}`"


_BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"),
           ("max_length", "length ≤"), ("pattern", "matches"))


def bounds_of(info: FieldInfo) -> str:
    """The field's constraints from its metadata: ``≥ 1, ≤ 1024``."""
    out = []
    for meta in info.metadata:
        for attr, sign in _BOUNDS:
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} `{value}`" if attr == "pattern" else f"{sign} {value}")
    return ", ".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section(heading: str, model: type[BaseModel], about: str) -> str:
    """One markdown table: key, type, default, allowed values, description."""
    rows = [f"## {heading}", "", about, "", "| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            continue  # a nested section: its own table
        rows.append(f"| `{name}` | {type_name(info.annotation)} | {_cell(default_of(info))} | "
                    f"{_cell(bounds_of(info))} | {_cell(info.description or '')} |")
    return "\n".join(rows)


def render() -> str:
    """The whole of docs/config.md."""
    head = ("# Config reference\n\n"
            "Generated from the schema (`pipeline/config.py`) by `python -m pipeline.config_doc > docs/config.md`; "
            "a test fails when\nthis file and the schema disagree, so regenerate it after changing the schema. A "
            "config is YAML with these\nsections; unknown keys, wrong types and values outside the allowed range "
            "fail at load, naming the file and the\nkey. Defaults here are the schema's: the shipped configs "
            "(`configs/*.yaml`) set many keys (read them as examples).\nAny key can be overridden on the command "
            "line as `section.key=value` (`student.epochs=3`, `student.losses.1.kwargs.temperature=2`).\n")
    return head + "\n" + "\n\n".join(section(*s) for s in SECTIONS) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
