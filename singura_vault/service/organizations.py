"""Organization use cases: validate input, then call the repository."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from singura_vault.domain.organizations import (
    NewOrganization,
    Organization,
    OrganizationChanges,
    Plan,
)
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import FieldChecks, InvalidArgument
from singura_vault.repositories.organizations import OrganizationRepository
from singura_vault.service import pagination, validation
from singura_vault.service.authz import Authorizer

UPDATABLE_FIELDS = ("name", "slug", "domain", "plan", "settings")


@dataclass(frozen=True)
class OrganizationInput:
    """The client-supplied fields of an organization (create or update)."""

    name: str = ""
    slug: str = ""
    domain: str = ""
    plan: Plan | None = None
    settings: dict[str, Any] | None = None


def _slug(value: str) -> str:
    if not value:
        raise InvalidArgument("organization.slug", "is required")
    return validation.slug(value)


def _domain(value: str) -> str:
    if not value.strip():
        raise InvalidArgument("organization.domain", "is required")
    return validation.domain(value)


def _plan(value: Plan | None) -> Plan:
    if value is None:
        raise InvalidArgument("organization.plan", "is required", example=Plan.FREE)
    return value


@dataclass(frozen=True)
class OrganizationPage:
    organizations: tuple[Organization, ...]
    next_page_token: str


class OrganizationService:
    def __init__(
        self,
        repository: OrganizationRepository,
        authorizer: Authorizer | None = None,
        *,
        on_erased: Callable[[UUID], None] | None = None,
    ) -> None:
        """``on_erased`` runs after an organization's erasure commits: the composition
        root purges its data keys from the sealing gateway's cache there (this layer
        may not touch keys)."""
        self._repository = repository
        self._authz = authorizer or Authorizer()
        self._on_erased = on_erased

    async def create(self, data: OrganizationInput, request_id: str) -> Organization:
        self._authz.require_admin("create organizations")
        # Every invalid field in one answer, not one per round trip.
        checks = FieldChecks()
        with checks.field():
            name = validation.text("organization.name", data.name, min_length=1, max_length=200)
        with checks.field():
            slug = _slug(data.slug)
        with checks.field():
            domain = _domain(data.domain)
        with checks.field():
            plan = _plan(data.plan)
        with checks.field():
            settings = validation.json_object("organization.settings", data.settings or {})
        with checks.field():
            key = validation.parse_optional_uuid("request_id", request_id)
        checks.raise_if_any()
        new = NewOrganization(name=name, slug=slug, domain=domain, plan=plan, settings=settings)
        organization, _ = await self._repository.create(new, key)
        return organization

    async def get(self, organization_id: str) -> Organization:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, (), "read the organization")
        return await self._repository.get(org_id)

    async def list(self, page_size: int, page_token: str) -> OrganizationPage:
        self._authz.require_admin("list organizations")
        size = pagination.page_size(page_size)
        after = pagination.decode_token(page_token, filters=())
        rows = await self._repository.list(after, size + 1)
        items, next_token = pagination.next_page(
            rows, size, (), lambda org: PageCursor(org.created_at, org.id)
        )
        return OrganizationPage(items, next_token)

    async def update(
        self, organization_id: str, data: OrganizationInput, mask: Sequence[str], etag: str
    ) -> Organization:
        org_id = validation.parse_uuid("organization.id", organization_id)
        self._authz.require_admin("update organizations")
        fields = validation.update_mask(mask, UPDATABLE_FIELDS)
        if "plan" in fields and data.plan is None:
            raise InvalidArgument("organization.plan", "cannot be unset", example=Plan.FREE)
        changes = OrganizationChanges(
            name=validation.text("organization.name", data.name, min_length=1, max_length=200)
            if "name" in fields
            else None,
            slug=_slug(data.slug) if "slug" in fields else None,
            domain=_domain(data.domain) if "domain" in fields else None,
            plan=data.plan if "plan" in fields else None,
            settings=validation.json_object("organization.settings", data.settings or {})
            if "settings" in fields
            else None,
        )
        return await self._repository.update(org_id, changes, validation.parse_etag(etag))

    async def delete(self, organization_id: str, etag: str) -> None:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require_admin("delete organizations")
        await self._repository.delete(org_id, validation.parse_etag(etag))
        if self._on_erased is not None:
            self._on_erased(org_id)
