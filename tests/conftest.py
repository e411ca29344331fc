"""Fixtures every test shares, unit and integration alike.

Only what needs no PostgreSQL and no server lives here, so that ``pytest tests/unit``
starts neither: the run's log, scanned at the end for the plaintext canaries the tests
stored. The PostgreSQL and vault fixtures are in tests/integration/conftest.py.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from singura_vault.logs import configure_logging
from tests.support import canaries


@pytest.fixture(scope="session", autouse=True)
def run_log() -> Iterator[Path]:
    """Every log event of the whole run goes to one JSON file; at the end it is
    scanned for the plaintext canaries the tests stored: none may appear."""
    path = Path(tempfile.mkdtemp(prefix="sv-log-")) / "run.jsonl"
    with path.open("w", encoding="utf-8") as stream:
        configure_logging("debug", "json", stream=stream, cache_loggers=False)
        yield path
        stream.flush()
    text = path.read_text(encoding="utf-8")
    leaked = [c for c in canaries.issued() if c in text]
    shutil.rmtree(path.parent, ignore_errors=True)
    assert not leaked, f"{len(leaked)} stored secret values appeared in the run's logs"
