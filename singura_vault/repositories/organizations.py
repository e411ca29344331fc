"""Organization persistence: the only module that runs organization SQL."""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg

from singura_vault.context import current_request
from singura_vault.db.errors import ConstraintErrors, map_driver_errors
from singura_vault.db.pool import Database
from singura_vault.domain.organizations import NewOrganization, Organization, OrganizationChanges
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    InvariantBroken,
    NotFound,
    check_etag,
)
from singura_vault.repositories._rows import organization_from_row
from singura_vault.repositories.queries import query


class _RequestIdTaken(AlreadyExists):
    """A concurrent create with the same request_id won the race."""


def _unique_errors(slug: str | None, domain: str | None) -> ConstraintErrors:
    return {
        "organizations_slug_key": lambda: AlreadyExists(
            f"organization.slug: an organization with slug {slug!r} already exists; "
            "choose another slug",
            fields=("organization.slug",),
            resource_type="Organization",
            resource_name=slug or "",
        ),
        "organizations_domain_key": lambda: AlreadyExists(
            f"organization.domain: an organization with domain {domain!r} already exists",
            fields=("organization.domain",),
            resource_type="Organization",
            resource_name=domain or "",
        ),
        "organizations_request_key": lambda: _RequestIdTaken("request_id already used"),
        "organizations_plan_fkey": lambda: InvalidArgument("organization.plan", "unknown plan"),
    }


def not_found(organization_id: UUID) -> NotFound:
    return NotFound(f"organization {organization_id} not found")


class OrganizationRepository:
    """CRUD of organizations under row-level security."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, new: NewOrganization, request_id: UUID | None
    ) -> tuple[Organization, bool]:
        """Insert an organization; returns (organization, created).

        With a request_id already used by an earlier create, returns that
        organization and created=False instead of inserting a duplicate.
        """
        if request_id is not None:
            existing = await self._by_request_id(request_id)
            if existing is not None:
                return existing, False
        try:
            async with self._db.admin() as conn:
                with map_driver_errors(_unique_errors(new.slug, new.domain)):
                    row = await conn.fetchrow(
                        query("organization_insert"),
                        uuid4(),
                        new.name,
                        new.slug,
                        new.domain,
                        new.plan.value,
                        new.settings,
                        request_id,
                    )
        except _RequestIdTaken:
            if request_id is None:
                raise InvariantBroken("create: request_id is None") from None
            existing = await self._by_request_id(request_id)
            if existing is None:  # the winner was deleted in between
                raise Aborted("a concurrent create with this request_id failed; retry") from None
            return existing, False
        if row is None:
            raise InvariantBroken("create: row is None")
        return organization_from_row(row), True

    async def get(self, organization_id: UUID) -> Organization:
        rows = await self._db.fetch_scoped(
            organization_id, query("organization_get_scoped"), organization_id
        )
        if not rows:
            raise not_found(organization_id)
        return organization_from_row(rows[0])

    async def list(self, after: PageCursor | None, limit: int) -> list[Organization]:
        """Organizations in creation order, starting after the cursor."""
        rows = await self._db.fetch_scoped(
            None,
            query("organization_list_scoped"),
            after.at if after else None,
            after.id if after else None,
            limit,
        )
        return [organization_from_row(row) for row in rows]

    async def update(
        self,
        organization_id: UUID,
        changes: OrganizationChanges,
        expected_version: int | None,
    ) -> Organization:
        async with self._db.tenant(organization_id) as conn:
            await self._lock(conn, organization_id, expected_version)
            with map_driver_errors(_unique_errors(changes.slug, changes.domain)):
                row = await conn.fetchrow(
                    query("organization_update"),
                    organization_id,
                    changes.name,
                    changes.slug,
                    changes.domain,
                    changes.plan.value if changes.plan else None,
                    changes.settings,
                )
        if row is None:
            raise InvariantBroken("update: row is None")
        return organization_from_row(row)

    async def delete(self, organization_id: UUID, expected_version: int | None) -> None:
        """Erase an organization (GDPR): its connections, credentials and data keys
        cascade, its audit trail is erased, and one non-personal system event
        records the erasure -- all in one transaction."""
        async with self._db.tenant(organization_id) as conn:
            await self._lock(conn, organization_id, expected_version)
            await conn.execute(query("organization_delete"), organization_id)
            await conn.execute(
                query("audit_erase_organization"), organization_id, current_request().actor
            )

    async def _lock(
        self, conn: asyncpg.Connection, organization_id: UUID, expected_version: int | None
    ) -> Organization:
        row = await conn.fetchrow(query("organization_get_for_update"), organization_id)
        if row is None:
            raise not_found(organization_id)
        current = organization_from_row(row)
        check_etag(f"organization {organization_id}", expected_version, current.version)
        return current

    async def _by_request_id(self, request_id: UUID) -> Organization | None:
        async with self._db.admin(read_only=True) as conn:
            row = await conn.fetchrow(query("organization_by_request_id"), request_id)
        return organization_from_row(row) if row is not None else None
