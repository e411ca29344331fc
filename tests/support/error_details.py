"""The google.rpc.Status details of a refused call (ErrorInfo, BadRequest, ...), and a
call that must be refused with a code and an ErrorInfo reason."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

DETAIL_TYPES = {
    "ErrorInfo": error_details_pb2.ErrorInfo,
    "BadRequest": error_details_pb2.BadRequest,
    "RetryInfo": error_details_pb2.RetryInfo,
    "PreconditionFailure": error_details_pb2.PreconditionFailure,
    "ResourceInfo": error_details_pb2.ResourceInfo,
}


async def failure(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("the call succeeded")


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The error's google.rpc.Status details by type name; checks the Status agrees
    with the call's own code and message."""
    trailers = dict(error.trailing_metadata() or ())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    unpacked: dict[str, Any] = {}
    for packed in status.details:
        name = packed.TypeName().rsplit(".", 1)[-1]
        message = DETAIL_TYPES[name]()
        assert packed.Unpack(message)
        unpacked[name] = message
    assert unpacked["ErrorInfo"].domain == "singura.vault"
    return unpacked


async def refused(call: Any, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    """Await a call that must fail with ``code`` and ErrorInfo ``reason``."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, error.details()
    assert details(error)["ErrorInfo"].reason == reason, error.details()
    return error
