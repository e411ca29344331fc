"""The wall clock that jobs and use cases take as "now", injected so tests can move it.

Version destruction, the connection purge, expiry reminders and webhook retries each
take a ``Clock``; production passes ``utc_now``, a test passes one it moves instead of
sleeping. One definition, so that the jobs that must agree on "now" (a destruction
scheduled by CredentialService and carried out by VersionDestroyer) read the same one.
Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utc_now"]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
