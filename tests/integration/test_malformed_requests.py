"""No client mistake reaches UNKNOWN or INTERNAL: undecodable bodies, out-of-range
values, NUL characters, NaN, deep nesting -- on every RPC, found by descriptors."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import (
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from structlog.testing import capture_logs

from singura_vault.api.request_checks import UNDECODABLE_MESSAGE
from singura_vault.proto.singura.vault.v1 import (
    access_pb2,
    audit_pb2,
    audit_pb2_grpc,
    connections_pb2,
    credentials_pb2,
    events_pb2,
    keys_pb2,
    oauth_pb2,
    organizations_pb2,
    signals_pb2,
    webhooks_pb2,
)
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import audit_pb2 as aupb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.credentials import reveal, store
from tests.support.messages import org_message
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault

INVALID = grpc.StatusCode.INVALID_ARGUMENT
YEAR_ONE = -62135596800  # 0001-01-01T00:00:00Z
CLIENT_MISTAKES_NEVER = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
# How long a WatchEvents call that the vault accepted is followed (it then waits for
# events that never come); a refusal comes long before.
FOLLOWING_DEADLINE_S = 3
MODULES = (
    organizations_pb2,
    connections_pb2,
    credentials_pb2,
    access_pb2,
    keys_pb2,
    audit_pb2,
    oauth_pb2,
    events_pb2,
    webhooks_pb2,
    signals_pb2,
)


def methods() -> list[MethodDescriptor]:
    found = [
        method
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    found += list(health_pb2.DESCRIPTOR.services_by_name["Health"].methods)
    return found


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def message_class(descriptor: Descriptor) -> type[Message]:
    pool = descriptor_pool.Default()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))


async def call_raw(
    channel: grpc.aio.Channel, method: MethodDescriptor, body: bytes, key: str | None
) -> grpc.StatusCode:
    """Send ``body`` as the request bytes; the status (OK for a streamed answer's end)."""
    metadata = (("authorization", f"Bearer {key}"),) if key else None
    try:
        if method.server_streaming:
            # The first answer (or the refusal) is what the request decides; Health/Watch
            # would stream forever, so stop there. A WatchEvents the vault accepts sends
            # nothing until an event commits: its deadline (DEADLINE_EXCEEDED, not a
            # client mistake's status) ends it, sooner than the others'.
            timeout = FOLLOWING_DEADLINE_S if method.name == "WatchEvents" else 30
            stream = channel.unary_stream(path_of(method))(body, metadata=metadata, timeout=timeout)
            async for _ in stream:
                stream.cancel()
                break
        else:
            await channel.unary_unary(path_of(method))(body, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_undecodable_bodies_are_invalid_argument_without_a_traceback(
    vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage bytes, invalid UTF-8 and a Struct nested past the parser's limit, sent
    with no credentials: INVALID_ARGUMENT with a fixed message naming no type, and at
    most one log line for all of them."""
    nested = struct_pb2.Struct()
    level = nested
    for _ in range(120):
        level = level.fields["a"].struct_value
    level.fields["end"].string_value = "x"
    bodies = {
        "GetOrganization": [b"\x00", b"\x0a\x02\xff\xfe", b"\xff" * 9],
        "UpdateOrganization": [
            b"\x0a" + _varint(len(inner)) + inner
            for inner in [b"\x32" + _varint(len(s)) + s for s in [nested.SerializeToString()]]
        ],
    }
    caplog.set_level(logging.WARNING)
    with capture_logs() as events:
        for name, payloads in bodies.items():
            method = organizations_pb2.DESCRIPTOR.services_by_name[
                "OrganizationService"
            ].methods_by_name[name]
            for body in payloads:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await vault.channel.unary_unary(path_of(method))(body, timeout=10)
                assert refused.value.code() == INVALID, (name, body[:8])
                assert refused.value.details() == UNDECODABLE_MESSAGE
        health = grpc.aio.insecure_channel(vault.address)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.unary_unary("/grpc.health.v1.Health/Check")(b"\x0a\x02\xff\xfe")
            assert refused.value.code() == INVALID
        finally:
            await health.close()
    assert [e for e in events if e["event"] == "request_undecodable"][1:] == []
    assert not [e for e in events if e["event"] == "rpc_internal_error"]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def test_health_list_answers_every_service(vault: Vault) -> None:
    """grpc.health.v1.Health/List, advertised by reflection, lists the server ("")
    and every vault service as SERVING."""
    stub = health_pb2_grpc.HealthStub(vault.channel)
    listed = await stub.List(health_pb2.HealthListRequest())
    assert listed.statuses[""].status == health_pb2.HealthCheckResponse.SERVING
    assert (
        listed.statuses["singura.vault.v1.CredentialService"].status
        == health_pb2.HealthCheckResponse.SERVING
    )


def store_expiring(org: str, conn: str, expire_time: dict[str, int]) -> Any:
    return crpb.StoreCredentialRequest(
        organization_id=org,
        connection_id=conn,
        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
        value="v",
        expire_time=expire_time,
    )


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (
            lambda org, conn: aupb.ListAuditEventsRequest(
                filter=aupb.AuditFilter(start_time={"seconds": 1, "nanos": -1})
            ),
            "filter.start_time: nanos",
        ),
        (
            lambda org, conn: aupb.ListAuditEventsRequest(
                filter=aupb.AuditFilter(end_time={"seconds": 10**15})
            ),
            "filter.end_time: must be from 1970",
        ),
        (
            lambda org, conn: aupb.ListAuditEventsRequest(filter=aupb.AuditFilter(action="a\0b")),
            "filter.action: must not contain NUL",
        ),
        (
            lambda org, conn: apb.CreateApiKeyRequest(
                organization_id=org, name="k", expire_time={"seconds": 10**15}
            ),
            "expire_time",
        ),
        (
            lambda org, conn: store_expiring(org, conn, {"seconds": 2_000_000_000, "nanos": 10**9}),
            "expire_time: nanos",
        ),
        (
            lambda org, conn: store_expiring(
                org, conn, {"seconds": -62135596800}
            ),  # 0001-01-01T00:00:00Z
            "expire_time: must be from 1970",
        ),
        (
            lambda org, conn: crpb.ListExpiringCredentialsRequest(
                organization_id=org, within={"seconds": 2**63 - 1}
            ),
            "within: must be at most",
        ),
        (
            lambda org, conn: opb.CreateOrganizationRequest(
                organization=org_message(settings={"ratio": float("nan")})
            ),
            "organization.settings.ratio: must be a finite number",
        ),
        (
            lambda org, conn: opb.CreateOrganizationRequest(
                organization=org_message(settings={"limits": {"max": float("inf")}})
            ),
            "organization.settings.limits.max: must be a finite number",
        ),
        (
            lambda org, conn: opb.CreateOrganizationRequest(
                organization=org_message(settings={"k\0ey": 1})
            ),
            "organization.settings: must not contain NUL",
        ),
        (
            lambda org, conn: opb.CreateOrganizationRequest(
                organization=org_message(name="Ac\0me")
            ),
            "organization.name: must not contain NUL",
        ),
    ],
)
async def test_out_of_range_values_are_invalid_argument(
    vault: Vault, make: Any, fragment: str
) -> None:
    """Timestamps, durations, NaN/Infinity and NUL that protobuf or PostgreSQL cannot
    hold are INVALID_ARGUMENT naming the field and the allowed range."""
    org, conn = await tenant(vault)
    request = make(org, conn)
    stubs = {
        aupb.ListAuditEventsRequest: audit_pb2_grpc.AuditServiceStub(vault.channel).ListAuditEvents,
        apb.CreateApiKeyRequest: vault.access.CreateApiKey,
        crpb.StoreCredentialRequest: vault.credentials.StoreCredential,
        crpb.ListExpiringCredentialsRequest: vault.credentials.ListExpiringCredentials,
        opb.CreateOrganizationRequest: vault.organizations.CreateOrganization,
    }
    await expect_status(stubs[type(request)](request), INVALID, fragment)


async def test_a_year_one_expiry_is_refused_and_rows_holding_one_still_read(
    vault: Vault, owner_dsn: str
) -> None:
    """StoreCredential with expire_time 0001-01-01 writes nothing; a row that already
    holds such an expiry (-infinity) lists, reveals and shows up as expiring."""
    org, conn = await tenant(vault)
    await expect_status(
        vault.credentials.StoreCredential(store_expiring(org, conn, {"seconds": YEAR_ONE})),
        INVALID,
        "expire_time",
    )
    listed = await vault.credentials.ListCredentials(
        crpb.ListCredentialsRequest(organization_id=org, connection_id=conn)
    )
    assert list(listed.credentials) == []

    value = "year-one-row"
    await store(vault, org, conn, value)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await owner.execute("UPDATE singura.encrypted_credentials SET expires_at = '-infinity'")
    finally:
        await owner.close()
    listed = await vault.credentials.ListCredentials(
        crpb.ListCredentialsRequest(organization_id=org, connection_id=conn)
    )
    assert [c.state for c in listed.credentials] == [crpb.CREDENTIAL_STATE_EXPIRED]
    expiring = await vault.credentials.ListExpiringCredentials(
        crpb.ListExpiringCredentialsRequest(organization_id=org, within={"seconds": 3600})
    )
    assert len(expiring.credentials) == 1
    assert await reveal(vault, org, conn) == value


# -- the fuzz test ---------------------------------------------------------------------------

_BAD_TIMESTAMPS = ({"seconds": 1, "nanos": -1}, {"seconds": 10**15}, {"nanos": 10**9},
                   {"seconds": -62135596800}, {"seconds": -1})  # fmt: skip
_BAD_DURATIONS = ({"seconds": 2**63 - 1}, {"seconds": 1, "nanos": -5}, {"nanos": 10**9},
                  {"seconds": -(2**63)})  # fmt: skip


def _deep_struct(levels: int) -> struct_pb2.Struct:
    root = struct_pb2.Struct()
    level = root
    for _ in range(levels):
        level = level.fields["n"].struct_value
    return root


def _mutations(descriptor: Descriptor, rng: random.Random, ids: dict[str, str]) -> Iterator[bytes]:
    """Bodies for one request type: each field broken in each way a client can break it,
    the others set to plausible values (real ids where it has them) so checks run deep."""
    cls = message_class(descriptor)
    base = cls()
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated:
            plausible = ids.get(field.name, str(uuid.uuid4()) if field.name.endswith("id") else "x")
            setattr(base, field.name, plausible)
    encoded = base.SerializeToString()
    for _ in range(10):
        yield rng.randbytes(rng.randint(1, 48))
    for cut in range(1, min(len(encoded), 6)):
        yield encoded[:-cut]
    for _ in range(10 if encoded else 0):  # one flipped byte of a valid encoding
        flipped = bytearray(encoded)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        yield bytes(flipped)
    for field in descriptor.fields:
        for variant in _field_variants(field, rng):
            message = cls()
            message.CopyFrom(base)
            try:
                variant(message)
            except (ValueError, TypeError, OverflowError):
                continue  # not expressible through the Python API; raw bytes cover it
            yield message.SerializeToString()
        tag = _varint(field.number << 3 | 2)
        yield encoded + tag + b"\x02\xff\xfe"  # invalid UTF-8 (or a bad nested message)


def _field_variants(field: FieldDescriptor, rng: random.Random) -> list[Any]:  # noqa: C901 - one case per protobuf field type
    name = field.name
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        sub = field.message_type.full_name
        if field.is_repeated or field.message_type.GetOptions().map_entry:
            return []
        if sub == "google.protobuf.Timestamp":
            return [lambda m, t=t: getattr(m, name).MergeFrom(_ts(t)) for t in _BAD_TIMESTAMPS]
        if sub == "google.protobuf.Duration":
            return [lambda m, d=d: getattr(m, name).MergeFrom(_dur(d)) for d in _BAD_DURATIONS]
        if sub == "google.protobuf.Struct":
            return [
                lambda m: getattr(m, name).update({"x": float("nan")}),
                lambda m: getattr(m, name).update({"x": float("-inf")}),
                lambda m: getattr(m, name).update({"k\0": "v"}),
                lambda m: getattr(m, name).update({"k": "v\0"}),
                lambda m: getattr(m, name).CopyFrom(_deep_struct(40)),
            ]
        if sub == "google.protobuf.FieldMask":
            return [lambda m: getattr(m, name).paths.extend(["nope", "a\0b", ""])]
        return [
            (lambda m, v=v: _set_nested(getattr(m, name), v))
            for v in _field_variants_of_message(field.message_type, rng)
        ]
    if field.type == FieldDescriptor.TYPE_STRING:
        values = ["a\0b", "", "x" * 5000, "../../etc", "\u202e\ufeff", str(uuid.uuid4()).upper()]
        if field.is_repeated:
            return [lambda m, v=v: getattr(m, name).append(v) for v in values]
        return [lambda m, v=v: setattr(m, name, v) for v in values]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return [lambda m: setattr(m, name, rng.randbytes(16))]
    if field.type == FieldDescriptor.TYPE_ENUM:
        values = [-1, 99, 2**31 - 1]
        if field.is_repeated:
            return [lambda m, v=v: getattr(m, name).append(v) for v in values]
        return [lambda m, v=v: setattr(m, name, v) for v in values]
    if field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        top = 2**31 - 1 if field.type == FieldDescriptor.TYPE_INT32 else 2**63 - 1
        return [lambda m, v=v: setattr(m, name, v) for v in (-1, -top - 1, top, 0)]
    if field.type == FieldDescriptor.TYPE_BOOL:
        return [lambda m: setattr(m, name, True)]
    return []


def _field_variants_of_message(descriptor: Descriptor, rng: random.Random) -> list[Any]:
    return [
        (field.name, variant)
        for field in descriptor.fields
        for variant in _field_variants(field, rng)
        if field.message_type is None or field.message_type.full_name.startswith("google")
    ]


def _set_nested(sub: Message, named_variant: Any) -> None:
    _, variant = named_variant
    variant(sub)


def _ts(value: dict[str, int]) -> Any:
    return _seconds_and_nanos(timestamp_pb2.Timestamp(), value)


def _dur(value: dict[str, int]) -> Any:
    return _seconds_and_nanos(duration_pb2.Duration(), value)


def _seconds_and_nanos(message: Any, value: dict[str, int]) -> Any:
    # Plain int fields: protobuf lets any value through that the wire can carry.
    message.seconds = value.get("seconds", 0)
    message.nanos = value.get("nanos", 0)
    return message


async def test_fuzz_every_rpc_with_generated_malformed_requests(
    vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """At least 2,000 generated malformed requests across every RPC, derived from the
    descriptors, with and without the admin key: none answers UNKNOWN or INTERNAL,
    nothing logs a traceback, and the vault still serves afterwards."""
    rng = random.Random(20261201)  # noqa: S311 - a fixed seed: failures are reproducible
    org, conn = await tenant(vault)
    cases: list[tuple[MethodDescriptor, bytes, str | None]] = []
    ids = {"organization_id": org, "connection_id": conn}
    for method in methods():
        for body in _mutations(method.input_type, rng, ids):
            cases.append((method, body, vault.admin_key))
            if rng.random() < 0.35:
                cases.append((method, body, None))
    assert len(cases) >= 2000, len(cases)
    caplog.set_level(logging.WARNING)
    channel = grpc.aio.insecure_channel(vault.address)
    bad: list[tuple[str, bytes, str]] = []
    try:
        with capture_logs() as events:
            for start in range(0, len(cases), 32):
                chunk = cases[start : start + 32]
                codes = await asyncio.gather(
                    *(call_raw(channel, method, body, key) for method, body, key in chunk)
                )
                bad += [
                    (path_of(method), body[:40], code.name)
                    for (method, body, _), code in zip(chunk, codes, strict=True)
                    if code in CLIENT_MISTAKES_NEVER
                ]
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    finally:
        await channel.close()
    assert bad == []
    assert not [e for e in events if e["event"] == "rpc_internal_error"]
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert health.status == health_pb2.HealthCheckResponse.SERVING
