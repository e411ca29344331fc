"""Request building and result shapes shared by Vault and AsyncVault (no I/O here).

Keyword arguments are named as the proto fields; an enum is given by its short name
("ACCESS_TOKEN"), its full name ("CREDENTIAL_TYPE_ACCESS_TOKEN") or its number; times are
``datetime`` (aware, or naive meaning UTC), durations ``timedelta``, Struct fields mappings.
A secret the vault hands back is wrapped in ``Secret`` here, before any caller sees it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NotRequired, TypedDict, TypeVar

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from ._proto.singura.vault.v1 import (
    access_pb2,
    audit_pb2,
    connections_pb2,
    credentials_pb2,
    oauth_pb2,
)
from ._secret import Secret

if TYPE_CHECKING:
    # The generic base mypy-protobuf's enum metaclasses derive from (types-protobuf).
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

T = TypeVar("T")
V = TypeVar("V", bound=int)

#: An enum argument: "ACCESS_TOKEN", "CREDENTIAL_TYPE_ACCESS_TOKEN" or 1.
EnumArg = str | int


def enum_value(wrapper: _EnumTypeWrapper[V], value: EnumArg, *, field: str) -> V:
    """The number of an enum value given by short name, full name or number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{field}: an enum name or number, not {type(value).__name__}")
    if isinstance(value, int):
        try:
            wrapper.Name(value)  # type: ignore[arg-type]  # checked: raises if unknown
        except ValueError:
            raise ValueError(f"{field}: {value} is not a {wrapper.DESCRIPTOR.name}") from None
        return value  # type: ignore[return-value]  # a known number of this enum
    prefix = wrapper.Name(0).removesuffix("UNSPECIFIED")  # type: ignore[arg-type]
    name = value.strip().upper()
    names = wrapper.keys()  # EnumTypeWrapper is not a mapping: no `in`, no iteration
    for candidate in (name, prefix + name):
        if candidate in names:
            return wrapper.Value(candidate)
    known = ", ".join(key.removeprefix(prefix) for key in names)
    raise ValueError(f"{field}: {value!r} is not a {wrapper.DESCRIPTOR.name} ({known})")


def plain(value: str | Secret) -> str:
    """The text of a secret argument, which callers may pass wrapped or not."""
    return value.reveal() if isinstance(value, Secret) else value


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def when(message: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    """An aware datetime, or None when the field was not set."""
    return message.ToDatetime(tzinfo=UTC) if present else None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list call."""

    items: list[T]
    next_page_token: str  # pass as page_token for the next page; "" on the last one


@dataclass(frozen=True, slots=True)
class RevealedCredential:
    """A revealed credential version: its metadata, and the value as a Secret."""

    credential: credentials_pb2.Credential
    value: Secret


@dataclass(frozen=True, slots=True)
class BatchRevealResult:
    """One item of batch_reveal: ``code`` OK, NOT_FOUND, FAILED_PRECONDITION or DATA_LOSS."""

    code: grpc.StatusCode
    message: str
    credential: credentials_pb2.Credential | None  # None when NOT_FOUND
    value: Secret | None  # only when code is OK

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


class BatchRevealItem(TypedDict):
    """One credential to reveal in batch_reveal (its organization is the call's)."""

    connection_id: str
    type: EnumArg
    version: NotRequired[int]  # 0 or absent: the current version


@dataclass(frozen=True, slots=True)
class AccessToken:
    """GetAccessToken's answer, the token as a Secret."""

    access_token: Secret
    expire_time: datetime | None
    refreshed: bool
    credential: credentials_pb2.Credential


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A new API key: its metadata, and the full key (shown this once) as a Secret."""

    api_key: access_pb2.ApiKey
    secret: Secret


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def batch_items(
    organization_id: str, items: Sequence[BatchRevealItem]
) -> credentials_pb2.BatchRevealCredentialsRequest:
    request = credentials_pb2.BatchRevealCredentialsRequest(organization_id=organization_id)
    for index, item in enumerate(items):
        request.items.add(
            connection_id=item["connection_id"],
            type=enum_value(
                credentials_pb2.CredentialType, item["type"], field=f"items[{index}].type"
            ),
            version=item.get("version", 0),
        )
    return request


def batch_results(
    response: credentials_pb2.BatchRevealCredentialsResponse,
) -> list[BatchRevealResult]:
    return [
        BatchRevealResult(
            code=_CODES.get(result.code, grpc.StatusCode.UNKNOWN),
            message=result.message,
            credential=result.credential if result.HasField("credential") else None,
            value=Secret(result.value) if result.code == 0 else None,
        )
        for result in response.results
    ]


def revealed(response: credentials_pb2.RevealCredentialResponse) -> RevealedCredential:
    return RevealedCredential(credential=response.credential, value=Secret(response.value))


def access_token(response: oauth_pb2.GetAccessTokenResponse) -> AccessToken:
    return AccessToken(
        access_token=Secret(response.access_token),
        expire_time=when(response.expire_time, response.HasField("expire_time")),
        refreshed=response.refreshed,
        credential=response.credential,
    )


def created_api_key(response: access_pb2.CreateApiKeyResponse) -> CreatedApiKey:
    return CreatedApiKey(api_key=response.api_key, secret=Secret(response.secret))


def audit_filter(
    *,
    start_time: datetime | None,
    end_time: datetime | None,
    action: str,
    resource_type: str,
    resource_id: str,
    actor: str,
    outcome: EnumArg,
) -> audit_pb2.AuditFilter:
    return audit_pb2.AuditFilter(
        start_time=timestamp(start_time),
        end_time=timestamp(end_time),
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        actor=actor,
        outcome=enum_value(audit_pb2.AuditOutcome, outcome, field="outcome"),
    )


def platform(value: EnumArg) -> connections_pb2.Platform.ValueType:
    return enum_value(connections_pb2.Platform, value, field="platform")


def credential_type(
    value: EnumArg, *, field: str = "type"
) -> credentials_pb2.CredentialType.ValueType:
    return enum_value(credentials_pb2.CredentialType, value, field=field)
