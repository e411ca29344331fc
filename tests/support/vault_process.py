"""`singura-vault serve` as another process on the same database (another vault
host), started, read until it serves, and stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.support.vault import Vault


@asynccontextmanager
async def serve_process(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str, **env_overrides: str
) -> AsyncIterator[str]:
    """`singura-vault serve` in another process on the same database; yields its address."""
    async with serve_process_handle(vault, service_dsn, auth_secret, root_key, **env_overrides) as (
        address,
        _,
    ):
        yield address


@asynccontextmanager
async def serve_process_handle(
    vault: Vault | str,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
    *,
    host: str = "127.0.0.1",
    log: list[str] | None = None,
    **env_overrides: str,
) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    """Like serve_process, and yields the process too (for tests that kill it).
    ``vault`` is the vault whose admin key the process bootstraps, or that key;
    ``host`` a loopback address of its own (127.0.0.2, ...: another "host"); ``log``,
    when given, receives the process's stderr lines once it has stopped."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    admin_key = vault if isinstance(vault, str) else vault.admin_key
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(
        DATABASE_URL=service_dsn,
        ENCRYPTION_KEY=root_key,
        SINGURA_AUTH_SECRET=base64.b64encode(auth_secret).decode(),
        SINGURA_BOOTSTRAP_ADMIN_KEY=admin_key,
        SINGURA_LISTEN=f"{host}:{port}",
        SINGURA_RATE_LIMIT_RPS="0",
        # Long enough that only a change notification can explain a key dropping out
        # of the cache within a test.
        SINGURA_AUTH_CACHE_TTL="300",
        # Tests that want the background refresh turn it on; others count provider calls.
        SINGURA_REFRESH_WORKER="off",
    )
    env.update(env_overrides)
    # Popen only starts the process; its output is read in a thread below.
    process = subprocess.Popen(  # noqa: ASYNC220 - Popen only starts it; output is read in a thread
        [sys.executable, "-m", "singura_vault", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = await asyncio.to_thread(_read_until_serving, process)
    assert lines, "the second vault exited before serving"
    # Keep reading: a full pipe would stall the process. The lines are kept so that a
    # process that does not stop can say what it was doing.
    drain = threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True)
    drain.start()
    try:
        yield f"{host}:{port}", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()
            tail = "".join(lines[-40:])
            raise AssertionError(
                f"the second vault ignored SIGTERM for 60 s; its log:\n{tail}"
            ) from None
        if log is not None:
            await asyncio.to_thread(drain.join, 10)  # the pipe ends when the process does
            log.extend(lines)


def _read_until_serving(process: subprocess.Popen[str]) -> list[str]:
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if '"vault_serving"' in line:
            return lines
    return []
