"""The vault's exception tree. Every error a client can see is one of these.

Each class carries the gRPC status code it maps to, named by our own
:class:`ErrorCode` so that the service layer never imports gRPC; the server
interceptor (``api/interceptors.py``) is the one place that turns them into
statuses. Messages are written for the caller: they name the offending field
and say what to do, and they never contain a secret value.

    VaultError
    ├── InvalidArgument      INVALID_ARGUMENT   a field is missing or malformed
    │   └── InvalidArguments                   several fields at once (one BadRequest)
    ├── NotFound             NOT_FOUND          no such resource (in this tenant)
    ├── AlreadyExists        ALREADY_EXISTS     a unique value is taken
    ├── FailedPrecondition   FAILED_PRECONDITION  valid request, wrong state
    ├── Aborted              ABORTED            stale etag or a concurrency conflict
    ├── ResourceExhausted    RESOURCE_EXHAUSTED a limit (plan, rate) is reached
    ├── Unavailable          UNAVAILABLE        the database cannot be reached
    ├── DeadlineExceeded     DEADLINE_EXCEEDED  a statement ran past DB_QUERY_TIMEOUT
    ├── DataLoss             DATA_LOSS          stored data failed an integrity check
    ├── Unauthenticated      UNAUTHENTICATED    no, malformed, unknown, revoked or expired key
    └── PermissionDenied     PERMISSION_DENIED  a valid key without the needed scope or role
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final


class ErrorCode(enum.Enum):
    """gRPC status codes by name, so lower layers need not import grpc."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    DATA_LOSS = "DATA_LOSS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"


class VaultError(Exception):
    """Base of every error the vault reports to a client.

    ``reason`` is the error's stable name (UPPER_SNAKE_CASE, AIP-193's ErrorInfo
    reason in the domain ``singura.vault``): clients switch on it, never on the
    message, which is for people and may change. Each class has a default; a raise
    site names a more specific one where a client can act on the difference."""

    code: ErrorCode = ErrorCode.FAILED_PRECONDITION
    reason: str = "FAILED_PRECONDITION"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """``metadata``: what a program needs beside the reason (ErrorInfo.metadata),
        e.g. the limit a request exceeded; never a secret."""
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        if reason is not None:
            self.reason = reason


class InvalidArgument(VaultError):
    """A request field is missing or malformed; the message names the field."""

    code = ErrorCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        field: str,
        problem: str,
        *,
        reason: str | None = None,
        example: enum.Enum | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """``example``: a valid value to suggest, a domain enum member; the API layer
        spells it as the wire contract does (``CredentialType.ACCESS_TOKEN`` reaches
        the client as ``CREDENTIAL_TYPE_ACCESS_TOKEN``), so the layers below never
        write protobuf names."""
        self.field = field
        self.problem = problem
        self.example = example
        # Each invalid field of the request: this one alone, unless InvalidArguments.
        self.violations: tuple[InvalidArgument, ...] = (self,)
        super().__init__(
            f"{field}: {self.describe(_domain_name)}", reason=reason, metadata=metadata
        )

    def describe(self, name_of: Callable[[enum.Enum], str]) -> str:
        """The problem, with the example value spelled by ``name_of``."""
        if self.example is None:
            return self.problem
        return f"{self.problem} (e.g. {name_of(self.example)})"


def _domain_name(value: enum.Enum) -> str:
    return f"{type(value).__name__}.{value.name}"


class InvalidArguments(InvalidArgument):
    """Several fields of one request are invalid: all of them are reported in one
    answer (one BadRequest violation each), not one per round trip. ``field``,
    ``problem`` and ``reason`` are the first violation's, for callers that read one."""

    def __init__(self, violations: Sequence[InvalidArgument]) -> None:
        first = violations[0]
        reasons = {v.reason for v in violations}
        super().__init__(
            first.field,
            first.problem,
            example=first.example,
            reason=first.reason if len(reasons) == 1 else InvalidArgument.reason,
        )
        self.violations = tuple(violations)
        self.message = "; ".join(v.message for v in self.violations)
        self.args = (self.message,)


class FieldChecks:
    """Runs a request's field checks and reports every failure at once.

    ``with checks.field(): name = validation.text(...)`` records the InvalidArgument
    the block raises instead of letting it end the call; ``raise_if_any()`` raises
    them together. A name assigned in a failed block is unbound, so nothing may use
    the checked values before ``raise_if_any()`` has returned."""

    def __init__(self) -> None:
        self.failed: list[InvalidArgument] = []

    @contextmanager
    def field(self) -> Iterator[None]:
        try:
            yield
        except InvalidArgument as exc:
            self.failed.extend(exc.violations)

    def raise_if_any(self) -> None:
        if len(self.failed) == 1:
            raise self.failed[0]
        if self.failed:
            raise InvalidArguments(self.failed)


class NotFound(VaultError):
    """The resource does not exist, or not in the caller's organization."""

    code = ErrorCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(VaultError):
    """A value that must be unique is already taken.

    ``fields``: the request fields whose value is taken (``organization.slug``), so a
    program knows which to change without reading the message (ErrorInfo metadata
    ``field``); ``resource_type`` (the contract's message name, ``Organization``) and
    ``resource_name`` (the taken value, as the caller sent it) fill a ResourceInfo."""

    code = ErrorCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"

    def __init__(
        self,
        message: str,
        *,
        fields: Sequence[str] = (),
        resource_type: str = "",
        resource_name: str = "",
        reason: str | None = None,
    ) -> None:
        super().__init__(
            message, reason=reason, metadata={"field": ",".join(fields)} if fields else None
        )
        self.fields = tuple(fields)
        self.resource_type = resource_type
        self.resource_name = resource_name


class FailedPrecondition(VaultError):
    """The request is valid but the system is not in a state to accept it."""

    code = ErrorCode.FAILED_PRECONDITION


def connection_deleted(connection_id: object, what: str) -> FailedPrecondition:
    """FAILED_PRECONDITION (reason CONNECTION_DELETED) for ``what`` (e.g. "reveal its
    credentials") on a connection DeleteConnection marked deleted."""
    return FailedPrecondition(
        f"connection {connection_id} is deleted; cannot {what}. Restore it with "
        "UndeleteConnection before its purge_time (GetConnection shows it)",
        reason="CONNECTION_DELETED",
    )


class Aborted(VaultError):
    """A concurrent change won; re-read the resource and retry."""

    code = ErrorCode.ABORTED
    reason = "CONCURRENT_CHANGE"


def check_etag(what: str, expected_version: int | None, current_version: int) -> None:
    """ABORTED (reason STALE_ETAG) when the caller's etag names another version of
    ``what`` (e.g. "connection <id>") than the current one; no etag passes."""
    if expected_version is not None and current_version != expected_version:
        raise Aborted(
            f"{what} was changed by another call since you read it (stale etag); "
            "read it again and retry",
            reason="STALE_ETAG",
        )


class ResourceExhausted(VaultError):
    """A limit was reached: a plan's connection limit or a rate limit."""

    code = ErrorCode.RESOURCE_EXHAUSTED
    reason = "LIMIT_REACHED"

    def __init__(
        self, message: str, retry_after_ms: int | None = None, *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_ms = retry_after_ms


class Unavailable(VaultError):
    """The database cannot be reached right now; the call may be retried."""

    code = ErrorCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceeded(VaultError):
    """A database statement ran longer than DB_QUERY_TIMEOUT and was cancelled."""

    code = ErrorCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class DataLoss(VaultError):
    """Stored data failed an integrity check (e.g. a tampered ciphertext)."""

    code = ErrorCode.DATA_LOSS
    reason = "INTEGRITY_CHECK_FAILED"


# Why a call's API key was refused: for the operator's log and metrics only. The
# client gets one message and one reason whatever the cause (no oracle).
AUTH_FAILURE_CAUSES: Final = ("missing", "not_bearer", "malformed", "unknown", "revoked", "expired")


class Unauthenticated(VaultError):
    """The call carries no valid API key. One message for every unknown key: no oracle.

    ``cause`` (one of :data:`AUTH_FAILURE_CAUSES`) and ``key_id`` (the key's public
    id, when the key was well-formed) are for the server's log and metrics; they
    never reach the client."""

    code = ErrorCode.UNAUTHENTICATED
    reason = "API_KEY_INVALID"

    def __init__(self, message: str, *, cause: str | None = None, key_id: str = "") -> None:
        super().__init__(message)
        self.cause = cause
        self.key_id = key_id


class PermissionDenied(VaultError):
    """The key is valid but may not do this (scope, organization or role)."""

    code = ErrorCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class ConfigError(Exception):
    """The vault's configuration is invalid; raised at start, never to clients."""


class InvariantBroken(Exception):
    """A condition the code relies on did not hold: a bug in the vault (or a schema that
    does not match it), never a client's doing and never a client's message.

    Not a VaultError: the interceptor logs it and answers INTERNAL with its fixed
    message. It stands where an ``assert`` would, because asserts vanish under
    ``python -O``; its message names the place and never carries a value.
    """
