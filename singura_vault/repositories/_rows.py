"""Row -> domain record mapping shared by the repositories."""

from __future__ import annotations

import asyncpg

from singura_vault.domain import Connection, ConnectionStatus, Organization, Plan, Platform


def organization_from_row(row: asyncpg.Record) -> Organization:
    return Organization(
        id=row["id"],
        name=row["name"],
        slug=row["slug"],
        domain=row["domain"],
        plan=Plan(row["plan"]),
        settings=row["settings"],
        connection_limit=row["connection_limit"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def connection_from_row(row: asyncpg.Record) -> Connection:
    return Connection(
        id=row["id"],
        organization_id=row["organization_id"],
        platform=Platform(row["platform"]),
        platform_user_id=row["platform_user_id"],
        platform_workspace_id=row["platform_workspace_id"],
        display_name=row["display_name"],
        permissions_granted=tuple(row["permissions_granted"]),
        metadata=row["metadata"],
        status=ConnectionStatus(row["status"]),
        status_reason=row["status_reason"],
        last_sync_at=row["last_sync_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )
