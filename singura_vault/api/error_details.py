"""google.rpc.Status details for every error the vault returns (AIP-193).

A program switches on ErrorInfo.reason (domain ``singura.vault``), never on the
message. INVALID_ARGUMENT carries a BadRequest with one violation per invalid
field, ALREADY_EXISTS the taken field in ErrorInfo metadata and a ResourceInfo,
RESOURCE_EXHAUSTED with a retry delay a RetryInfo (``retry-after-ms`` stays for
existing callers), FAILED_PRECONDITION and ABORTED a PreconditionFailure. The
details go in the ``grpc-status-details-bin`` trailer, as grpc-status and every
gRPC client library read them. Nothing here carries a secret: only what the
message already says, and the names of fields.
"""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2

# googleapis-common-protos ships no type stubs.
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped]

from singura_vault.api._convert import wire_name
from singura_vault.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    VaultError,
)

DOMAIN = "singura.vault"
# ResourceInfo.resource_type: the contract's full message name.
RESOURCE_TYPE_PREFIX = "singura.vault.v1."
# The trailer gRPC libraries read the details from (grpc_status.rpc_status).
DETAILS_KEY = "grpc-status-details-bin"


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]  # every detail is a protobuf message
    return packed


def error_info(reason: str, metadata: dict[str, str] | None = None) -> object:
    """A google.rpc.ErrorInfo in the vault's domain."""
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})


def client_message(exc: VaultError) -> str:
    """The message a client sees: example values spelled as the contract does."""
    if isinstance(exc, InvalidArgument):
        return "; ".join(f"{v.field}: {v.describe(wire_name)}" for v in exc.violations)
    return exc.message


def status_details(exc: VaultError) -> bytes:
    """The serialized google.rpc.Status of a vault error."""
    metadata: dict[str, str] = dict(exc.metadata)
    details: list[object] = []
    if isinstance(exc, InvalidArgument):
        # `field` stays the first invalid field (clients read it); `fields` lists
        # them all when there are several.
        metadata["field"] = exc.field
        if len(exc.violations) > 1:
            metadata["fields"] = ",".join(v.field for v in exc.violations)
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=v.field, description=v.describe(wire_name)
            )
            for v in exc.violations
        ]
        details.append(error_details_pb2.BadRequest(field_violations=violations))
    elif isinstance(exc, AlreadyExists) and exc.resource_type:
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=RESOURCE_TYPE_PREFIX + exc.resource_type,
                resource_name=exc.resource_name,
                description=exc.message,
            )
        )
    elif isinstance(exc, ResourceExhausted) and exc.retry_after_ms is not None:
        metadata["retry_after_ms"] = str(exc.retry_after_ms)
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(exc.retry_after_ms)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    elif isinstance(exc, FailedPrecondition | Aborted):
        violation = error_details_pb2.PreconditionFailure.Violation(
            type=exc.reason, description=exc.message
        )
        details.append(error_details_pb2.PreconditionFailure(violations=[violation]))
    code: int = getattr(code_pb2, exc.code.value)
    return _status(code, client_message(exc), exc.reason, metadata, details)


def plain_status_details(
    code_name: str, message: str, reason: str, metadata: dict[str, str] | None = None
) -> bytes:
    """The serialized google.rpc.Status of an error that is not a VaultError (INTERNAL,
    an undecodable or oversized request to health or reflection)."""
    code: int = getattr(code_pb2, code_name)
    return _status(code, message, reason, metadata or {}, [])


def _status(
    code: int, message: str, reason: str, metadata: dict[str, str], details: list[object]
) -> bytes:
    status = status_pb2.Status(
        code=code,
        message=message,
        details=[_packed(error_info(reason, metadata)), *(_packed(d) for d in details)],
    )
    serialized: bytes = status.SerializeToString()
    return serialized
