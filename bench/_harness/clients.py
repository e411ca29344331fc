"""The line-delimited JSON protocol between a benchmark and its load-generating client
processes (``<script> --client``), which keep the client's CPU and memory apart from
the server's: :class:`ClientProcess` is the driving side, the functions the client's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from .loop import run


class ClientProcess:
    """``<script> --client``: gets one JSON config line on stdin, answers with JSON
    lines on stdout (events and a final result); stderr is passed through."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, script: str, config: dict[str, Any]) -> ClientProcess:
        # Secrets (API keys) travel on stdin, not on the command line.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            script,
            "--client",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        client = cls(process)
        await client.send(config)
        return client

    @property
    def pid(self) -> int:
        return self._process.pid

    async def send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message).encode() + b"\n")
        await self._process.stdin.drain()

    async def receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            code = await self._process.wait()
            raise RuntimeError(f"client process exited (code {code}) without an answer")
        message: dict[str, Any] = json.loads(line)
        return message

    async def expect(self, event: str) -> dict[str, Any]:
        message = await self.receive()
        if message.get("event") != event:
            raise RuntimeError(f"client process sent {message!r}, expected event {event!r}")
        return message

    async def close(self) -> None:
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()

    @staticmethod
    @asynccontextmanager
    async def running(script: str, config: dict[str, Any]) -> AsyncIterator[ClientProcess]:
        client = await ClientProcess.start(script, config)
        try:
            yield client
        finally:
            await client.close()


def emit(message: dict[str, Any]) -> None:
    """Client side: one JSON line to the driving process."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def receive_line() -> dict[str, Any]:
    """Client side: the next JSON line from the driving process."""
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit(1)
    message: dict[str, Any] = json.loads(line)
    return message


def client_main(body: Callable[[dict[str, Any]], Awaitable[None]]) -> int:
    """Entry point of ``<script> --client``: read the config line, run ``body``."""
    config = json.loads(sys.stdin.readline())
    try:
        run(body(config))
    except KeyboardInterrupt:
        return 130
    return 0
