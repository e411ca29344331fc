"""OrganizationService end to end: real gRPC channel, real PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import field_mask_pb2

from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.messages import org_message
from tests.support.status import expect_status
from tests.support.vault import Vault


async def create_org(vault: Vault, **overrides: object) -> opb.Organization:
    response = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=org_message(**overrides))
    )
    return response.organization


async def test_create_then_get_returns_the_same_organization(vault: Vault) -> None:
    """A created organization can be read back with every field intact."""
    message = org_message(name="Acme Corp", slug="acme-corp", domain="Acme.COM")
    message.settings.update({"sso": True, "region": "eu"})
    created = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=message)
        )
    ).organization
    uuid.UUID(created.id)
    assert created.domain == "acme.com"
    assert created.plan == opb.PLAN_FREE
    assert created.connection_limit == 3
    assert created.etag
    assert created.create_time.seconds > 0
    fetched = (
        await vault.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=created.id)
        )
    ).organization
    assert fetched == created
    assert dict(fetched.settings) == {"sso": True, "region": "eu"}


async def test_retried_create_with_same_request_id_returns_the_first(vault: Vault) -> None:
    """Two creates with one request_id yield one organization, not a duplicate."""
    request_id = str(uuid.uuid4())
    message = org_message()
    first = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=message, request_id=request_id)
    )
    second = await vault.organizations.CreateOrganization(
        opb.CreateOrganizationRequest(organization=message, request_id=request_id)
    )
    assert second.organization.id == first.organization.id
    listed = await vault.organizations.ListOrganizations(opb.ListOrganizationsRequest())
    assert [o.id for o in listed.organizations] == [first.organization.id]


async def test_duplicate_slug_and_domain_are_already_exists(vault: Vault) -> None:
    """A taken slug or domain is ALREADY_EXISTS naming the field."""
    await create_org(vault, slug="taken-slug", domain="taken.com")
    await expect_status(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(slug="taken-slug"))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "slug",
        "taken-slug",
    )
    await expect_status(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(domain="taken.com"))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        "domain",
    )


async def test_list_pages_through_every_organization_once(vault: Vault) -> None:
    """Pagination with page_size 2 visits 5 organizations exactly once, in creation order."""
    created = [(await create_org(vault)).id for _ in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await vault.organizations.ListOrganizations(
            opb.ListOrganizationsRequest(page_size=2, page_token=token)
        )
        pages += 1
        seen.extend(o.id for o in page.organizations)
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    assert pages == 3


async def test_update_with_field_mask_changes_only_masked_fields(vault: Vault) -> None:
    """Only the fields in update_mask change; the etag moves on."""
    org = await create_org(vault)
    change = opb.Organization(id=org.id, name="Renamed", slug="ignored-slug", plan=opb.PLAN_STARTER)
    updated = (
        await vault.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=change,
                update_mask=field_mask_pb2.FieldMask(paths=["name", "plan"]),
                etag=org.etag,
            )
        )
    ).organization
    assert updated.name == "Renamed"
    assert updated.plan == opb.PLAN_STARTER
    assert updated.connection_limit == 10
    assert updated.slug == org.slug
    assert updated.etag != org.etag


async def test_stale_etag_is_aborted_and_changes_nothing(vault: Vault) -> None:
    """An update or delete carrying an old etag fails with ABORTED."""
    org = await create_org(vault)
    mask = field_mask_pb2.FieldMask(paths=["name"])
    await vault.organizations.UpdateOrganization(
        opb.UpdateOrganizationRequest(
            organization=opb.Organization(id=org.id, name="First"), update_mask=mask
        )
    )
    await expect_status(
        vault.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=opb.Organization(id=org.id, name="Second"),
                update_mask=mask,
                etag=org.etag,
            )
        ),
        grpc.StatusCode.ABORTED,
        "stale etag",
    )
    await expect_status(
        vault.organizations.DeleteOrganization(
            opb.DeleteOrganizationRequest(organization_id=org.id, etag=org.etag)
        ),
        grpc.StatusCode.ABORTED,
    )
    current = await vault.organizations.GetOrganization(
        opb.GetOrganizationRequest(organization_id=org.id)
    )
    assert current.organization.name == "First"


async def test_delete_removes_the_organization(vault: Vault) -> None:
    """After DeleteOrganization, GetOrganization is NOT_FOUND."""
    org = await create_org(vault)
    await vault.organizations.DeleteOrganization(
        opb.DeleteOrganizationRequest(organization_id=org.id, etag=org.etag)
    )
    await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id=org.id)),
        grpc.StatusCode.NOT_FOUND,
        org.id,
    )
