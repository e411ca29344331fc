"""Request-scoped facts (request id, acting principal) carried in contextvars.

The server interceptor sets them for each RPC; the service layer reads them to
stamp audit events, and structlog picks up the same values for log lines.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    """Who is calling and under which request id."""

    request_id: str
    actor: str


_current: ContextVar[RequestContext | None] = ContextVar("singura_request", default=None)
_SYSTEM = RequestContext(request_id="", actor="system")


def current_request() -> RequestContext:
    """The context of the RPC being served, or a 'system' context outside one."""
    return _current.get() or _SYSTEM


def bind_request(context: RequestContext) -> None:
    """Set the context for the current task (the interceptor calls this per RPC)."""
    _current.set(context)
