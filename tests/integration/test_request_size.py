"""Request size: anything larger than the contract can carry is INVALID_ARGUMENT with
details (reason REQUEST_TOO_LARGE, the limit in ErrorInfo metadata), a request id and a
log line, not gRPC's transport error; every legitimate request fits."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import structlog
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no stubs
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from singura_vault import metrics
from singura_vault.api._convert import from_struct
from singura_vault.api.request_checks import MAX_REQUEST_BYTES, MAX_TRANSPORT_BYTES
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as oapb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.connections import MAX_PERMISSIONS
from singura_vault.service.credentials import MAX_BATCH_REVEAL, MAX_VALUE_BYTES
from singura_vault.service.oauth_clients import MAX_SCOPES, MAX_SECRET_BYTES
from singura_vault.service.validation import MAX_JSON_BYTES
from tests.support.credentials import ACCESS
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault

# A four-byte UTF-8 character: the most bytes a character-counted limit allows.
WIDE = "\U0001f511"
TEN_MB = 10 * 1024 * 1024


def _error_info(error: grpc.aio.AioRpcError) -> Any:
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the details")


async def _failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def _too_large_count() -> float:
    value = metrics.REGISTRY.get_sample_value("singura_requests_too_large_total")
    return value or 0.0


async def test_a_10_mb_credential_is_invalid_argument_with_the_limit(vault: Vault) -> None:
    """The issue's case: a 10 MB value is refused by the vault, not by gRPC's transport:
    INVALID_ARGUMENT (not retryable), reason REQUEST_TOO_LARGE with the limit and the
    size in ErrorInfo metadata, the caller's request id, one log line, one count."""
    org, conn = await tenant(vault)
    before = _too_large_count()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        error = await _failure(
            vault.credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=org, connection_id=conn, type=ACCESS, value="x" * TEN_MB
                ),
                metadata=(("x-request-id", "too-large-1"),),
            )
        )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("request: is 104858"), details
    assert f"the limit is {MAX_REQUEST_BYTES} bytes" in details
    assert "64 KiB" in details
    info = _error_info(error)
    assert info.reason == "REQUEST_TOO_LARGE"
    assert info.domain == "singura.vault"
    assert info.metadata["limit_bytes"] == str(MAX_REQUEST_BYTES)
    assert int(info.metadata["size_bytes"]) > TEN_MB
    assert info.metadata["field"] == "request"
    assert dict(error.trailing_metadata() or ())["x-request-id"] == "too-large-1"
    logged = [e for e in events if e["event"] == "request_too_large"]
    assert len(logged) == 1
    assert logged[0]["request_id"] == "too-large-1"
    assert logged[0]["limit_bytes"] == MAX_REQUEST_BYTES
    assert logged[0]["size_bytes"] > TEN_MB
    assert [e["code"] for e in events if e["event"] == "rpc_failed"] == ["INVALID_ARGUMENT"]
    assert _too_large_count() == before + 1


async def test_an_oversized_batch_is_invalid_argument_with_the_limit(vault: Vault) -> None:
    """A batch far beyond its 100 items and the size limit is refused unparsed with the
    same details; a batch of 101 items (small) still gets the batch rule's own message."""
    org, conn = await tenant(vault)
    huge = crpb.BatchRevealCredentialsRequest(
        organization_id=org,
        items=[
            crpb.BatchRevealItem(connection_id=str(uuid.uuid4()), type=ACCESS)
            for _ in range(30_000)
        ],
    )
    assert huge.ByteSize() > MAX_REQUEST_BYTES
    error = await _failure(vault.credentials.BatchRevealCredentials(huge))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _error_info(error)
    assert info.reason == "REQUEST_TOO_LARGE"
    assert info.metadata["limit_bytes"] == str(MAX_REQUEST_BYTES)
    assert info.metadata["size_bytes"] == str(huge.ByteSize())
    assert dict(error.trailing_metadata() or ()).get("x-request-id")
    over_count = crpb.BatchRevealCredentialsRequest(
        organization_id=org,
        items=[crpb.BatchRevealItem(connection_id=conn, type=ACCESS)] * (MAX_BATCH_REVEAL + 1),
    )
    await expect_status(
        vault.credentials.BatchRevealCredentials(over_count),
        grpc.StatusCode.INVALID_ARGUMENT,
        "items: must hold 1 to 100",
    )


async def test_an_unauthenticated_oversized_request_is_refused_as_unauthenticated(
    vault: Vault,
) -> None:
    """The size is checked after the key: an anonymous caller learns nothing more."""
    error = await _failure(
        vault.as_key(None).credentials.StoreCredential(
            crpb.StoreCredentialRequest(value="x" * (2 * MAX_REQUEST_BYTES))
        )
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_oversized_health_check_gets_the_same_details(vault: Vault) -> None:
    """Health and reflection (no authentication) refuse an oversized request too, with
    the reason, the limit and a request id."""
    stub = health_pb2_grpc.HealthStub(vault.channel)
    error = await _failure(
        stub.Check(health_pb2.HealthCheckRequest(service="s" * (MAX_REQUEST_BYTES + 1)))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = _error_info(error)
    assert info.reason == "REQUEST_TOO_LARGE"
    assert info.metadata["limit_bytes"] == str(MAX_REQUEST_BYTES)
    assert dict(error.trailing_metadata() or ()).get("x-request-id")


async def test_beyond_the_transport_limit_grpc_refuses_unread(vault: Vault) -> None:
    """What docs/errors.md says of a request over MAX_TRANSPORT_BYTES (16 MiB): gRPC's
    transport refuses it with RESOURCE_EXHAUSTED before any vault code runs."""
    org, conn = await tenant(vault)
    error = await _failure(
        vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=conn,
                type=ACCESS,
                value="x" * (MAX_TRANSPORT_BYTES + 1),
            )
        )
    )
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {MAX_TRANSPORT_BYTES})" in (error.details() or "")


def _largest_metadata() -> struct_pb2.Struct:
    """The Struct with the most protobuf bytes per byte of JSON (numbers in a list) that
    the services' MAX_JSON_BYTES still accepts."""

    def build(count: int) -> struct_pb2.Struct:
        struct = struct_pb2.Struct()
        struct.update({"n": [0] * count})
        return struct

    def fits(count: int) -> bool:
        as_json = json.dumps(from_struct(build(count)), separators=(",", ":"))
        return len(as_json) <= MAX_JSON_BYTES

    low, high = 1, MAX_JSON_BYTES
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return build(low)


def test_every_legitimate_request_fits_with_room_to_spare() -> None:
    """The largest request each limit-bearing RPC accepts, built from the services' own
    limits, is at most three quarters of MAX_REQUEST_BYTES; the limit is far below the
    transport's."""
    metadata = _largest_metadata()
    largest = {
        "CreateConnection": cpb.CreateConnectionRequest(
            connection=cpb.Connection(
                organization_id=str(uuid.uuid4()),
                platform=cpb.PLATFORM_SLACK,
                platform_user_id=WIDE * 255,
                platform_workspace_id=WIDE * 255,
                display_name=WIDE * 200,
                permissions_granted=[WIDE * 255] * MAX_PERMISSIONS,
                metadata=metadata,
            ),
            request_id=str(uuid.uuid4()),
        ),
        "CreateOrganization": opb.CreateOrganizationRequest(
            organization=opb.Organization(
                name=WIDE * 200,
                slug="s" * 63,
                domain="d" * 253,
                plan=opb.PLAN_FREE,
                settings=metadata,
            )
        ),
        "StoreCredential": crpb.StoreCredentialRequest(
            organization_id=str(uuid.uuid4()),
            connection_id=str(uuid.uuid4()),
            type=ACCESS,
            value="v" * MAX_VALUE_BYTES,
            request_id=str(uuid.uuid4()),
        ),
        "BatchRevealCredentials": crpb.BatchRevealCredentialsRequest(
            organization_id=str(uuid.uuid4()),
            items=[
                crpb.BatchRevealItem(
                    connection_id=str(uuid.uuid4()), type=ACCESS, version=2**31 - 1
                )
            ]
            * MAX_BATCH_REVEAL,
        ),
        "SetOAuthClient": oapb.SetOAuthClientRequest(
            client=oapb.OAuthClient(
                organization_id=str(uuid.uuid4()),
                client_id=WIDE * 512,
                client_secret="c" * MAX_SECRET_BYTES,
                token_url="https://" + "t" * 2040,
                revocation_url="https://" + "r" * 2040,
                scopes=[WIDE * 255] * MAX_SCOPES,
            )
        ),
    }
    sizes = {name: request.ByteSize() for name, request in largest.items()}
    assert sizes["CreateConnection"] > 600_000, sizes  # the worst case really is built
    assert max(sizes.values()) <= MAX_REQUEST_BYTES * 3 // 4, sizes
    assert MAX_REQUEST_BYTES * 8 <= MAX_TRANSPORT_BYTES


async def test_the_largest_legitimate_connection_is_accepted(vault: Vault) -> None:
    """Over a real channel: a connection at every limit at once is created, not refused
    as too large."""
    org, _ = await tenant(vault)
    request = cpb.CreateConnectionRequest(
        connection=cpb.Connection(
            organization_id=org,
            platform=cpb.PLATFORM_SLACK,
            platform_user_id=WIDE * 255,
            platform_workspace_id="T1",
            display_name=WIDE * 200,
            permissions_granted=[WIDE * 254 + str(i % 10) for i in range(MAX_PERMISSIONS)],
            metadata=_largest_metadata(),
        )
    )
    assert request.ByteSize() > 600_000
    created = await vault.connections.CreateConnection(request)
    assert len(created.connection.permissions_granted) == MAX_PERMISSIONS
