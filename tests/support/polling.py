"""Waiting for a change another task or process makes, by polling a condition or a
call (never a timed sleep that is supposed to be long enough)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc


async def first_refusal(call: Any, *, attempts: int = 3000) -> grpc.StatusCode:
    """Repeat ``call()`` until it fails and return its status code: polling for a
    change another process makes (10 ms apart, ~30 s at most), not a timed check."""
    import asyncio

    for _ in range(attempts):
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        await asyncio.sleep(0.01)
    raise AssertionError(f"the call still succeeds after {attempts} attempts")


async def until(condition: object, attempts: int = 3000) -> None:
    """Poll ``condition()`` (10 ms apart) until it is true."""
    for _ in range(attempts):
        if condition():  # type: ignore[operator]  # any zero-argument callable
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")
