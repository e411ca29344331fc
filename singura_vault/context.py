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
    REVEALER = "revealer"  # RevealCredential


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


_current: ContextVar[RequestContext | None] = ContextVar("singura_request", default=None)
_SYSTEM = RequestContext(request_id="", actor="system")


def current_request() -> RequestContext:
    """The context of the RPC being served, or a 'system' context outside one."""
    return _current.get() or _SYSTEM


def bind_request(context: RequestContext) -> None:
    """Set the context for the current task (the interceptor calls this per RPC)."""
    _current.set(context)
