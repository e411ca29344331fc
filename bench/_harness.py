"""Shared plumbing for the benchmarks in this directory (not a benchmark itself).

- :func:`embedded_postgres`: a throwaway embedded PostgreSQL in a temporary
  directory, stopped and deleted on exit, Ctrl-C or SIGTERM included.
- :func:`running_vault`: roles, migrations, pool, services and a ``VaultServer``
  on ``127.0.0.1:<random port>`` with a fresh admin key -- the same wiring as
  ``tests/conftest.py`` and ``singura_vault.server.serve``.
- A line-delimited JSON protocol for load-generating *client processes*
  (``<script> --client``), so the client's CPU and memory are not the server's.
- Memory and CPU meters read from ``/proc`` (Linux only).

The benchmarks are run as ``python bench/<name>.py``, which puts this directory
first on ``sys.path``; that is how they import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from singura_vault import keys
from singura_vault.api.interceptors import AccessLog
from singura_vault.config import PoolSettings
from singura_vault.db.embedded import EmbeddedCluster, EmbeddedPostgres
from singura_vault.db.pool import Database
from singura_vault.db.setup import (
    DATABASE_NAME,
    OWNER_ROLE,
    SERVICE_ROLE,
    apply_migrations,
    bootstrap_embedded_roles,
)
from singura_vault.logs import configure_logging
from singura_vault.repositories.api_keys import ApiKeyRepository
from singura_vault.repositories.credentials import CredentialRepository
from singura_vault.server import VaultServer
from singura_vault.service.access import AccessService, RateLimit
from singura_vault.service.credentials import CredentialService

T = TypeVar("T")
MIB = 1024 * 1024


# -- event loop -------------------------------------------------------------------------


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


# -- PostgreSQL and the vault -----------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A running throwaway embedded PostgreSQL."""

    server: EmbeddedPostgres
    cluster: EmbeddedCluster
    base_dir: Path

    @property
    def superuser_dsn(self) -> str:
        return self.cluster.dsn(self.cluster.superuser, "postgres")

    @property
    def owner_dsn(self) -> str:
        return self.cluster.dsn(OWNER_ROLE, DATABASE_NAME)

    @property
    def service_dsn(self) -> str:
        return self.cluster.dsn(SERVICE_ROLE, DATABASE_NAME)

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.base_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def embedded_postgres() -> Iterator[Postgres]:
    """Start PostgreSQL in a new temporary directory; always stop it and delete the
    directory, also on Ctrl-C and SIGTERM. Outside the event loop SIGTERM becomes
    KeyboardInterrupt here (inside it, :func:`run` handles it); while cleaning up,
    both signals are ignored so that a second Ctrl-C cannot leave a server behind."""
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    base_dir = Path(tempfile.mkdtemp(prefix="sv-bench-"))
    server = EmbeddedPostgres(base_dir)
    try:
        cluster = server.start()
        yield Postgres(server, cluster, base_dir)
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


def quiet_server_logs(path: str) -> None:
    """Render the vault's log lines as in production (level info), but into ``path``
    (default /dev/null) rather than the terminal."""
    stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    configure_logging("info", "json", stream=stream)


def new_key_text() -> str:
    """A well-formed API key (svk_<16>_<43>) that no vault knows yet (as tests/helpers.py)."""
    alphabet = string.ascii_lowercase + string.digits
    key_id = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"svk_{key_id}_{secrets.token_urlsafe(32)}"


def auth(key: str) -> tuple[tuple[str, str], ...]:
    """Per-call metadata that authenticates with ``key`` (cheaper than an interceptor)."""
    return (("authorization", f"Bearer {key}"),)


@dataclass(frozen=True)
class Vault:
    address: str
    admin_key: str
    db: Database
    server: VaultServer


@asynccontextmanager
async def running_vault(
    pg: Postgres, pool: PoolSettings, *, access_log: AccessLog = "errors"
) -> AsyncIterator[Vault]:
    """Migrate, connect, and serve plaintext gRPC on 127.0.0.1:<random port>.

    Rate limiting is off (``RateLimit(0, 1)``), as SINGURA_RATE_LIMIT_RPS=0 would do.
    """
    await bootstrap_embedded_roles(pg.superuser_dsn)
    await apply_migrations(pg.owner_dsn)
    db = await Database.connect(pg.service_dsn, pool)
    try:
        await db.ensure_safe_service_role()
        key_manager = keys.KeyManager(
            keys.LocalKeyring.from_encryption_key(keys.generate_encryption_key())
        )
        credentials = CredentialService(CredentialRepository(db), key_manager)
        access = AccessService(ApiKeyRepository(db), os.urandom(32), RateLimit(0, 1))
        admin_key = new_key_text()
        await access.bootstrap_admin_key(Path("/nonexistent"), admin_key)
        server = VaultServer(db, credentials, access, access_log=access_log)
        port = await server.start("127.0.0.1:0")
        try:
            yield Vault(f"127.0.0.1:{port}", admin_key, db, server)
        finally:
            await server.stop(0)
    finally:
        await db.close()


async def postgres_version(pg: Postgres) -> str:
    conn = await asyncpg.connect(pg.superuser_dsn)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def machine_summary(pg_version: str) -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    import grpc

    return (
        f"machine: {os.cpu_count()} cores ({usable} usable), {platform.machine()}, "
        f"Linux {platform.release()}\n"
        f"software: Python {platform.python_version()}, PostgreSQL {pg_version} (embedded, "
        f"fsync on), grpcio {grpc.__version__}, asyncpg {asyncpg.__version__}, "
        f"event loop {loop_name()}"
    )


# -- measuring --------------------------------------------------------------------------


def status_kib(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    return status_kib("VmRSS") * 1024


class PeakRss:
    """Peak RSS growth of this process over a stretch of time.

    The kernel's high-water mark (VmHWM, = getrusage ru_maxrss) only ever grows;
    writing 5 to /proc/self/clear_refs resets it to the current RSS (Linux >= 4.0),
    so the peak is that of the measured stretch alone. Where that is refused, a
    thread samples VmRSS every 2 ms instead.
    """

    def __init__(self) -> None:
        self.baseline = 0
        self.peak = 0
        self.method = ""
        self._sampler: asyncio.Future[None] | None = None
        self._sampling = False

    def start(self) -> None:
        self.baseline = rss_bytes()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
                clear.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampled VmRSS"
            self.peak = self.baseline
            self._sampling = True
            self._sampler = asyncio.get_running_loop().run_in_executor(None, self._sample)

    def _sample(self) -> None:
        while self._sampling:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    async def stop(self) -> int:
        """Stop measuring; returns peak minus baseline, in bytes."""
        if self._sampler is not None:
            self._sampling = False
            await self._sampler
        else:
            self.peak = status_kib("VmHWM") * 1024
        return max(0, self.peak - self.baseline)


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_tree_cpu_seconds(root_pid: int | None) -> float:
    """User + system CPU time of ``root_pid`` and its live children (the postmaster
    and its backends); 0 when unknown."""
    if root_pid is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root_pid or ppid == root_pid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A small Markdown table (pastes into bench/README.md as is)."""
    cells = [[str(h) for h in headers], *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *[line(r) for r in cells[1:]]])


def cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- client processes -------------------------------------------------------------------


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


async def chain_pending_audit(conn: asyncpg.Connection) -> None:
    """Chain audit events loaded straight into the table (they wait in audit_pending
    for the sequencer, migration 012) in large batches, before measuring reads."""
    while await conn.fetchval("SELECT singura.audit_sequence(50000)"):
        pass
