"""docs/config.md is generated from the schema: the committed file must equal what the generator prints now."""
from __future__ import annotations

from pydantic import Field

from pipeline import config_doc
from pipeline.config import REPO_ROOT, Config


def test_committed_config_reference_matches_the_schema():
    committed = (REPO_ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == config_doc.render(), (
        "docs/config.md is out of date with pipeline/config.py: run "
        "`.venv/bin/python -m pipeline.config_doc > docs/config.md` and commit it")


def test_every_schema_key_is_documented():
    text = config_doc.render()
    for heading, model, _ in config_doc.SECTIONS:
        assert f"## {heading}\n" in text
        for name, info in model.model_fields.items():
            if not config_doc.type_name(info.annotation).startswith("`"):
                assert f"| `{name}` |" in text, (heading, name)


def test_a_changed_schema_changes_the_reference(monkeypatch):
    """The check can fail: a new key in a section shows up in the rendered reference."""
    before = config_doc.render()

    class Extended(Config):
        brand_new_key: int = Field(7, ge=1, description="a key added to the schema")

    sections = tuple((h, Extended if m is Config else m, a) for h, m, a in config_doc.SECTIONS)
    monkeypatch.setattr(config_doc, "SECTIONS", sections)
    after = config_doc.render()
    assert after != before
    assert "| `brand_new_key` | int | `7` | ≥ 1 | a key added to the schema |" in after
