"""The README's Guarantees section names tests that exist."""

from __future__ import annotations

import re

from .procs import REPO

README = REPO / "README.md"


def guarantees_section() -> str:
    text = README.read_text()
    start = text.index("\n## Guarantees\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_test_the_guarantees_name_exists() -> None:
    section = guarantees_section()
    # "`file::a`, `::b`": a bare ::name continues the file named before it.
    references, current = [], ""
    for match in re.finditer(r"`((?:tests/[\w/]+\.py)?::\w+)(?:\[[\w-]+\])?`", section):
        path, name = match.group(1).split("::")
        current = path or current
        references.append((current, name))
    assert len(references) >= 10
    for path, name in references:
        source = (REPO / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{path}::{name}"
