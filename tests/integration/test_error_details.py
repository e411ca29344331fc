"""Errors a program can act on (AIP-193): every error carries a google.rpc.Status in
the grpc-status-details-bin trailer with an ErrorInfo in the singura.vault domain,
and the detail its code calls for."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.access import RateLimit
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, store
from tests.support.error_details import details, failure
from tests.support.messages import org_message
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault


async def test_invalid_argument_names_the_field_in_a_bad_request(vault: Vault) -> None:
    """INVALID_ARGUMENT carries an ErrorInfo and a BadRequest violation naming the field, and the
    message starts with the field."""
    error = await failure(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(slug="Not A Slug"))
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(error)
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert found["ErrorInfo"].metadata["field"] == "organization.slug"
    (violation,) = found["BadRequest"].field_violations
    assert violation.field == "organization.slug"
    assert "lowercase" in violation.description
    assert error.details().startswith("organization.slug: ")


async def test_a_missing_enum_suggests_a_value_as_the_contract_spells_it(vault: Vault) -> None:
    """The service layer names a domain value (Plan.FREE, CredentialType.ACCESS_TOKEN);
    the client reads the wire name, in the message and in the BadRequest."""
    error = await failure(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_UNSPECIFIED))
        )
    )
    assert error.details() == "organization.plan: is required (e.g. PLAN_FREE)"
    (violation,) = details(error)["BadRequest"].field_violations
    assert violation.description == "is required (e.g. PLAN_FREE)"
    org, conn = await tenant(vault)
    untyped = await failure(
        vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(organization_id=org, connection_id=conn, value="v")
        )
    )
    assert untyped.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert untyped.details() == "type: is required (e.g. CREDENTIAL_TYPE_ACCESS_TOKEN)"


async def test_a_stale_etag_is_a_precondition_failure_with_its_reason(vault: Vault) -> None:
    """An update with a stale etag is ABORTED with its ErrorInfo reason."""
    org, conn = await tenant(vault)
    current = (
        await vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=org, connection_id=conn)
        )
    ).connection
    rename = cpb.UpdateConnectionRequest(
        connection=cpb.Connection(organization_id=org, id=conn, display_name="Renamed"),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        etag=current.etag,
    )
    await vault.connections.UpdateConnection(rename)
    error = await failure(vault.connections.UpdateConnection(rename))
    assert error.code() == grpc.StatusCode.ABORTED
    found = details(error)
    assert found["ErrorInfo"].reason == "STALE_ETAG"
    assert found["PreconditionFailure"].violations[0].type == "STALE_ETAG"


async def test_a_revoked_credential_says_so_in_its_reason(vault: Vault) -> None:
    """Revealing a revoked credential is FAILED_PRECONDITION with reason CREDENTIAL_REVOKED."""
    org, conn = await tenant(vault)
    stored = await store(vault, org, conn, canary("details-revoked"))
    await vault.credentials.RevokeCredential(
        crpb.RevokeCredentialRequest(organization_id=org, credential_id=stored.id)
    )
    error = await failure(
        vault.credentials.RevealCredential(
            crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS)
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(error)["ErrorInfo"].reason == "CREDENTIAL_REVOKED"


async def test_not_found_and_unauthenticated_carry_error_info(vault: Vault) -> None:
    """NOT_FOUND and UNAUTHENTICATED refusals carry ErrorInfo reasons NOT_FOUND and
    API_KEY_INVALID."""
    missing = await failure(
        vault.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=str(uuid.uuid4()))
        )
    )
    assert details(missing)["ErrorInfo"].reason == "NOT_FOUND"
    anonymous = await failure(
        vault.as_key(None).organizations.ListOrganizations(opb.ListOrganizationsRequest())
    )
    assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
    assert details(anonymous)["ErrorInfo"].reason == "API_KEY_INVALID"


async def test_rate_limited_calls_carry_retry_info_and_keep_retry_after_ms(
    db: Database, key_manager: keys.KeyManager, auth_secret: bytes
) -> None:
    """A rate-limited call carries RetryInfo and still sends its retry-after-ms trailer."""
    limited = build_access(db, auth_secret, RateLimit(rate=0.01, burst=1))
    running = await start_vault(Components(db, key_manager=key_manager, access=limited))
    try:
        results = await asyncio.gather(
            *(
                running.organizations.ListOrganizations(opb.ListOrganizationsRequest())
                for _ in range(3)
            ),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert refused
        error = refused[0]
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        found = details(error)
        assert found["ErrorInfo"].reason == "RATE_LIMITED"
        retry_ms = int(dict(error.trailing_metadata() or ())["retry-after-ms"])
        delay = found["RetryInfo"].retry_delay
        assert delay.seconds * 1000 + delay.nanos // 1_000_000 == retry_ms
        assert dict(error.trailing_metadata() or ()).get("x-request-id")
    finally:
        await stop_vault(running)


async def test_an_undecodable_request_gets_details_too(vault: Vault) -> None:
    """A request body that does not decode is INVALID_ARGUMENT with reason UNDECODABLE_REQUEST."""
    call = vault.channel.unary_unary(
        "/singura.vault.v1.OrganizationService/GetOrganization",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    error = await failure(call(b"\xff\xff\xff"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)["ErrorInfo"].reason == "UNDECODABLE_REQUEST"


def test_every_reason_the_code_names_is_documented() -> None:
    """docs/errors.md's table lists every reason a raise site or error class names."""
    root = Path(__file__).resolve().parents[2]
    named: set[str] = set()
    for path in (root / "singura_vault").rglob("*.py"):
        text = path.read_text()
        named.update(re.findall(r'reason(?::\s*str)?\s*=\s*"([A-Z_]+)"', text))
        named.update(re.findall(r'plain_status_details\([^)]*"([A-Z_]+)"\s*\)', text, re.S))
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", (root / "docs/errors.md").read_text(), re.M))
    assert {"RATE_LIMITED", "STALE_ETAG", "INTERNAL", "UNDECODABLE_REQUEST"} <= named
    assert named - documented == set()


async def test_already_exists_names_the_taken_field_and_the_resource(vault: Vault) -> None:
    """A duplicate slug and a duplicate domain are told apart without reading the
    message: ErrorInfo metadata `field`, and a ResourceInfo naming the type and value."""
    taken = org_message()
    await vault.organizations.CreateOrganization(opb.CreateOrganizationRequest(organization=taken))
    same_slug = await failure(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(slug=taken.slug))
        )
    )
    same_domain = await failure(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(domain=taken.domain))
        )
    )
    for error, field, value in (
        (same_slug, "organization.slug", taken.slug),
        (same_domain, "organization.domain", taken.domain),
    ):
        assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        found = details(error)
        assert found["ErrorInfo"].reason == "ALREADY_EXISTS"
        assert found["ErrorInfo"].metadata["field"] == field
        resource = found["ResourceInfo"]
        assert resource.resource_type == "singura.vault.v1.Organization"
        assert resource.resource_name == value
        assert error.details().startswith(f"{field}: ")


async def test_a_duplicate_connection_names_its_account_fields(vault: Vault) -> None:
    """A connection's account is unique as three fields together: all three are named."""
    org, _ = await tenant(vault)
    connection = cpb.Connection(
        organization_id=org,
        platform=cpb.PLATFORM_SLACK,
        platform_user_id="U-dup",
        platform_workspace_id="T-dup",
        display_name="Dup",
    )
    await vault.connections.CreateConnection(cpb.CreateConnectionRequest(connection=connection))
    error = await failure(
        vault.connections.CreateConnection(cpb.CreateConnectionRequest(connection=connection))
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    found = details(error)
    assert found["ErrorInfo"].metadata["field"] == (
        "connection.platform,connection.platform_workspace_id,connection.platform_user_id"
    )
    assert found["ResourceInfo"].resource_type == "singura.vault.v1.Connection"


async def test_every_invalid_field_of_a_create_is_reported_at_once(vault: Vault) -> None:
    """CreateOrganization with four bad fields gets one BadRequest listing all four (a
    missing domain "is required"), the message names each, and ErrorInfo keeps `field`
    (the first) beside `fields` (all)."""
    error = await failure(
        vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(
                organization=opb.Organization(name="", slug="Not A Slug", domain="")
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = details(error)
    violations = {v.field: v.description for v in found["BadRequest"].field_violations}
    assert list(violations) == [
        "organization.name",
        "organization.slug",
        "organization.domain",
        "organization.plan",
    ]
    assert violations["organization.domain"] == "is required"
    assert violations["organization.name"] == "is required"
    assert violations["organization.plan"] == "is required (e.g. PLAN_FREE)"
    assert "lowercase" in violations["organization.slug"]
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert found["ErrorInfo"].metadata["field"] == "organization.name"
    assert found["ErrorInfo"].metadata["fields"] == ",".join(violations)
    message = error.details()
    assert message.startswith("organization.name: is required; ")
    assert all(f"{field}: " in message for field in violations)


async def test_every_invalid_field_of_a_connection_is_reported_at_once(vault: Vault) -> None:
    """CreateConnection likewise: platform, user id, display name and metadata together."""
    org, _ = await tenant(vault)
    error = await failure(
        vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=cpb.Connection(organization_id=org, platform_workspace_id="w" * 256),
                request_id="not-a-uuid",
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(error)["BadRequest"].field_violations]
    assert fields == [
        "connection.platform",
        "connection.platform_user_id",
        "connection.platform_workspace_id",
        "connection.display_name",
        "request_id",
    ]


async def test_every_invalid_field_of_an_api_key_is_reported_at_once(vault: Vault) -> None:
    """CreateApiKey: roles on an admin key, an expiry in the past and an overlong name,
    in one BadRequest."""
    error = await failure(
        vault.access.CreateApiKey(
            apb.CreateApiKeyRequest(
                roles=[apb.API_KEY_ROLE_READER],
                name="n" * 201,
                expire_time=timestamp_pb2.Timestamp(seconds=1),
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(error)["BadRequest"].field_violations]
    assert fields == ["roles", "expire_time", "name"]
