"""Checks at the edge: every request is decodable, of a sane size, and every value
in it storable.

Three things a client can send that no handler should ever see:

- **A request larger than any the contract allows** (:data:`MAX_REQUEST_BYTES`).
  The guarded deserializer measures the bytes before protobuf parses them and
  hands on an :class:`Oversized` marker instead; the interceptor answers it with
  INVALID_ARGUMENT (reason ``REQUEST_TOO_LARGE``, the limit in ErrorInfo
  metadata), after authentication, like any other refusal of a vault call.
  gRPC's own transport limit is set higher (:data:`MAX_TRANSPORT_BYTES`) so that
  such a request reaches this check; beyond that transport limit gRPC itself
  answers RESOURCE_EXHAUSTED before any vault code runs (docs/errors.md).
- **Bytes that do not decode** as the method's request message (truncated or
  garbage protobuf, invalid UTF-8 in a string field, nesting past the parser's
  limit). gRPC would answer UNKNOWN with a Python type name and log a traceback,
  before authentication -- a log flood for anyone who can connect. The guarded
  deserializer turns them into :data:`UNDECODABLE`, which the interceptor answers
  with INVALID_ARGUMENT and a fixed message, logged at most once per interval.
- **Values outside what protobuf or PostgreSQL can hold**: a Timestamp or
  Duration out of its range (or with bad nanos), a NUL character in any string
  (PostgreSQL refuses it in text and jsonb), NaN or an infinity in a Struct, a
  Struct nested deeper than :data:`MAX_STRUCT_DEPTH`. :func:`check_request` walks
  the whole message by its descriptor and names the first offending field by its
  full path, so the rule holds for every field of every RPC, present and future.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from singura_vault.errors import InvalidArgument
from singura_vault.logs import get_logger

log = get_logger(__name__)

# Timestamps the vault accepts: from the Unix epoch to the last day protobuf's
# Timestamp, Python's datetime and PostgreSQL's timestamptz all hold exactly
# (9999-12-31 is excluded so that no time zone or rounding pushes it past 9999).
MIN_TIMESTAMP_SECONDS: Final = 0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS: Final = 253_402_214_400  # 9999-12-31T00:00:00Z, exclusive
# protobuf's own Duration range (about 10,000 years).
MAX_DURATION_SECONDS: Final = 315_576_000_000
MAX_STRUCT_DEPTH: Final = 32
# The largest encoded request the vault accepts. The contract's largest legitimate
# request is CreateConnection (or UpdateConnection) at its limits: 500 permissions
# of 255 four-byte characters (~510 KB) and metadata of 64 KiB as JSON (~180 KB of
# protobuf: a number is 4 bytes of JSON, "0.0,", and 11 of Struct), ~695 KB in all.
# StoreCredential carries at most 64 KiB of value, BatchRevealCredentials 1-100
# small items (the batch's *response* may be 100 x 64 KiB: a client reading it
# needs a receive limit above gRPC's default 4 MiB, docs/errors.md#request-size).
# tests/integration/test_request_size.py builds those requests from the services' own limits
# and checks that they fit, with at least a quarter to spare.
MAX_REQUEST_BYTES: Final = 1024 * 1024
# gRPC's receive limit (grpc.max_receive_message_length): larger than
# MAX_REQUEST_BYTES so that an oversized request (a 10 MB credential value) gets the
# vault's INVALID_ARGUMENT with details rather than gRPC's transport error, yet
# bounded, so that no call makes the server buffer more than this.
MAX_TRANSPORT_BYTES: Final = 16 * 1024 * 1024
_NANOS_PER_SECOND: Final = 1_000_000_000

UNDECODABLE_MESSAGE: Final = (
    "request: the body is not a valid encoding of this method's request message "
    "(malformed protobuf, invalid UTF-8 in a string field, or nested too deeply)"
)
_LOG_INTERVAL_S: Final = 10.0


class Undecodable:
    """The request that could not be decoded (a sentinel; carries nothing)."""

    def __repr__(self) -> str:
        return "<undecodable request>"


UNDECODABLE: Final = Undecodable()


class Oversized:
    """A request larger than MAX_REQUEST_BYTES, left unparsed; carries its size only."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<oversized request: {self.size} bytes>"


def too_large_problem(size: int) -> str:
    """What is wrong, for the client: the size, the limit, and the largest fields a
    request may carry, so that the fix is clear (a credential value is at most 64 KiB)."""
    return (
        f"is {size} bytes; the limit is {MAX_REQUEST_BYTES} bytes "
        f"({MAX_REQUEST_BYTES // 1024 // 1024} MiB) for any request (a credential value "
        "may be at most 64 KiB, settings and metadata at most 64 KiB as JSON)"
    )


class _IntervalLog:
    """One log line per interval for a refusal that comes before authentication,
    however many arrive (anyone who can connect could otherwise flood the log)."""

    def __init__(self, event: str) -> None:
        self._event = event
        self._last = -math.inf
        self._suppressed = 0

    def record(self, method: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self._last < _LOG_INTERVAL_S:
            self._suppressed += 1
            return
        log.warning(
            self._event,
            rpc_method=method,
            suppressed_since_last=self._suppressed,
            **fields,
        )
        self._last = now
        self._suppressed = 0


undecodable_log = _IntervalLog("request_undecodable")
# Oversized requests to health and reflection (the vault's own services log each one).
oversized_log = _IntervalLog("request_too_large")


def guarded(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """A deserializer that returns :data:`UNDECODABLE` instead of raising, and an
    :class:`Oversized` marker for a request over MAX_REQUEST_BYTES, unparsed."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        if len(data) > MAX_REQUEST_BYTES:
            return Oversized(len(data))
        try:
            return deserialize(data)
        except Exception:  # DecodeError, RecursionError...: all mean "not this message"
            return UNDECODABLE

    return decode


def check_request(message: Message) -> None:
    """Raise InvalidArgument naming the first field whose value the vault cannot hold."""
    _check_message(message, "")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_message(message: Message, path: str) -> None:
    full_name = message.DESCRIPTOR.full_name
    if full_name == "google.protobuf.Timestamp":
        _check_timestamp(message, path)
        return
    if full_name == "google.protobuf.Duration":
        _check_duration(message, path)
        return
    if full_name == "google.protobuf.Struct":
        _check_struct(message, path, 1)
        return
    for field, value in message.ListFields():
        _check_field(field, value, _join(path, field.name))


def _check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if isinstance(key, str):
                _check_text(key, path)
            _check_single(value_field, item, f"{path}[{key!r}]")
        return
    if field.is_repeated:
        for index, item in enumerate(value):
            _check_single(field, item, f"{path}[{index}]")
        return
    _check_single(field, value, path)


def _check_single(field: FieldDescriptor, value: Any, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _check_message(value, path)
    elif field.type == FieldDescriptor.TYPE_STRING:
        _check_text(value, path)
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        _check_number(value, path)


def _check_text(value: str, path: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(path, "must not contain NUL (\\u0000) characters")


def _check_number(value: float, path: str) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(path, "must be a finite number (not NaN or an infinity)")


def _check_timestamp(message: Any, path: str) -> None:
    seconds, nanos = message.seconds, message.nanos
    if not 0 <= nanos < _NANOS_PER_SECOND:
        raise InvalidArgument(path, "nanos must be from 0 to 999,999,999")
    if not MIN_TIMESTAMP_SECONDS <= seconds < MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            path, "must be from 1970-01-01T00:00:00Z to before 9999-12-31T00:00:00Z"
        )


def _check_duration(message: Any, path: str) -> None:
    seconds, nanos = message.seconds, message.nanos
    if not -_NANOS_PER_SECOND < nanos < _NANOS_PER_SECOND or (seconds * nanos < 0):
        raise InvalidArgument(
            path, "nanos must be from -999,999,999 to 999,999,999, with the sign of seconds"
        )
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise InvalidArgument(path, "must be at most 315,576,000,000 seconds (10,000 years)")


def _check_struct(message: Any, path: str, depth: int) -> None:
    if depth > MAX_STRUCT_DEPTH:
        raise InvalidArgument(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels")
    for key, value in message.fields.items():
        _check_text(key, path)
        _check_value(value, _join(path, key), depth)


def _check_value(value: Any, path: str, depth: int) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        _check_number(value.number_value, path)
    elif kind == "string_value":
        _check_text(value.string_value, path)
    elif kind == "struct_value":
        _check_struct(value.struct_value, path, depth + 1)
    elif kind == "list_value":
        if depth + 1 > MAX_STRUCT_DEPTH:
            raise InvalidArgument(path, f"nests deeper than {MAX_STRUCT_DEPTH} levels")
        for index, item in enumerate(value.list_value.values):
            _check_value(item, f"{path}[{index}]", depth + 1)
