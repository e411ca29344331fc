"""Protobuf <-> domain conversions shared by the servicers."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from singura_vault.domain import ConnectionStatus, CredentialState, CredentialType, Plan, Platform
from singura_vault.errors import InvalidArgument

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    message = duration_pb2.Duration()
    message.FromTimedelta(value)
    return message


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def from_struct(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def enum_from_proto(
    domain_enum: type[E], name_of: Callable[[V], str], value: V, prefix: str, field: str
) -> E | None:
    """Map e.g. PLAN_FREE to Plan.FREE; the *_UNSPECIFIED zero value maps to None.

    An integer the contract does not define (a newer or broken client) is an
    INVALID_ARGUMENT naming the field, not an internal error.
    """
    try:
        name = name_of(value).removeprefix(prefix)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a known value") from None
    if name == "UNSPECIFIED":
        return None
    return domain_enum[name]


def enum_to_proto_name(value: enum.Enum, prefix: str) -> str:
    return prefix + value.name


# How the contract spells the domain enums that error messages suggest as examples.
_WIRE_PREFIXES: dict[type[enum.Enum], str] = {
    ConnectionStatus: "CONNECTION_STATUS_",
    CredentialState: "CREDENTIAL_STATE_",
    CredentialType: "CREDENTIAL_TYPE_",
    Plan: "PLAN_",
    Platform: "PLATFORM_",
}


def wire_name(value: enum.Enum) -> str:
    """``Plan.FREE`` as a client writes it: ``PLAN_FREE``."""
    return enum_to_proto_name(value, _WIRE_PREFIXES[type(value)])
