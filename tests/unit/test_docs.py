"""Docs that must not drift from the code."""

from __future__ import annotations

import re

from tests.support.docs import ROOT, variables_in_docs

VARIABLE = re.compile(r'"((?:SINGURA|DB|DATABASE|ENCRYPTION|OTEL)_[A-Z_]+)"')


def variables_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "singura_vault").rglob("*.py"):
        if "proto" in path.parts:
            continue
        found |= set(VARIABLE.findall(path.read_text(encoding="utf-8")))
    return found


def test_every_environment_variable_is_documented() -> None:
    """Each variable the package reads has a row in docs/configuration.md, and each
    row names a variable the package reads."""
    code, docs = variables_in_code(), variables_in_docs()
    assert code, "the scan found no variables at all"
    assert sorted(code - docs) == [], "undocumented variables"
    assert sorted(docs - code) == [], "documented variables the code does not read"
