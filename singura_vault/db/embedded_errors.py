"""The error of the embedded PostgreSQL, and how a failed tool run is reported."""

from __future__ import annotations

import subprocess


class EmbeddedPostgresError(Exception):
    """The embedded PostgreSQL server could not be prepared, started or stopped."""


def tool_output(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or result.stdout or "").strip()
    return text[-2000:] if text else "no output"
