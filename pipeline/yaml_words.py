"""YAML 1.1's boolean words (``yes``/``no``/``on``/``off`` in any case), kept as the user wrote them until the
schema says what the key holds.

PyYAML follows YAML 1.1, where ``off`` is the boolean False: ``student.amp: off`` would reach a string key as
False and be refused. The config reader builds such a word as a :class:`YamlWord` (a ``str`` that remembers its
boolean), and :func:`settle` turns it into the string where the key takes a string (``amp: off``,
``model: on``) and into the boolean where it takes a boolean (``skip_bad: yes``) or anything (loss kwargs).
``true``/``false`` stay booleans, as in YAML 1.2.
"""
from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union

import yaml


class YamlWord(str):
    """A YAML 1.1 boolean word (``yes``, ``Off``, ...) as written; ``flag`` is the boolean YAML 1.1 reads."""

    flag: bool

    def __new__(cls, text: str, flag: bool) -> "YamlWord":
        word = super().__new__(cls, text)
        word.flag = flag
        return word


def construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """PyYAML constructor for ``tag:yaml.org,2002:bool``: ``true``/``false`` -> bool, other words -> YamlWord."""
    value = loader.construct_yaml_bool(node)
    text = loader.construct_scalar(node)
    return value if str(text).lower() in ("true", "false") else YamlWord(str(text), value)


def _admits(ann: Any, word: str) -> str:
    """What a field annotated ``ann`` makes of ``word``: "str" (keep the text), "bool", or "any"."""
    origin = typing.get_origin(ann)
    if ann is str:
        return "str"
    if ann is bool:
        return "bool"
    if origin is Literal:
        return "str" if word in typing.get_args(ann) else "bool" if any(isinstance(a, bool) for a in
                                                                        typing.get_args(ann)) else "str"
    if origin in (Union, types.UnionType):
        kinds = {_admits(a, word) for a in typing.get_args(ann) if a is not type(None)}
        # a Literal that lists the word wins (tensorboard: auto | bool); then a plain string; then a boolean
        return "str" if "str" in kinds and ("bool" not in kinds or word in _literal_values(ann)) else \
            "bool" if "bool" in kinds else "any"
    return "any"


def _literal_values(ann: Any) -> set[Any]:
    out: set[Any] = set()
    for a in typing.get_args(ann):
        if typing.get_origin(a) is Literal:
            out.update(typing.get_args(a))
    return out


def _settle_value(value: Any, ann: Any) -> Any:
    if isinstance(value, YamlWord):
        kind = _admits(ann, str(value))
        return str(value) if kind == "str" else value.flag
    origin = typing.get_origin(ann)
    if isinstance(value, list):
        item = typing.get_args(ann)[0] if origin is list and typing.get_args(ann) else Any
        return [_settle_value(v, item) for v in value]
    if isinstance(value, dict):
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            return value  # a nested schema settles its own keys (its validator runs on this dict)
        args = typing.get_args(ann)
        item = args[1] if origin is dict and len(args) == 2 else Any
        return {k: _settle_value(v, item) for k, v in value.items()}
    return value


def settle(fields: dict[str, Any], data: Any) -> Any:
    """``data`` (a section's raw dict) with each YamlWord made the string or boolean its field takes;
    ``fields``: the schema's ``model_fields``. Keys the schema lacks are left for its unknown-key error."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        fld = fields.get(key)
        out[key] = _settle_value(value, fld.annotation) if fld is not None else (
            str(value) if isinstance(value, YamlWord) else value)
    return out
