"""Provider signals in PostgreSQL: the clients a signal may come from, and taking it.

Taking a signal is one transaction (migration 027): the claim of its ids in the shared
table of seen signals (a replay finds them taken, in whichever vault process), then, in
each organization it concerns, the connections it moves, whose audit events and events
the database writes in the same transaction. A replay, or any failure, rolls back all of
it. This module never sees a secret in the clear: the signing secrets it reads are
sealed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from singura_vault.db.pool import Database
from singura_vault.domain.connections import Platform
from singura_vault.domain.sealed import EncryptedValue
from singura_vault.repositories.queries import query


@dataclass(frozen=True)
class SignalClient:
    """An OAuth client a signal may verify against; its signing secret still sealed."""

    organization_id: UUID
    id: UUID
    client_id: str
    signing_secret: EncryptedValue | None = field(repr=False)


@dataclass(frozen=True)
class SignalClaim:
    """One id of a signal (replay protection) and until when it must be remembered."""

    signal_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Revocation:
    """What a verified signal does in one organization: move the connections of
    ``platform`` in ``workspace`` (None: any) of ``users`` (None: any) to ``to``."""

    organization_id: UUID
    platform: Platform
    workspace: str | None
    users: tuple[str, ...] | None
    to: str
    data: dict[str, Any]


class SignalReplayed(Exception):  # noqa: N818 -- a result, not a failure of this module
    """One of the signal's ids was taken before; nothing was changed."""


class SignalRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def clients(self, platform: Platform, limit: int) -> list[SignalClient]:
        """Up to ``limit`` clients of ``platform`` a signal may come from (admin keys:
        every organization's; an organization key: its own)."""
        rows = await self._db.fetch_scoped(
            None, query("oauth_signal_clients"), platform.value, limit
        )
        return [
            SignalClient(
                organization_id=row["organization_id"],
                id=row["id"],
                client_id=row["client_id"],
                signing_secret=EncryptedValue(
                    row["signing_secret_nonce"],
                    row["signing_secret_ciphertext"],
                    "",
                    row["key_version"],
                )
                if row["signing_secret_ciphertext"] is not None
                else None,
            )
            for row in rows
        ]

    async def take(
        self, claims: Sequence[SignalClaim], revocations: Sequence[Revocation]
    ) -> dict[UUID, list[UUID]]:
        """Claim the signal's ids and apply its revocations, in one transaction; the
        connections moved, by organization. SignalReplayed (and nothing changed) if an
        id was taken before."""
        moved: dict[UUID, list[UUID]] = {}
        first = revocations[0].organization_id if revocations else None
        transaction = self._db.tenant(first) if first is not None else self._db.admin()
        async with transaction as conn:
            taken = await conn.fetchval(
                query("provider_signal_claim"),
                [c.signal_id for c in claims],
                [c.expires_at for c in claims],
            )
            if not taken:
                raise SignalReplayed
            current = first
            for revocation in revocations:
                org = revocation.organization_id
                if org != current:
                    # request_scope fences an organization key to its own tenant, as
                    # every transaction of the vault is.
                    scope = self._db.request_scope(org)
                    await conn.execute(
                        query("provider_signal_enter_organization"),
                        scope.setting,
                        scope.value,
                        scope.actor,
                        scope.request_id,
                    )
                    current = org
                rows = await conn.fetch(
                    query("connections_revoked_at_provider"),
                    revocation.platform.value,
                    revocation.workspace,
                    list(revocation.users) if revocation.users is not None else None,
                    revocation.to,
                    revocation.data,
                )
                moved.setdefault(org, []).extend(r["connection_id"] for r in rows)
        return moved
