"""YAML 1.1 reads ``off``/``no``/``yes``/``on`` as booleans; a config key takes them the way the user wrote them:
the string where the key holds a string (``student.amp: off``), the boolean where it holds a boolean."""
import typing
from pathlib import Path

import pytest
import yaml

from pipeline.config import Config, load_config

# every spelling PyYAML's YAML 1.1 resolver reads as a boolean
WORDS = [w for base in ("yes", "no", "on", "off", "true", "false") for w in (base, base.title(), base.upper())]
assert all(isinstance(yaml.safe_load(w), bool) for w in WORDS)


def _load(tmp_path: Path, key: str, text: str, how: str) -> Config:
    """``key: text`` from a config file (``how == "file"``) or as a ``key=text`` override."""
    section, _, leaf = key.rpartition(".")
    sections: dict = {"data": {"root": "somewhere"}}
    if how == "file":
        sections.setdefault(section, {})[leaf] = text if section else None
    body = "".join(f"{leaf}: {text}\n" if k == "" else f"{k}: {{{', '.join(f'{a}: {b}' for a, b in v.items())}}}\n"
                   for k, v in sections.items())
    p = tmp_path / "c.yaml"
    p.write_text(body)
    return load_config(p, [f"{key}={text}"] if how == "override" else [])


def _get(cfg: Config, key: str) -> typing.Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _literal_words() -> list[tuple[str, str]]:
    """(dotted key, value) for each value of a schema Literal that YAML 1.1 would read as a boolean."""
    out = []
    for section in ("", "data", "teacher", "cache", "student", "submit"):
        model = Config if not section else Config.model_fields[section].annotation
        for name, fld in model.model_fields.items():
            for ann in (fld.annotation, *typing.get_args(fld.annotation)):
                if typing.get_origin(ann) is typing.Literal:
                    out += [(f"{section}.{name}".lstrip("."), v) for v in typing.get_args(ann)
                            if isinstance(v, str) and v.lower() in {w.lower() for w in WORDS}]
    return out


def test_the_schema_has_such_words():
    assert ("student.amp", "off") in _literal_words() and ("teacher.amp", "off") in _literal_words()


@pytest.mark.parametrize("how", ["file", "override"])
@pytest.mark.parametrize("key,value", _literal_words())
def test_a_literal_value_yaml_reads_as_a_boolean_is_accepted_as_written(tmp_path, how, key, value):
    assert _get(_load(tmp_path, key, value, how), key) == value


@pytest.mark.parametrize("how", ["file", "override"])
@pytest.mark.parametrize("text", ["off", "Off", "OFF", "no", "No", "NO", "false", "False", "FALSE"])
@pytest.mark.parametrize("key", ["student.amp", "teacher.amp"])
def test_amp_off_no_false_mean_float32(tmp_path, how, text, key):
    assert _get(_load(tmp_path, key, text, how), key) == "off"


@pytest.mark.parametrize("how", ["file", "override"])
@pytest.mark.parametrize("text", ["yes", "No", "on", "OFF"])
@pytest.mark.parametrize("key", ["data.root", "submit.message", "teacher.model"])
def test_a_string_key_keeps_the_word(tmp_path, how, text, key):
    assert _get(_load(tmp_path, key, text, how), key) == text


@pytest.mark.parametrize("how", ["file", "override"])
@pytest.mark.parametrize("text,want", [("yes", True), ("On", True), ("true", True), ("no", False), ("OFF", False),
                                       ("false", False)])
@pytest.mark.parametrize("key", ["data.skip_bad", "submit.tta", "tensorboard"])
def test_a_boolean_key_reads_the_word_as_yaml_1_1_does(tmp_path, how, text, want, key):
    assert _get(_load(tmp_path, key, text, how), key) is want


def test_free_form_values_keep_yaml_1_1_booleans():
    """A key that takes anything (a builder's or loss's kwargs) gets the boolean, as YAML 1.1 reads it."""
    from pydantic import BaseModel

    from pipeline.config_file import yaml_load
    from pipeline.yaml_words import settle

    class M(BaseModel):
        kwargs: dict[str, typing.Any]
        items: list[typing.Any]

    raw = yaml_load("kwargs: {a: yes, b: Off, c: [on]}\nitems: [no, true]\n", words=True)
    assert settle(M.model_fields, raw) == {"kwargs": {"a": True, "b": False, "c": [True]}, "items": [False, True]}


def test_tensorboard_auto_stays_auto(tmp_path):
    assert _load(tmp_path, "tensorboard", "auto", "override").tensorboard == "auto"
