"""Unique fake secrets that tests store, so leaks can be searched for afterwards.

Every value a test stores in the vault comes from :func:`canary`; the session
fixture in conftest scans the whole run's log for all of them, and
test_credentials scans a pg_dump. A canary found anywhere is a leak.
"""

from __future__ import annotations

import uuid

_issued: list[str] = []


def canary(label: str = "secret") -> str:
    """A fresh, unmistakable secret value."""
    value = f"canary-{label}-{uuid.uuid4().hex}"
    _issued.append(value)
    return value


def issued() -> tuple[str, ...]:
    return tuple(_issued)
