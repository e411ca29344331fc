"""Platform-connection persistence: the only module that runs connection SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID, uuid4

import asyncpg

from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.domain.connections import (
    Connection,
    ConnectionChanges,
    ConnectionStatus,
    NewConnection,
    Platform,
    ScopeDrift,
)
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvariantBroken,
    NotFound,
    ResourceExhausted,
    check_etag,
    connection_deleted,
)
from singura_vault.repositories._rows import connection_from_row, organization_from_row
from singura_vault.repositories.organizations import not_found as organization_not_found
from singura_vault.repositories.queries import query


class _RequestIdTaken(AlreadyExists):
    """A concurrent create with the same request_id won the race."""


_CREATE_ERRORS: ConstraintErrors = {
    "platform_connections_account_key": lambda: AlreadyExists(
        "a connection for this platform, platform_workspace_id and platform_user_id "
        "already exists in this organization (a deleted one too, until it is purged: "
        "undelete it, or delete it with force)",
        # One account: the three fields together are unique within an organization.
        fields=(
            "connection.platform",
            "connection.platform_workspace_id",
            "connection.platform_user_id",
        ),
        resource_type="Connection",
    ),
    "platform_connections_request_key": lambda: _RequestIdTaken("request_id already used"),
    "platform_connections_organization_id_fkey": lambda: NotFound("organization not found"),
}


# What a purge removed: (organization, connection) of each.
Purged = list[tuple[UUID, UUID]]


def _not_found(organization_id: UUID, connection_id: UUID) -> NotFound:
    return NotFound(f"connection {connection_id} not found in organization {organization_id}")


class ConnectionRepository:
    """CRUD and lifecycle of platform connections under row-level security."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, new: NewConnection, request_id: UUID | None) -> Connection:
        """Insert an ACTIVE connection if the organization's plan allows one more.

        The organization row is locked first, so concurrent creates in one
        organization are serialized and the limit cannot be overshot.
        """
        org_id = new.organization_id
        try:
            async with self._db.tenant(org_id) as conn:
                if request_id is not None:
                    row = await conn.fetchrow(query("connection_by_request_id"), org_id, request_id)
                    if row is not None:
                        return connection_from_row(row)
                await self._check_room_for_active(conn, org_id)
                with map_driver_errors(_CREATE_ERRORS):
                    row = await conn.fetchrow(
                        query("connection_insert"),
                        org_id,
                        uuid4(),
                        new.platform.value,
                        new.platform_user_id,
                        new.platform_workspace_id,
                        new.display_name,
                        list(new.permissions_granted),
                        new.metadata,
                        request_id,
                    )
        except _RequestIdTaken:
            if request_id is None:
                raise InvariantBroken("create: request_id is None") from None
            async with self._db.tenant(org_id) as conn:
                row = await conn.fetchrow(query("connection_by_request_id"), org_id, request_id)
            if row is None:
                raise Aborted("a concurrent create with this request_id failed; retry") from None
        if row is None:
            raise InvariantBroken("create: row is None")
        return connection_from_row(row)

    async def get(self, organization_id: UUID, connection_id: UUID) -> Connection:
        rows = await self._db.fetch_scoped(
            organization_id,
            query("connection_get_scoped"),
            organization_id,
            connection_id,
        )
        if not rows:
            raise _not_found(organization_id, connection_id)
        return connection_from_row(rows[0])

    async def list(
        self,
        organization_id: UUID,
        platform: Platform | None,
        status: ConnectionStatus | None,
        after: PageCursor | None,
        limit: int,
        scope_drift: ScopeDrift | None = None,
        *,
        show_deleted: bool = False,
    ) -> list[Connection]:
        """Connections newest first, optionally filtered, starting after the cursor;
        deleted ones only with show_deleted."""
        rows = await self._db.fetch_scoped(
            organization_id,
            query("connection_list_scoped"),
            organization_id,
            platform.value if platform else None,
            status.value if status else None,
            after.at if after else None,
            after.id if after else None,
            limit,
            scope_drift.value if scope_drift else None,
            show_deleted,
        )
        return [connection_from_row(row) for row in rows]

    async def update(
        self,
        organization_id: UUID,
        connection_id: UUID,
        changes: ConnectionChanges,
        expected_version: int | None,
    ) -> Connection:
        async with self._db.tenant(organization_id) as conn:
            await self._lock(
                conn, organization_id, connection_id, expected_version, doing="update it"
            )
            row = await conn.fetchrow(
                query("connection_update"),
                organization_id,
                connection_id,
                changes.display_name,
                changes.metadata,
                list(changes.permissions_granted)
                if changes.permissions_granted is not None
                else None,
            )
        if row is None:
            raise InvariantBroken("update: row is None")
        return connection_from_row(row)

    async def set_status(
        self,
        organization_id: UUID,
        connection_id: UUID,
        status: ConnectionStatus,
        reason: str,
        expected_version: int | None,
    ) -> Connection:
        """Change the lifecycle status (the audit trigger records old -> new and the reason)."""
        async with self._db.tenant(organization_id) as conn:
            current = await self._lock(
                conn, organization_id, connection_id, expected_version, doing="change its status"
            )
            if status is ConnectionStatus.ACTIVE and current.status is not ConnectionStatus.ACTIVE:
                await self._check_room_for_active(conn, organization_id)
            row = await conn.fetchrow(
                query("connection_set_status"),
                organization_id,
                connection_id,
                status.value,
                reason,
            )
        if row is None:
            raise InvariantBroken("set_status: row is None")
        return connection_from_row(row)

    async def delete(
        self,
        organization_id: UUID,
        connection_id: UUID,
        expected_version: int | None,
        *,
        force: bool = True,
        recovery_window: timedelta | None = None,
        revoked_at_provider: bool = False,
    ) -> datetime | None:
        """Delete a connection: with force the row goes now (its credentials cascade)
        and None is returned; else it is marked deleted (migration 030) and stays
        recoverable until the returned purge time (now + recovery_window). A connection
        already marked is purged by force and refused otherwise."""
        async with self._db.tenant(organization_id) as conn:
            current = await self._lock(
                conn, organization_id, connection_id, expected_version, doing=None
            )
            if force:
                await conn.execute(query("connection_delete"), organization_id, connection_id)
                return None
            if current.deleted:
                raise connection_deleted(
                    connection_id, "delete it again (delete it with force to purge it now)"
                )
            if recovery_window is None:
                raise InvariantBroken("delete: recovery_window is None")
            row = await conn.fetchrow(
                query("connection_soft_delete"),
                organization_id,
                connection_id,
                recovery_window,
                revoked_at_provider,
            )
        if row is None:
            raise InvariantBroken("delete: row is None")
        purge_at: datetime = row["purge_at"]
        return purge_at

    async def undelete(self, organization_id: UUID, connection_id: UUID) -> Connection:
        """Clear a connection's deleted mark: FAILED_PRECONDITION if it has none, and
        the plan's limit checked (under the organization's lock) if it is ACTIVE."""
        async with self._db.tenant(organization_id) as conn:
            current = await self._lock(conn, organization_id, connection_id, None, doing=None)
            if not current.deleted:
                raise FailedPrecondition(
                    f"connection {connection_id} is not deleted; there is nothing to undelete",
                    reason="CONNECTION_NOT_DELETED",
                )
            if current.status is ConnectionStatus.ACTIVE:
                await self._check_room_for_active(conn, organization_id)
            row = await conn.fetchrow(query("connection_undelete"), organization_id, connection_id)
        if row is None:
            raise InvariantBroken("undelete: row is None")
        return connection_from_row(row)

    async def purge(self, now: datetime, limit: int) -> Purged:
        """Remove up to ``limit`` deleted connections of any organization whose purge
        time is at or before ``now``; (organization, connection) of each removed."""
        rows = await self._db.fetch_unscoped(query("connection_purge"), now, limit)
        return [(row["organization_id"], row["connection_id"]) for row in rows]

    async def _check_room_for_active(self, conn: asyncpg.Connection, organization_id: UUID) -> None:
        await check_room_for_active(conn, organization_id)

    async def _lock(
        self,
        conn: asyncpg.Connection,
        organization_id: UUID,
        connection_id: UUID,
        expected_version: int | None,
        *,
        doing: str | None,
    ) -> Connection:
        """The connection, locked; ``doing`` names the change, refused
        (CONNECTION_DELETED) on a deleted connection -- None lets a delete or an
        undelete lock one."""
        row = await conn.fetchrow(
            query("connection_get_for_update"), organization_id, connection_id
        )
        if row is None:
            raise _not_found(organization_id, connection_id)
        current = connection_from_row(row)
        if doing is not None and current.deleted:
            raise connection_deleted(connection_id, doing)
        check_etag(f"connection {connection_id}", expected_version, current.version)
        return current


# The uniqueness and foreign-key errors of inserting a connection, for every path that
# creates one (CreateConnection, CompleteAuthorization).
CREATE_ERRORS = _CREATE_ERRORS


async def check_room_for_active(conn: asyncpg.Connection, organization_id: UUID) -> None:
    """Raise RESOURCE_EXHAUSTED unless the organization's plan allows one more ACTIVE
    connection; locks the organization row first, so concurrent creates in one
    organization are serialized (in the caller's transaction) and the limit holds."""
    org_row = await conn.fetchrow(query("organization_get_for_update"), organization_id)
    if org_row is None:
        raise organization_not_found(organization_id)
    organization = organization_from_row(org_row)
    active = await conn.fetchval(query("connection_count_active"), organization_id)
    if active >= organization.connection_limit:
        raise ResourceExhausted(
            f"organization {organization_id} already has {active} active connections, "
            f"the limit of its {organization.plan.value} plan "
            f"({organization.connection_limit}); deactivate or delete a connection, "
            "or move the organization to a larger plan",
            reason="PLAN_CONNECTION_LIMIT",
        )
