"""What the vault reads of one call's metadata, the same way in the interceptor and in the
decoding guard: the metadata as a dict, the request id (the caller's ``x-request-id`` if
usable, else a fresh one), the trailer keys and the ``grpc_type`` metric labels."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

REQUEST_ID_KEY = "x-request-id"
# Returned by a write when replicas serve reads; a read that sends it back sees the
# write (docs/high-availability.md#reads-from-replicas).
CONSISTENCY_KEY = "x-consistency-token"
RETRY_AFTER_KEY = "retry-after-ms"
# grpc_type label values, as grpc-ecosystem's interceptors name them.
UNARY = "unary"
SERVER_STREAM = "server_stream"
_MAX_REQUEST_ID = 128
Context = grpc.aio.ServicerContext[Any, Any]


def metadata_of(context: Context) -> dict[str, str]:
    """The call's text metadata (binary values left out)."""
    return {
        key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
    }


def request_id_of(metadata: dict[str, str]) -> str:
    """The caller's x-request-id if it sent a usable one, else a fresh id."""
    candidate = metadata.get(REQUEST_ID_KEY, "")
    return candidate if 0 < len(candidate) <= _MAX_REQUEST_ID else str(uuid.uuid4())
