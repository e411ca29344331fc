"""Connection use cases: validate input, then call the repository."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from singura_vault.domain.connections import (
    Connection,
    ConnectionChanges,
    ConnectionStatus,
    NewConnection,
    Platform,
    ScopeDrift,
)
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import FieldChecks, InvalidArgument
from singura_vault.repositories.connections import ConnectionRepository
from singura_vault.service import pagination, validation
from singura_vault.service.authz import READ, WRITE, Authorizer

UPDATABLE_FIELDS = ("display_name", "metadata", "permissions_granted")
MAX_PERMISSIONS = 500
# SINGURA_CONNECTION_RECOVERY_WINDOW's default: how long a deleted connection stays
# recoverable (Azure Key Vault's and AWS Secrets Manager's default is 7 days too).
DEFAULT_RECOVERY_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class ConnectionInput:
    """The client-supplied fields of a connection (create or update)."""

    organization_id: str = ""
    id: str = ""
    platform: Platform | None = None
    platform_user_id: str = ""
    platform_workspace_id: str = ""
    display_name: str = ""
    permissions_granted: Sequence[str] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionPage:
    connections: tuple[Connection, ...]
    next_page_token: str


def _permissions(values: Sequence[str]) -> tuple[str, ...]:
    return validation.string_list(
        "connection.permissions_granted", values, max_items=MAX_PERMISSIONS, max_length=255
    )


def _platform(value: Platform | None) -> Platform:
    if value is None:
        raise InvalidArgument("connection.platform", "is required", example=Platform.SLACK)
    return value


class ConnectionService:
    def __init__(
        self,
        repository: ConnectionRepository,
        authorizer: Authorizer | None = None,
        *,
        recovery_window: timedelta = DEFAULT_RECOVERY_WINDOW,
    ) -> None:
        self._repository = repository
        self._authz = authorizer or Authorizer()
        self._recovery_window = recovery_window

    async def create(self, data: ConnectionInput, request_id: str) -> Connection:
        # Every invalid field in one answer, not one per round trip. The organization
        # is checked first: without it the caller cannot be authorized.
        checks = FieldChecks()
        with checks.field():
            org_id = validation.parse_uuid("connection.organization_id", data.organization_id)
            self._authz.require(org_id, WRITE, "create connections")
        with checks.field():
            platform = _platform(data.platform)
        with checks.field():
            user_id = validation.text(
                "connection.platform_user_id", data.platform_user_id, min_length=1, max_length=255
            )
        with checks.field():
            workspace_id = validation.text(
                "connection.platform_workspace_id",
                data.platform_workspace_id,
                min_length=0,
                max_length=255,
            )
        with checks.field():
            display_name = validation.text(
                "connection.display_name", data.display_name, min_length=1, max_length=200
            )
        with checks.field():
            permissions = _permissions(data.permissions_granted)
        with checks.field():
            metadata = validation.json_object("connection.metadata", data.metadata)
        with checks.field():
            key = validation.parse_optional_uuid("request_id", request_id)
        checks.raise_if_any()
        new = NewConnection(
            organization_id=org_id,
            platform=platform,
            platform_user_id=user_id,
            platform_workspace_id=workspace_id,
            display_name=display_name,
            permissions_granted=permissions,
            metadata=metadata,
        )
        return await self._repository.create(new, key)

    async def get(self, organization_id: str, connection_id: str) -> Connection:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read connections")
        return await self._repository.get(
            org_id, validation.parse_uuid("connection_id", connection_id)
        )

    async def list(
        self,
        organization_id: str,
        platform: Platform | None,
        status: ConnectionStatus | None,
        page_size: int,
        page_token: str,
        scope_drift: ScopeDrift | None = None,
        *,
        show_deleted: bool = False,
    ) -> ConnectionPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list connections")
        size = pagination.page_size(page_size)
        filters: tuple[str, ...] = (
            str(org_id),
            platform.value if platform else "",
            status.value if status else "",
        )
        if scope_drift is not None:
            # Appended only when set, so that tokens issued before the filter existed
            # stay valid for the unfiltered listing.
            filters += (f"scope_drift={scope_drift.value}",)
        if show_deleted:
            filters += ("show_deleted",)  # appended only when set, as above
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.list(
            org_id, platform, status, after, size + 1, scope_drift, show_deleted=show_deleted
        )
        items, next_token = pagination.next_page(
            rows, size, filters, lambda conn: PageCursor(conn.created_at, conn.id)
        )
        return ConnectionPage(items, next_token)

    async def update(self, data: ConnectionInput, mask: Sequence[str], etag: str) -> Connection:
        org_id = validation.parse_uuid("connection.organization_id", data.organization_id)
        self._authz.require(org_id, WRITE, "update connections")
        connection_id = validation.parse_uuid("connection.id", data.id)
        fields = validation.update_mask(mask, UPDATABLE_FIELDS)
        changes = ConnectionChanges(
            display_name=validation.text(
                "connection.display_name", data.display_name, min_length=1, max_length=200
            )
            if "display_name" in fields
            else None,
            metadata=validation.json_object("connection.metadata", data.metadata)
            if "metadata" in fields
            else None,
            permissions_granted=_permissions(data.permissions_granted)
            if "permissions_granted" in fields
            else None,
        )
        return await self._repository.update(
            org_id, connection_id, changes, validation.parse_etag(etag)
        )

    async def update_status(
        self,
        organization_id: str,
        connection_id: str,
        status: ConnectionStatus | None,
        reason: str,
        etag: str,
    ) -> Connection:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "change connection status")
        if status is None:
            raise InvalidArgument("status", "is required", example=ConnectionStatus.INACTIVE)
        return await self._repository.set_status(
            org_id,
            validation.parse_uuid("connection_id", connection_id),
            status,
            validation.text("reason", reason, min_length=1, max_length=500),
            validation.parse_etag(etag),
        )

    async def delete(
        self,
        organization_id: str,
        connection_id: str,
        etag: str,
        *,
        force: bool = False,
        revoked_at_provider: bool = False,
    ) -> datetime | None:
        """Delete a connection: recoverable until the returned time (the recovery
        window from now), or with force removed at once (None)."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "delete connections")
        return await self._repository.delete(
            org_id,
            validation.parse_uuid("connection_id", connection_id),
            validation.parse_etag(etag),
            force=force,
            recovery_window=self._recovery_window,
            revoked_at_provider=revoked_at_provider,
        )

    async def undelete(self, organization_id: str, connection_id: str) -> Connection:
        """Restore a deleted connection with its credentials, before it is purged."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "undelete connections")
        return await self._repository.undelete(
            org_id, validation.parse_uuid("connection_id", connection_id)
        )
