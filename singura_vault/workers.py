"""``singura-vault serve --workers N``: N server processes on one port, one parent.

One Python process serves at most one core. The parent prepares everything that must
happen once -- keys checked, the embedded PostgreSQL started and supervised,
migrations, the bootstrap admin key -- then starts N worker processes, each a full
``serve`` of its own that binds the same port with SO_REUSEPORT, so the kernel spreads
connections over them. Everything that must hold across processes already lives in
PostgreSQL (rate-limit buckets, key revocations, rewrap jobs, audit chains,
checkpoint rounds), so the workers need not talk to each other.

The parent restarts a worker that dies (logged ``worker_died`` /
``worker_restarted``, 1 s doubling to 30 s between attempts), forwards SIGTERM or
SIGINT to every worker and waits for them to drain, and only then stops the embedded
PostgreSQL. Health is answered by every worker, for the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from singura_vault.config import Settings, listen_host
from singura_vault.db.supervisor import EmbeddedSupervisor
from singura_vault.errors import ConfigError
from singura_vault.logs import get_logger

log = get_logger(__name__)

# Set by the parent in each worker's environment (not user settings).
WORKER_INDEX_ENV = "SINGURA_WORKER_INDEX"
WORKER_DSN_ENV = "SINGURA_WORKER_DSN"
_MAX_BACKOFF_S = 30.0


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    backoff_s: float = 1.0
    restarts: int = 0
    waiter: asyncio.Task[int] | None = field(default=None, repr=False)


def reserve_port(listen: str) -> socket.socket:
    """Bind (without listening) the serving address with SO_REUSEPORT: fails, with a
    message, if any other process uses the port, and keeps it ours for the workers."""
    host = listen_host(listen)
    port = int(listen.rsplit(":", 1)[1])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise ConfigError(
            f"could not listen on SINGURA_LISTEN={listen}; is another process using the port?"
        ) from None
    return sock


async def run_workers(
    settings: Settings, service_dsn: str, supervisor: EmbeddedSupervisor | None
) -> None:
    """Start ``settings.workers`` workers and keep them running until SIGTERM/SIGINT."""
    reservation = reserve_port(settings.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervising = (
        asyncio.create_task(supervisor.run_forever(), name="embedded-postgres-supervisor")
        if supervisor is not None
        else None
    )
    workers = [_Worker(i) for i in range(settings.workers)]
    try:
        for worker in workers:
            await _start(worker, service_dsn)
        log.info("workers_started", workers=len(workers), listen=settings.listen)
        while not stop.is_set():
            waiters: dict[asyncio.Future[Any], _Worker] = {
                w.waiter: w for w in workers if w.waiter is not None
            }
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait([stopping, *waiters], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in done:
                dead = waiters.get(task)
                if dead is not None and not stop.is_set():
                    await _restart(dead, task.result(), service_dsn, stop)
    finally:
        if supervising is not None:
            supervising.cancel()
        await _stop_all(workers, settings.shutdown_grace_s)
        reservation.close()


async def _start(worker: _Worker, service_dsn: str) -> None:
    env = {**os.environ, WORKER_INDEX_ENV: str(worker.index), WORKER_DSN_ENV: service_dsn}
    env.pop("SINGURA_WORKERS", None)
    worker.process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "singura_vault", "serve", env=env
    )
    worker.started_at = time.monotonic()
    worker.waiter = asyncio.create_task(worker.process.wait(), name=f"worker-{worker.index}")


async def _restart(worker: _Worker, code: int, service_dsn: str, stop: asyncio.Event) -> None:
    pid = worker.process.pid if worker.process else None
    log.error("worker_died", worker=worker.index, pid=pid, exit_code=code)
    # A worker that ran a while gets a quick restart; one that keeps dying, a slower one.
    if time.monotonic() - worker.started_at > 60:
        worker.backoff_s = 1.0
    # asyncio.timeout rather than wait_for, which on 3.11 can drop a cancellation.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(worker.backoff_s):
            await stop.wait()
    if stop.is_set():
        worker.waiter = None
        return
    worker.backoff_s = min(worker.backoff_s * 2, _MAX_BACKOFF_S)
    worker.restarts += 1
    await _start(worker, service_dsn)
    log.warning(
        "worker_restarted",
        worker=worker.index,
        pid=worker.process.pid if worker.process else None,
        restarts=worker.restarts,
    )


async def _stop_all(workers: list[_Worker], grace_s: float) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.returncode is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            async with asyncio.timeout(grace_s + 30):
                await process.wait()
        except TimeoutError:
            log.error("worker_killed", pid=process.pid, reason="did not stop in time")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
