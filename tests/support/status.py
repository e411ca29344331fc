"""A call that must fail with a given gRPC status, its message checked for fragments."""

from __future__ import annotations

from typing import Any

import grpc
import pytest


async def expect_status(call: Any, code: grpc.StatusCode, *fragments: str) -> str:
    """Await an RPC that must fail with ``code``; return its details for more checks."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details
