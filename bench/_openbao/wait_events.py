"""What the vault's PostgreSQL was doing during a measured window: ``pg_stat_activity``
sampled on a fixed interval, each backend that was working counted under what it was
doing -- on CPU (active, no wait event), waiting on an event (``IO:WalSync``,
``LWLock:WALWrite``, ``Lock:transactionid``...), or holding a transaction open while
it waits for the vault (``Client:ClientRead`` in a transaction).

Idle client backends (the pool's spare connections) and background processes in their
idle loops (wait type ``Activity``) are not counted: the question is where the busy
ones spend their time. The mean number of busy backends per sample says how far the
database was from saturating its core -- below 1 on a pinned core, the calls were
waiting for the vault's Python, not for PostgreSQL.

Pinned to one core (``--pin``), the sampler's backend shares the core with the others,
so when it looks a computing backend is off the CPU and shows as ``CPU`` only if it
was preempted, while one blocked in a flush shows as it is: waits are over-weighted.
The CPU each side used is in the CPU table (``db cores``).

The sampler is one more connection to the server under test: one query of a few
hundred microseconds per interval (25 ms: about 1% of the pinned core), from this
driver's process on the clients' CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from singura_vault.db.embedded import SUPERUSER, EmbeddedCluster

INTERVAL_S = 0.025

# The server's own view; this connection is left out.
_QUERY = """
SELECT backend_type, state, wait_event_type, wait_event
FROM pg_stat_activity
WHERE pid <> pg_backend_pid()
"""


@dataclass
class Waits:
    """Busy backends counted per sample, by what they were doing."""

    samples: int = 0
    busy: Counter[str] = field(default_factory=Counter)

    def add(self, other: Waits) -> None:
        self.samples += other.samples
        self.busy.update(other.busy)

    def mean_busy(self) -> float:
        return sum(self.busy.values()) / self.samples if self.samples else 0.0


def classify(
    backend_type: str | None, state: str | None, wait_type: str | None, wait: str | None
) -> str | None:
    """What one ``pg_stat_activity`` row was doing, or None when it was idle."""
    if backend_type == "client backend":
        if state in (None, "idle"):
            return None
        if state.startswith("idle in transaction"):
            return "Client:ClientRead (in a transaction, waiting for the vault)"
        return "CPU" if wait_type is None else f"{wait_type}:{wait}"
    if wait_type == "Activity" or backend_type is None:
        return None  # a background process in its idle loop
    where = "CPU" if wait_type is None else f"{wait_type}:{wait}"
    return f"{where} ({backend_type})"


def count(rows: list[tuple[str | None, str | None, str | None, str | None]]) -> Counter[str]:
    """One sample: busy backends by what they were doing."""
    found: Counter[str] = Counter()
    for row in rows:
        what = classify(*row)
        if what is not None:
            found[what] += 1
    return found


class WaitSampler:
    """Samples one server's ``pg_stat_activity`` between :meth:`start` and :meth:`stop`."""

    def __init__(self, dsn: str, interval_s: float = INTERVAL_S) -> None:
        self._dsn = dsn
        self._interval_s = interval_s
        self._connection: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._waits = Waits()

    async def open(self) -> None:
        self._connection = await asyncpg.connect(self._dsn)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    def start(self) -> None:
        self._waits = Waits()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> Waits:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self._waits

    async def _sample(self) -> None:
        if self._connection is None:
            raise RuntimeError("WaitSampler.start before open")
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            rows = await self._connection.fetch(_QUERY)
            self._waits.busy.update(count([tuple(r) for r in rows]))
            self._waits.samples += 1
            due += self._interval_s
            await asyncio.sleep(max(0.0, due - loop.time()))


def embedded_dsn(postmaster_pid_text: str) -> str:
    """The superuser's DSN of an embedded cluster, from its ``postmaster.pid`` (line 4:
    the port, line 5: the socket directory)."""
    lines = postmaster_pid_text.split("\n")
    if len(lines) < 5 or not lines[3].strip().isdigit() or not lines[4].strip():
        raise ValueError("postmaster.pid without a port and a socket directory")
    cluster = EmbeddedCluster(Path(lines[4].strip()), int(lines[3]), SUPERUSER)
    return cluster.dsn(SUPERUSER, "postgres")
