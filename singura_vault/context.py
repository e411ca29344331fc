"""Request-scoped facts (request id, acting principal) carried in contextvars.

The server interceptor sets them for each RPC; the service layer reads them to
stamp audit events, and structlog picks up the same values for log lines.
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass, field
from uuid import UUID


class Role(enum.Enum):
    """What an organization key may do; the value is the database spelling."""

    READER = "reader"  # metadata of connections and credentials
    WRITER = "writer"  # manage connections; store, replace and revoke credentials
    REVEALER = "revealer"  # RevealCredential of every type but refresh tokens
    # RevealCredential of refresh tokens
    REFRESH_TOKEN_REVEALER = "refresh_token_revealer"  # noqa: S105 - a role name, not a secret
    SIGNALS = "signals"  # IngestProviderSignal (provider revocation signals)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an admin key, or an organization key with roles."""

    key_id: str
    organization_id: UUID | None  # None for an admin key
    roles: frozenset[Role] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.organization_id is None


@dataclass(frozen=True)
class RequestContext:
    """Who is calling and under which request id."""

    request_id: str
    actor: str
    principal: Principal | None = None
    # The caller's consistency token (x-consistency-token): a WAL position its reads
    # must see, so a replica that has not replayed it is skipped.
    min_lsn: int | None = None
    # The RPC may be answered from a replica within SINGURA_REPLICA_MAX_LAG: set from
    # api/replica_reads.reads_from_replica alone, read by db/replica.ReadRouter alone.
    replica_ok: bool = False


_current: ContextVar[RequestContext | None] = ContextVar("singura_request", default=None)
_SYSTEM = RequestContext(request_id="", actor="system")


def current_request() -> RequestContext:
    """The context of the RPC being served, or a 'system' context outside one."""
    return _current.get() or _SYSTEM


def bind_request(context: RequestContext) -> None:
    """Set the context for the current task (the interceptor calls this per RPC)."""
    _current.set(context)
    _written.set(None)


# The primary's WAL position after this RPC's last write: the consistency token it
# returns when replicas serve reads (db/replica.py).
_written: ContextVar[int | None] = ContextVar("singura_written_lsn", default=None)


def note_write_position(lsn: int) -> None:
    _written.set(max(lsn, _written.get() or 0))


def write_position() -> int | None:
    return _written.get()


def format_lsn(lsn: int) -> str:
    """A WAL position in PostgreSQL's text form, e.g. ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int | None:
    """``16/B374D848`` -> int; None for anything else (the caller says what is wrong)."""
    high, slash, low = text.strip().partition("/")
    if not slash or not (0 < len(high) <= 8 and 0 < len(low) <= 8):
        return None
    try:
        return int(high, 16) << 32 | int(low, 16)
    except ValueError:
        return None
