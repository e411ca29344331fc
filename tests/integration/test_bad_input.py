"""Every malformed request gets a precise status and a message naming the field."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.messages import connection_message, org_message
from tests.support.status import expect_status
from tests.support.vault import Vault

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MISSING = str(uuid.uuid4())


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": ""}, "organization.name"),
        ({"name": "x" * 201}, "organization.name"),
        ({"slug": "AB"}, "slug"),
        ({"slug": "Upper-Case"}, "slug"),
        ({"slug": "-leading"}, "slug"),
        ({"slug": "a" * 64}, "slug"),
        ({"domain": "not a domain"}, "domain"),
        ({"domain": ""}, "domain"),
        ({"plan": opb.PLAN_UNSPECIFIED}, "organization.plan"),
        ({"plan": 42}, "organization.plan"),
    ],
)
async def test_create_organization_rejects(
    vault: Vault, overrides: dict[str, Any], fragment: str
) -> None:
    """CreateOrganization with a bad field is INVALID_ARGUMENT naming that field."""
    await expect_status(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(**overrides))
        ),
        INVALID,
        fragment,
    )


async def test_bad_request_id_and_ids(vault: Vault) -> None:
    """Malformed UUIDs are INVALID_ARGUMENT; well-formed unknown ones are NOT_FOUND."""
    await expect_status(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(), request_id="retry-1")
        ),
        INVALID,
        "request_id",
    )
    await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id="42")),
        INVALID,
        "organization_id",
    )
    await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest()),
        INVALID,
        "organization_id: is required",
    )
    await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id=MISSING)),
        grpc.StatusCode.NOT_FOUND,
        MISSING,
    )
    await expect_status(
        vault.organizations.DeleteOrganization(
            opb.DeleteOrganizationRequest(organization_id=MISSING)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_update_organization_rejects_bad_masks_and_etags(vault: Vault) -> None:
    """Empty or unknown mask paths and malformed etags are INVALID_ARGUMENT."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization
    change = opb.Organization(id=org.id, name="New")
    await expect_status(
        vault.organizations.UpdateOrganization(opb.UpdateOrganizationRequest(organization=change)),
        INVALID,
        "update_mask: is required",
    )
    await expect_status(
        vault.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=change, update_mask=field_mask_pb2.FieldMask(paths=["id"])
            )
        ),
        INVALID,
        "cannot update id",
    )
    await expect_status(
        vault.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=change,
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
                etag="v1",
            )
        ),
        INVALID,
        "etag",
    )
    await expect_status(
        vault.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=opb.Organization(id=org.id),
                update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
            )
        ),
        INVALID,
        "organization.plan",
    )
    await expect_status(
        vault.organizations.ListOrganizations(opb.ListOrganizationsRequest(page_size=-1)),
        INVALID,
        "page_size",
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"organization_id": ""}, "connection.organization_id"),
        ({"organization_id": "acme"}, "connection.organization_id"),
        ({"platform": cpb.PLATFORM_UNSPECIFIED}, "connection.platform"),
        ({"platform": 99}, "connection.platform"),
        ({"platform_user_id": ""}, "connection.platform_user_id"),
        ({"platform_user_id": "u" * 256}, "connection.platform_user_id"),
        ({"display_name": "  "}, "connection.display_name"),
        ({"display_name": "bad\x00name"}, "connection.display_name"),
        ({"permissions_granted": [""]}, "connection.permissions_granted"),
    ],
)
async def test_create_connection_rejects(
    vault: Vault, overrides: dict[str, Any], fragment: str
) -> None:
    """CreateConnection with a bad field is INVALID_ARGUMENT naming that field."""
    fields = {"organization_id": MISSING, **overrides}
    organization_id = fields.pop("organization_id")
    await expect_status(
        vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(organization_id, **fields))
        ),
        INVALID,
        fragment,
    )


async def test_connection_requests_for_unknown_resources(vault: Vault) -> None:
    """Unknown organizations and connections are NOT_FOUND; a missing status is INVALID."""
    await expect_status(
        vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(MISSING))
        ),
        grpc.StatusCode.NOT_FOUND,
        MISSING,
    )
    await expect_status(
        vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=MISSING, connection_id=MISSING)
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_status(
        vault.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=MISSING, connection_id=MISSING, reason="x"
            )
        ),
        INVALID,
        "status",
    )
    await expect_status(
        vault.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=MISSING,
                connection_id=MISSING,
                status=cpb.CONNECTION_STATUS_ERROR,
            )
        ),
        INVALID,
        "reason",
    )
    await expect_status(
        vault.connections.ListConnections(
            cpb.ListConnectionsRequest(organization_id=MISSING, status=77)
        ),
        INVALID,
        "status",
    )


async def test_unexpected_failure_is_internal_with_a_fixed_message(
    vault: Vault, owner_dsn: str
) -> None:
    """A server-side fault is INTERNAL with a fixed message that leaks no SQL or detail."""
    import asyncpg

    owner = await asyncpg.connect(owner_dsn)
    try:
        # Simulate a broken deployment: the service role lost a privilege it needs.
        await owner.execute("REVOKE SELECT ON singura.plans FROM singura_app")
    finally:
        await owner.close()
    details = await expect_status(
        vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id=MISSING)),
        grpc.StatusCode.INTERNAL,
        "internal error",
    )
    assert "plans" not in details
    assert "permission" not in details
