"""The per-call shortcuts of the lean path give the answers of the long way round:
enum tables, the UTC timestamp conversion, page-token field lookups by type, the
reveal outcome counter and the span skip, and the vault wrapper's own refusal of an
undecodable body; and the request checks still name every refusable field of every
RPC. Unit tests: no database, no network."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from singura_vault import metrics
from singura_vault.api import interceptors, request_checks
from singura_vault.api._convert import EnumWire, enum_from_proto, enum_to_proto_name, timestamp
from singura_vault.api.credentials import credential_to_proto, fill_credential
from singura_vault.domain.connections import ConnectionStatus, Platform
from singura_vault.domain.credentials import (
    Credential,
    CredentialState,
    CredentialType,
    CredentialVersionState,
)
from singura_vault.domain.organizations import Plan
from singura_vault.errors import InvalidArgument
from singura_vault.proto.singura.vault.v1 import (
    access_pb2,
    audit_pb2,
    connections_pb2,
    credentials_pb2,
    keys_pb2,
    oauth_pb2,
    organizations_pb2,
)

MODULES = (
    organizations_pb2,
    connections_pb2,
    credentials_pb2,
    access_pb2,
    keys_pb2,
    audit_pb2,
    oauth_pb2,
)
WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Struct"}


def _request_types() -> list[Descriptor]:
    return [
        method.input_type
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


def _new(descriptor: Descriptor) -> Any:
    pool = descriptor_pool.Default()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))()


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and bool(entry.GetOptions().map_entry)


def _bad_values(descriptor: Descriptor, depth: int = 0) -> Iterator[tuple[str, Any, Any]]:
    """(the path check_request must name, a planting function for a bad value, one for
    a good value in the same place), for every field that can hold a refusable value,
    through nested messages."""
    for field in descriptor.fields:
        name = field.name
        if _is_map(field):
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            if key_field.type == FieldDescriptor.TYPE_STRING:
                fine = _good(value_field)
                yield (
                    name,
                    lambda m, n=name, v=fine: getattr(m, n).__setitem__("k\x00", v),
                    lambda m, n=name, v=fine: getattr(m, n).__setitem__("k", v),
                )
            if value_field.type == FieldDescriptor.TYPE_STRING:
                yield (
                    f"{name}['k']",
                    lambda m, n=name: getattr(m, n).__setitem__("k", "v\x00"),
                    lambda m, n=name: getattr(m, n).__setitem__("k", "v"),
                )
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                yield (
                    f"{name}[1]",
                    lambda m, n=name: getattr(m, n).extend(["ok", "a\x00b"]),
                    lambda m, n=name: getattr(m, n).extend(["ok", "ab"]),
                )
            else:
                yield (
                    name,
                    lambda m, n=name: setattr(m, n, "a\x00b"),
                    lambda m, n=name: setattr(m, n, "ab"),
                )
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            if field.is_repeated:
                yield (
                    f"{name}[1]",
                    lambda m, n=name: getattr(m, n).extend([1.0, math.inf]),
                    lambda m, n=name: getattr(m, n).extend([1.0, 2.0]),
                )
            else:
                yield (
                    name,
                    lambda m, n=name: setattr(m, n, math.nan),
                    lambda m, n=name: setattr(m, n, 1.5),
                )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            yield from _bad_nested(field, depth)


def _bad_nested(field: FieldDescriptor, depth: int) -> Iterator[tuple[str, Any, Any]]:
    name, sub = field.name, field.message_type
    if sub.full_name == "google.protobuf.Timestamp":
        inner: list[tuple[str, Any, Any]] = [
            ("", lambda t: setattr(t, "seconds", -1), lambda t: setattr(t, "seconds", 1))
        ]
    elif sub.full_name == "google.protobuf.Duration":
        # Nanos against the sign of the seconds.
        inner = [
            ("", lambda d: d.MergeFrom(_duration(1, -5)), lambda d: d.MergeFrom(_duration(1, 5)))
        ]
    elif sub.full_name == "google.protobuf.Struct":
        inner = [
            (
                ".a.b",
                lambda s: s.update({"a": {"b": math.nan}}),
                lambda s: s.update({"a": {"b": 1.0}}),
            ),
            (".t", lambda s: s.update({"t": "x\x00"}), lambda s: s.update({"t": "x"})),
        ]
    elif depth < 3:
        inner = [("." + path, bad, good) for path, bad, good in _bad_values(sub, depth + 1)]
    else:
        inner = []
    for path, bad, good in inner:
        if field.is_repeated:
            yield (
                f"{name}[1]{path}",
                lambda m, n=name, b=bad: _two(getattr(m, n), b),
                lambda m, n=name, g=good: _two(getattr(m, n), g),
            )
        else:
            yield (
                f"{name}{path}",
                lambda m, n=name, b=bad: b(getattr(m, n)),
                lambda m, n=name, g=good: g(getattr(m, n)),
            )


def _duration(seconds: int, nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


def _two(repeated: Any, plant: Any) -> None:
    repeated.add()
    plant(repeated.add())


def _good(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return "v"
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.0
    return 1


def _cases() -> list[tuple[Descriptor, str, Any, Any]]:
    return [
        (descriptor, path, bad, good)
        for descriptor in _request_types()
        for path, bad, good in _bad_values(descriptor)
    ]


def test_request_checks_name_the_field_on_every_rpc() -> None:
    """For every field of every RPC's request that can hold a refusable value, the
    check names it, and the same request with a good value there passes."""
    cases = _cases()
    assert len(cases) > 150  # every request type, nested fields included
    for descriptor, path, bad, good in cases:
        message = _new(descriptor)
        bad(message)
        with pytest.raises(InvalidArgument) as refused:
            request_checks.check_request(message)
        assert refused.value.field == path, (descriptor.full_name, path)
        clean = _new(descriptor)
        good(clean)
        request_checks.check_request(clean)


def test_request_checks_keep_the_struct_depth_and_timestamp_rules() -> None:
    """Struct nesting past MAX_STRUCT_DEPTH (by structs and by lists), a Timestamp at
    the top of its range and a Duration with mixed signs are refused as before; the
    largest allowed values pass."""
    request = credentials_pb2.StoreCredentialRequest()
    request.expire_time.seconds = request_checks.MAX_TIMESTAMP_SECONDS - 1
    request_checks.check_request(request)
    request.expire_time.seconds = request_checks.MAX_TIMESTAMP_SECONDS
    with pytest.raises(InvalidArgument, match="expire_time: must be from 1970"):
        request_checks.check_request(request)
    within = credentials_pb2.ListExpiringCredentialsRequest()
    within.within.seconds, within.within.nanos = 5, -1
    with pytest.raises(InvalidArgument, match="within: nanos must be"):
        request_checks.check_request(within)
    for levels, refused in ((request_checks.MAX_STRUCT_DEPTH, False), (33, True)):
        for via_list in (False, True):
            update = organizations_pb2.UpdateOrganizationRequest()
            value: Any = "leaf"
            for _ in range(levels - 1):
                value = [value] if via_list else {"a": value}
            update.organization.settings.update({"a": value})
            if refused:
                with pytest.raises(InvalidArgument, match="nests deeper than 32 levels"):
                    request_checks.check_request(update)
            else:
                request_checks.check_request(update)


@pytest.mark.parametrize(
    ("domain", "wire", "prefix"),
    [
        (CredentialType, credentials_pb2.CredentialType, "CREDENTIAL_TYPE_"),
        (CredentialState, credentials_pb2.CredentialState, "CREDENTIAL_STATE_"),
        (ConnectionStatus, connections_pb2.ConnectionStatus, "CONNECTION_STATUS_"),
        (Platform, connections_pb2.Platform, "PLATFORM_"),
        (Plan, organizations_pb2.Plan, "PLAN_"),
    ],
)
def test_enum_tables_answer_as_the_name_lookups(domain: Any, wire: Any, prefix: str) -> None:
    """Every domain member maps to the number Value() gives its wire name, every wire
    number back to what enum_from_proto gives, and an unknown number is still an
    INVALID_ARGUMENT naming the field."""
    table = EnumWire(domain, wire, prefix)
    for member in domain:
        assert table.to_proto(member) == wire.Value(enum_to_proto_name(member, prefix))
    for number in wire.values():
        expected = enum_from_proto(domain, wire.Name, number, prefix, "f")
        assert table.from_proto(number, "f") is expected
    with pytest.raises(InvalidArgument) as unknown:
        table.from_proto(987, "items[3].type")
    assert unknown.value.field == "items[3].type"
    assert "987 is not a known value" in str(unknown.value)


def test_timestamp_matches_protobufs_own_conversion() -> None:
    """UTC datetimes (the database's), before and after the epoch, at both ends of
    datetime's range and with microseconds, convert as Timestamp.FromDatetime does;
    other time zones and naive datetimes still go through it."""
    values = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 14, 15, 9, 26, 535_897, tzinfo=UTC),
        datetime.now(UTC),
        datetime(2026, 3, 14, 15, 9, 26, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 14, 15, 9, 26, 5),
    ]
    for value in values:
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(value)
        assert timestamp(value) == expected, value
    assert timestamp(None) is None


def _protobufs_own(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def test_credentials_are_written_as_the_message_constructor_wrote_them() -> None:
    """A Credential filled in place (or built by credential_to_proto) equals the one
    the constructor built from protobuf's own conversions, for every type and state
    and with the optional times present (UTC or not) or absent, which stay unset."""
    now = datetime(2026, 3, 14, 15, 9, 26, 535_897, tzinfo=UTC)
    elsewhere = now.astimezone(timezone(timedelta(hours=-7)))
    cases = [
        (type_, state, version_state, expires, changed, destroy)
        for type_ in CredentialType
        for state in CredentialState
        for version_state in CredentialVersionState
        for expires, changed, destroy in (
            (None, None, None),
            (now, elsewhere, now),
            (elsewhere, now, elsewhere),
        )
    ]
    for type_, state, version_state, expires, changed, destroy in cases:
        credential = Credential(
            id=uuid.uuid4(),
            organization_id=uuid.uuid4(),
            connection_id=uuid.uuid4(),
            type=type_,
            version=7,
            state=state,
            key_version=2,
            fingerprint="sha256:ab",
            created_at=now,
            expires_at=expires,
            state_changed_at=changed,
            version_state=version_state,
            destroy_at=destroy,
        )
        expected = credentials_pb2.Credential(
            id=str(credential.id),
            organization_id=str(credential.organization_id),
            connection_id=str(credential.connection_id),
            type=credentials_pb2.CredentialType.Value("CREDENTIAL_TYPE_" + type_.name),
            version=7,
            state=credentials_pb2.CredentialState.Value("CREDENTIAL_STATE_" + state.name),
            key_version=2,
            fingerprint="sha256:ab",
            create_time=_protobufs_own(now),
            expire_time=_protobufs_own(expires),
            state_change_time=_protobufs_own(changed),
            version_state=credentials_pb2.CredentialVersionState.Value(
                "CREDENTIAL_VERSION_STATE_" + version_state.name
            ),
            destroy_time=_protobufs_own(destroy),
        )
        assert credential_to_proto(credential) == expected
        response = credentials_pb2.RevealCredentialResponse(value="v")
        fill_credential(response.credential, credential)
        assert response.credential == expected
        assert response.credential.HasField("expire_time") is (expires is not None)
        assert response.credential.HasField("state_change_time") is (changed is not None)
        assert response.credential.HasField("destroy_time") is (destroy is not None)
        assert response.SerializeToString(deterministic=True) == (
            credentials_pb2.RevealCredentialResponse(
                credential=expected, value="v"
            ).SerializeToString(deterministic=True)
        )


def test_page_token_fields_are_read_only_where_the_type_has_them() -> None:
    """A message type with page_token or next_page_token gives its value (each call:
    the per-type answer is cached, the value is not); one without gives ""; a
    non-protobuf object falls back to its attribute."""
    listing = credentials_pb2.ListCredentialsRequest(page_token="abc")
    assert interceptors._field_text(listing, "page_token") == "abc"
    listing.page_token = "def"
    assert interceptors._field_text(listing, "page_token") == "def"
    page = credentials_pb2.ListCredentialsResponse(next_page_token="n1")
    assert interceptors._field_text(page, "next_page_token") == "n1"
    for _ in range(2):
        assert interceptors._field_text(credentials_pb2.GetCredentialRequest(), "page_token") == ""
    assert interceptors._field_text(SimpleNamespace(page_token="p"), "page_token") == "p"
    assert interceptors._field_text(request_checks.Oversized(5), "page_token") == ""


def _call(method: str, span: Any) -> Any:
    return SimpleNamespace(
        grpc_type=interceptors.UNARY,
        method=method,
        started=0.0,
        reveals=method.endswith("/RevealCredential"),
        span=span,
    )


def test_reveal_outcomes_are_counted_every_time_by_code() -> None:
    """Each RevealCredential outcome adds one to singura_credential_reveals{outcome}
    (also after its series is cached); other methods add nothing to it."""
    reveal = "/singura.vault.v1.CredentialService/RevealCredential"

    def count(outcome: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "singura_credential_reveals_total", {"outcome": outcome}
        )
        return value or 0.0

    before = {code: count(code) for code in ("OK", "NOT_FOUND")}
    for _ in range(3):
        interceptors._observe(_call(reveal, trace.INVALID_SPAN), "OK")
    interceptors._observe(_call(reveal, trace.INVALID_SPAN), "NOT_FOUND")
    interceptors._observe(
        _call("/singura.vault.v1.CredentialService/GetCredential", trace.INVALID_SPAN), "OK"
    )
    assert count("OK") - before["OK"] == 3
    assert count("NOT_FOUND") - before["NOT_FOUND"] == 1


def test_a_recording_span_still_gets_its_status_and_ends() -> None:
    """With a recording span the status code attribute, the error status and the end
    are set as before; a span that records nothing (no exporter, with or without the
    caller's traceparent) is left alone without error."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    method = "/singura.vault.v1.CredentialService/GetCredential"
    interceptors._observe(_call(method, tracer.start_span("ok")), "OK")
    interceptors._observe(_call(method, tracer.start_span("bad")), "NOT_FOUND")
    ok, bad = exporter.get_finished_spans()
    assert ok.attributes is not None
    assert bad.attributes is not None
    assert ok.attributes["rpc.grpc.status_code"] == 0
    assert ok.status.status_code is not StatusCode.ERROR
    assert bad.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert bad.status.status_code is StatusCode.ERROR
    parent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    non_recording = interceptors._server_span(trace.NoOpTracer(), method, parent, "r")
    assert non_recording.get_span_context().is_valid
    interceptors._observe(_call(method, non_recording), "INTERNAL")


class _AbortedError(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.aborted: tuple[Any, str, Any] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> None:
        self.aborted = (code, details, trailing_metadata)
        raise _AbortedError


async def test_a_vault_method_refuses_an_undecodable_body_before_its_handler() -> None:
    """The vault's wrapper (which now does the decoding guard's refusal itself) answers
    a body that did not decode with INVALID_ARGUMENT and the fixed message, and never
    runs the handler; a decodable request reaches it."""
    ran: list[Message] = []

    async def behavior(request: Any, context: Any) -> Any:
        ran.append(request)
        return credentials_pb2.GetCredentialResponse()

    handler = grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=credentials_pb2.GetCredentialRequest.FromString,
        response_serializer=credentials_pb2.GetCredentialResponse.SerializeToString,
    )

    async def continuation(details: Any) -> Any:
        return handler

    details: Any = SimpleNamespace(
        method="/singura.vault.v1.CredentialService/GetCredential", invocation_metadata=()
    )
    wrapped = await interceptors.VaultInterceptor(None).intercept_service(continuation, details)
    decoded = wrapped.request_deserializer(b"\x0a\x02\xff\xfe")  # invalid UTF-8 in a string
    assert decoded is request_checks.UNDECODABLE
    context = _Context()
    with pytest.raises(_AbortedError):
        await wrapped.unary_unary(decoded, context)
    assert ran == []
    assert context.aborted is not None
    assert context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert context.aborted[1] == request_checks.UNDECODABLE_MESSAGE
    request = wrapped.request_deserializer(
        credentials_pb2.GetCredentialRequest(credential_id="c").SerializeToString()
    )
    await wrapped.unary_unary(request, _Context())
    assert [r.credential_id for r in ran] == ["c"]  # type: ignore[attr-defined]
