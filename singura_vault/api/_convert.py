"""Protobuf <-> domain conversions shared by the servicers."""

from __future__ import annotations

import enum
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from singura_vault.domain.connections import ConnectionStatus, Platform
from singura_vault.domain.credentials import CredentialState, CredentialType
from singura_vault.domain.organizations import Plan
from singura_vault.errors import InvalidArgument

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS_PER_DAY: Final = 86_400


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    message = timestamp_pb2.Timestamp()
    set_timestamp(message, value)
    return message


def set_timestamp(message: timestamp_pb2.Timestamp, value: datetime | None) -> None:
    """Fill a Timestamp field in place (left unset for None), as FromDatetime would."""
    if value is None:
        return
    if value.tzinfo is UTC:
        # What FromDatetime computes (seconds since the epoch, floored, and the
        # microseconds as nanos), without its time-tuple round trip: a response
        # carries up to eight of these, and the database hands back UTC datetimes.
        since = value - _EPOCH
        message.seconds = since.days * _SECONDS_PER_DAY + since.seconds
        message.nanos = value.microsecond * 1000
        return
    message.FromDatetime(value)


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


class EnumWire(Generic[E, V]):
    """A domain enum and its protobuf spelling, both ways, looked up once: the same
    answers as :func:`enum_to_proto_name` with ``Value`` and :func:`enum_from_proto`,
    without a name built and looked up on every call."""

    def __init__(self, domain_enum: type[E], wire: _EnumTypeWrapper[V], prefix: str) -> None:
        self._domain_enum = domain_enum
        self._wire = wire
        self._prefix = prefix
        names = set(wire.keys())
        self._numbers: dict[E, V] = {
            member: wire.Value(prefix + member.name)
            for member in domain_enum
            if prefix + member.name in names
        }
        self._members: dict[int, E | None] = {
            int(number): member for member, number in self._numbers.items()
        }
        if prefix + "UNSPECIFIED" in names:
            self._members[int(wire.Value(prefix + "UNSPECIFIED"))] = None

    def to_proto(self, member: E) -> V:
        number = self._numbers.get(member)
        if number is None:  # a member the contract does not spell: fails as Value() does
            return self._wire.Value(enum_to_proto_name(member, self._prefix))
        return number

    def from_proto(self, value: V, field: str) -> E | None:
        """As :func:`enum_from_proto`: None for *_UNSPECIFIED, INVALID_ARGUMENT naming
        ``field`` for a number the contract does not define."""
        try:
            return self._members[value]
        except KeyError:
            return enum_from_proto(self._domain_enum, self._wire.Name, value, self._prefix, field)


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
