"""The scope a statement runs under: one organization's tenant or admin scope, fenced
to an organization key's own tenant whatever the request named. Every statement of
the pool enters it with transaction-scoped settings (db/pool.py), so a pooled
connection never carries one request's scope into the next."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import structlog

from singura_vault.context import current_request


@dataclass(frozen=True, slots=True)
class RequestScope:
    """What a scoped statement enters for one request (migration 013's first four
    parameters): the tenant setting and its value, who acts, under which request id."""

    setting: str
    value: str
    actor: str
    request_id: str


def scope_setting(organization_id: UUID | None) -> tuple[str, str]:
    """The transaction setting that scopes a request: ``organization_id``'s tenant, or
    admin scope for None. For an organization key the fence is the key's own
    organization, whatever the request named: a service-layer bug that forgot to check
    still reaches nothing outside the caller's tenant, and an organization key never
    gets admin scope."""
    principal = current_request().principal
    if principal is not None and principal.organization_id is not None:
        organization_id = principal.organization_id
    if organization_id is None:
        return "singura.scope", "admin"
    # Log lines of this request from here on name the tenant they concern.
    structlog.contextvars.bind_contextvars(organization_id=str(organization_id))
    return "singura.organization_id", str(organization_id)
