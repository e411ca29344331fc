"""The event-loop runner: runs a benchmark's coroutine on uvloop when installed, and
turns SIGTERM, like Ctrl-C, into cancellation and then KeyboardInterrupt."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401 - only asks whether it is installed
    except ImportError:
        return "asyncio"
    return "uvloop"


def run(coro: Awaitable[T]) -> T:
    """Run on uvloop when it is importable (as ``singura-vault serve`` does).

    Ctrl-C (SIGINT, handled by asyncio's runner) and SIGTERM (handled here) both
    cancel the main task, so every ``finally`` and ``async with`` exit runs -- gRPC
    server stopped, pool closed, client processes killed -- and then raise
    KeyboardInterrupt. (Raising from a plain signal handler instead, at an arbitrary
    point inside grpc's and uvloop's callbacks, crashed the interpreter.)
    """
    terminated = False

    async def main() -> T:
        nonlocal terminated
        task = asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
        return await coro

    previous = signal.getsignal(signal.SIGTERM)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main())
        return uvloop.run(main())
    except asyncio.CancelledError:
        if terminated:
            raise KeyboardInterrupt from None
        raise
    finally:
        # The loop leaves SIGTERM at SIG_DFL when it closes; put back what was there.
        signal.signal(signal.SIGTERM, previous)
