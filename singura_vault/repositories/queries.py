"""Named SQL queries, loaded once from the ``sql/*.sql`` files beside this module.

Each query starts with a ``-- name: some_name`` line; the text up to the next
name line is the query. Keeping SQL in .sql files (never in f-strings) lets a
reader review every statement the vault can run in one place, and keeps values
out of SQL text: queries take asyncpg ``$n`` parameters only.
"""

from __future__ import annotations

import re
from importlib import resources
from types import MappingProxyType
from typing import Final

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def _load() -> MappingProxyType[str, str]:
    queries: dict[str, str] = {}
    for entry in sorted(
        resources.files(__package__).joinpath("sql").iterdir(), key=lambda e: e.name
    ):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        parts = _NAME_LINE.split(text)
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice ({entry.name})")
            # The name rides along as a comment so that the slow-query log (which
            # sees only SQL text) can say which named query it was.
            queries[name] = f"/* singura:{name} */\n{body.strip()}"
    return MappingProxyType(queries)


QUERIES: Final = _load()


def query(name: str) -> str:
    """The SQL text of a named query (KeyError names a missing one at import time)."""
    return QUERIES[name]
