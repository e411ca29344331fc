"""Docs that must not drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r'"((?:SINGURA|DB|DATABASE|ENCRYPTION|OTEL)_[A-Z_]+)"')


def variables_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "singura_vault").rglob("*.py"):
        if "proto" in path.parts:
            continue
        found |= set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    return found


def variables_in_docs() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.MULTILINE))


def test_every_environment_variable_is_documented() -> None:
    """Each variable the package reads has a row in docs/configuration.md, and each
    row names a variable the package reads."""
    code, docs = variables_in_code(), variables_in_docs()
    assert code, "the scan found no variables at all"
    assert sorted(code - docs) == [], "undocumented variables"
    assert sorted(docs - code) == [], "documented variables the code does not read"
