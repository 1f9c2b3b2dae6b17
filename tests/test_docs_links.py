"""Every relative link of README.md and docs/*.md points at a file that exists (and a heading that exists, for a
``#fragment``): the README sends readers to docs/, so a renamed file or section must not leave a dead link."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", text, re.M)}


def dead_links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)  # not inside code
    dead = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", link):
            continue  # https:, mailto:
        path, _, frag = link.partition("#")
        target = (page.parent / path) if path else page
        if not target.exists():
            dead.append(f"{link} (no such file)")
        elif frag and target.suffix == ".md" and frag not in anchors(target.read_text(encoding="utf-8")):
            dead.append(f"{link} (no such heading)")
    return dead


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_are_alive(page):
    assert dead_links(page) == []


def test_a_dead_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n[ok](other.md#a-section) [self](#page) [web](https://x.org/y)\n"
                    "[gone](missing.md) [no heading](other.md#b-section)\n```\n[in code](nowhere.md)\n```\n")
    assert dead_links(page) == ["missing.md (no such file)", "other.md#b-section (no such heading)"]
