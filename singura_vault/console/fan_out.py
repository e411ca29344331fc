"""Pages that span organizations: which organizations a page covers, and asking the
vault about each of them, a few at a time.

An admin key sees every organization (up to ``MAX_ORGANIZATIONS``); an organization key
its own. A refusal for one organization is kept with it (``OrgResult.error``) instead of
failing the page; only UNAUTHENTICATED, which ends the session, propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from singura_vault.console.sessions import Session
from singura_vault.console.vault_client import Operator, VaultCallError
from singura_vault.errors import InvariantBroken
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb

# A page lists at most this many organizations and this many rows per organization;
# beyond that it says so rather than paging the vault without end.
MAX_ORGANIZATIONS = 1000
PAGE_SIZE = 1000
# How many vault calls one page makes at once (one per organization).
FAN_OUT = 8


@dataclass(frozen=True)
class OrgResult:
    """One organization's part of a page: its rows, or the vault's refusal."""

    organization_id: str
    organization_name: str
    items: list[Any]
    error: VaultCallError | None = None
    truncated: bool = False


async def organizations(operator: Operator, session: Session) -> list[opb.Organization]:
    """Every organization an admin key sees (up to MAX_ORGANIZATIONS); an
    organization key's own."""
    if not session.is_admin:
        if session.organization_id is None:
            raise InvariantBroken("organizations: session.organization_id is None")
        got = await operator.call(
            "organizations",
            "GetOrganization",
            opb.GetOrganizationRequest(organization_id=session.organization_id),
        )
        return [got.organization]
    found: list[opb.Organization] = []
    token = ""
    while len(found) < MAX_ORGANIZATIONS:
        page = await operator.call(
            "organizations",
            "ListOrganizations",
            opb.ListOrganizationsRequest(page_size=PAGE_SIZE, page_token=token),
        )
        found.extend(page.organizations)
        token = page.next_page_token
        if not token:
            break
    return found[:MAX_ORGANIZATIONS]


async def per_organization(
    targets: list[tuple[str, str]],
    fetch: Callable[[str], Awaitable[tuple[list[Any], bool]]],
) -> list[OrgResult]:
    """fetch(organization_id) for each (id, name), FAN_OUT at a time; a refusal is
    kept with its organization instead of failing the page."""
    gate = asyncio.Semaphore(FAN_OUT)

    async def one(organization_id: str, name: str) -> OrgResult:
        async with gate:
            try:
                items, truncated = await fetch(organization_id)
            except VaultCallError as exc:
                if exc.code == "UNAUTHENTICATED":
                    raise
                return OrgResult(organization_id, name, [], exc)
            return OrgResult(organization_id, name, items, None, truncated)

    return list(await asyncio.gather(*(one(i, n) for i, n in targets)))


def targets(orgs: list[opb.Organization], wanted: str) -> list[tuple[str, str]]:
    """The organizations a page covers: all the key sees, or the one asked for
    (which the API may refuse: that is its decision, not the console's)."""
    names = {o.id: o.name for o in orgs}
    if wanted:
        return [(wanted, names.get(wanted, wanted))]
    return [(o.id, o.name) for o in orgs]
