"""VaultError: every failed call, as one exception tree with the details the vault sent.

The vault answers a failure with a google.rpc.Status in the ``grpc-status-details-bin``
trailer (AIP-193, docs/errors.md): always an ErrorInfo (``reason``, ``domain``
"singura.vault", ``metadata``), a BadRequest for INVALID_ARGUMENT, a RetryInfo for
RESOURCE_EXHAUSTED, a PreconditionFailure for FAILED_PRECONDITION and ABORTED; and the
``x-request-id`` trailer names the call in the vault's logs. Switch on ``reason`` (or the
class), never on the message.

    VaultError
    ├── Cancelled              CANCELLED
    ├── Unknown                UNKNOWN
    ├── InvalidArgument        INVALID_ARGUMENT      (field_violations)
    ├── DeadlineExceeded       DEADLINE_EXCEEDED
    ├── NotFound               NOT_FOUND
    ├── AlreadyExists          ALREADY_EXISTS
    ├── PermissionDenied       PERMISSION_DENIED
    ├── ResourceExhausted      RESOURCE_EXHAUSTED    (retry_delay)
    ├── FailedPrecondition     FAILED_PRECONDITION   (precondition_violations)
    ├── Aborted                ABORTED               (precondition_violations)
    ├── OutOfRange             OUT_OF_RANGE
    ├── Unimplemented          UNIMPLEMENTED
    ├── Internal               INTERNAL
    ├── Unavailable            UNAVAILABLE
    ├── DataLoss               DATA_LOSS
    └── Unauthenticated        UNAUTHENTICATED

``from_rpc_error`` is the one place a grpc error becomes a VaultError. A detail that does not
parse is left out rather than raised: the status code and message still arrive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import timedelta
from types import MappingProxyType
from typing import Final

import grpc
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo, PreconditionFailure, RetryInfo
from google.rpc.status_pb2 import Status

STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
REQUEST_ID_KEY: Final = "x-request-id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One request field at fault (google.rpc.BadRequest)."""

    field: str  # the request field's path, e.g. "organization.slug"
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One failed precondition (google.rpc.PreconditionFailure); ``type`` is the reason."""

    type: str
    subject: str
    description: str


class VaultError(Exception):
    """A failed vault call. ``code`` is the gRPC status; the rest is what the vault sent."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        precondition_violations: Sequence[PreconditionViolation] = (),
        retry_delay: timedelta | None = None,
        request_id: str | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        #: ErrorInfo.reason, e.g. "STALE_ETAG"; "" when none came (e.g. no connection).
        self.reason = reason
        #: ErrorInfo.domain: "singura.vault" for the vault's own errors.
        self.domain = domain
        #: ErrorInfo.metadata, e.g. {"field": "organization.slug"}.
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.precondition_violations: tuple[PreconditionViolation, ...] = tuple(
            precondition_violations
        )
        #: RetryInfo: wait at least this long before trying again.
        self.retry_delay = retry_delay
        #: The x-request-id trailer: quote it when reporting a problem.
        self.request_id = request_id
        #: The RPC, e.g. "/singura.vault.v1.OrganizationService/CreateOrganization".
        self.method = method

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason and self.reason != self.code.name:
            text += f" (reason {self.reason})"
        if self.request_id:
            text += f" [request {self.request_id}]"
        return text


class Cancelled(VaultError):
    code = grpc.StatusCode.CANCELLED


class Unknown(VaultError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(VaultError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(VaultError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(VaultError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(VaultError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(VaultError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(VaultError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(VaultError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(VaultError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(VaultError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(VaultError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(VaultError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(VaultError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(VaultError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(VaultError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: Final[Mapping[grpc.StatusCode, type[VaultError]]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_class(code: grpc.StatusCode) -> type[VaultError]:
    """The VaultError subclass of a status code."""
    return _BY_CODE.get(code, VaultError)


def from_rpc_error(error: grpc.RpcError, method: str | None = None) -> VaultError:
    """A grpc error (sync or grpc.aio) as the VaultError subclass of its code."""
    code = _call_attr(error, "code")
    status_code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    text = _call_attr(error, "details")
    message = text if isinstance(text, str) else ""
    trailers = _trailers(error)
    request_id = trailers.get(REQUEST_ID_KEY)
    raw = trailers.get(STATUS_DETAILS_KEY)
    details = _decode_status(raw) if isinstance(raw, bytes) else _Details()
    return error_class(status_code)(
        message,
        code=status_code,
        reason=details.reason,
        domain=details.domain,
        metadata=details.metadata,
        field_violations=details.field_violations,
        precondition_violations=details.precondition_violations,
        retry_delay=details.retry_delay,
        request_id=request_id if isinstance(request_id, str) else None,
        method=method,
    )


def _call_attr(error: grpc.RpcError, name: str) -> object:
    attr = getattr(error, name, None)
    return attr() if callable(attr) else None


def _trailers(error: grpc.RpcError) -> dict[str, str | bytes]:
    trailers = _call_attr(error, "trailing_metadata")
    found: dict[str, str | bytes] = {}
    if trailers is None:
        return found
    try:
        items = list(trailers)  # type: ignore[call-overload]  # sync: tuples; aio: Metadata
    except TypeError:
        return found
    for item in items:
        key, value = item if isinstance(item, tuple) else (item, trailers[item])  # type: ignore[index]
        if isinstance(key, str) and isinstance(value, str | bytes):
            found.setdefault(key, value)
    return found


@dataclass
class _Details:
    """What a google.rpc.Status carried, as VaultError's fields."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = dataclass_field(default_factory=dict)
    field_violations: list[FieldViolation] = dataclass_field(default_factory=list)
    precondition_violations: list[PreconditionViolation] = dataclass_field(default_factory=list)
    retry_delay: timedelta | None = None
    has_info: bool = False


def _decode_status(raw: bytes) -> _Details:
    """The details of a serialized google.rpc.Status; one that does not parse is skipped."""
    found = _Details()
    try:
        status = Status.FromString(raw)
    except DecodeError:
        return found
    for detail in status.details:
        info = ErrorInfo()
        bad_request = BadRequest()
        retry = RetryInfo()
        precondition = PreconditionFailure()
        try:
            if detail.Unpack(info):
                if not found.has_info:
                    found.has_info = True
                    found.reason, found.domain = info.reason, info.domain
                    found.metadata = dict(info.metadata)
            elif detail.Unpack(bad_request):
                found.field_violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
            elif detail.Unpack(retry):
                found.retry_delay = retry.retry_delay.ToTimedelta()
            elif detail.Unpack(precondition):
                found.precondition_violations.extend(
                    PreconditionViolation(v.type, v.subject, v.description)
                    for v in precondition.violations
                )
        except DecodeError:
            continue
    return found
