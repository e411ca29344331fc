"""Signed-in operators, kept in this process's memory.

A session holds the operator's API key (an ``OperatorKey``), what the vault said the
key is (admin, or confined to one organization), a CSRF token for its forms, and two
clocks: it ends after ``idle_s`` without a request and ``lifetime_s`` after sign-in,
whichever comes first. The browser holds only the session id, 256 random bits, in a
cookie; the id is never logged (``SessionStore`` logs a short digest of it instead).

The store is bounded: at ``max_sessions`` the least recently used session ends. A
restart of the console ends every session (operators sign in again); nothing is
written to disk.

The clock is injected (``clock``, seconds, monotonic) so that tests move time instead
of sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from singura_vault.console.vault_client import OperatorKey
from singura_vault.logs import get_logger

log = get_logger(__name__)

Clock = Callable[[], float]
DEFAULT_IDLE_S = 15 * 60
DEFAULT_LIFETIME_S = 8 * 60 * 60
DEFAULT_MAX_SESSIONS = 1000


def session_digest(session_id: str) -> str:
    """A short, one-way name for a session in logs."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:12]


@dataclass
class Session:
    """One signed-in operator."""

    id: str
    key: OperatorKey
    is_admin: bool
    # The organization an organization key is confined to (None for an admin key).
    organization_id: str | None
    organization_name: str
    csrf_token: str
    created: float
    last_seen: float
    # The last "verify now" result per chain ("" is the system chain), for the audit page.
    verifications: dict[str, Any] = field(default_factory=dict)
    # Messages for the next page ("API key revoked", ...).
    notices: list[str] = field(default_factory=list)

    def csrf_ok(self, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), token.encode())

    def take_notices(self) -> list[str]:
        taken, self.notices = self.notices, []
        return taken


class SessionStore:
    """Sessions by id, with idle and absolute timeouts."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        idle_s: float = DEFAULT_IDLE_S,
        lifetime_s: float = DEFAULT_LIFETIME_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self._clock = clock
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self._max = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(
        self,
        key: OperatorKey,
        *,
        is_admin: bool,
        organization_id: str | None,
        organization_name: str = "",
    ) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            key=key,
            is_admin=is_admin,
            organization_id=organization_id,
            organization_name=organization_name,
            csrf_token=secrets.token_urlsafe(32),
            created=now,
            last_seen=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            _, oldest = self._sessions.popitem(last=False)
            log.info("console_session_evicted", session=session_digest(oldest.id))
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with this id (its idle clock restarted), or None; an
        expired one is ended here."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen >= self.idle_s or now - session.created >= self.lifetime_s:
            self.end(session_id, reason="expired")
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def end(self, session_id: str, *, reason: str = "signed_out") -> None:
        if self._sessions.pop(session_id, None) is not None:
            log.info("console_session_ended", session=session_digest(session_id), reason=reason)
