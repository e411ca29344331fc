"""One measurement from the driving side: start a client process for one operation
against one system, read the server's and the machine's CPU (and, for the vault, its
batch-size histogram) over the client's window, and keep the result as a
:class:`Sample` in the :class:`Row` of its pair."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _harness as h

from . import batch_metrics, pinning
from .pairs import Pair
from .wait_events import Waits, WaitSampler


@dataclass
class Sample:
    rate: float
    """Items per second (credentials for the batch row, else calls) that completed OK."""
    calls_rate: float
    """Calls per second that completed OK (for the batch row, batch calls)."""
    p50_ms: float
    p99_ms: float
    errors: Counter[str]
    server_cores: float
    db_cores: float
    """Of server_cores, PostgreSQL's (0 for OpenBao, whose storage is in its process)."""
    client_cores: float
    other_cores: float
    batches: batch_metrics.Histograms = field(default_factory=dict)
    """The vault's coalesced batches in the window, by operation (empty: none, or not
    the vault)."""
    late: int = 0
    """Open loop: calls that started more than 2 ms after they were due."""
    due: int = 0
    """Open loop: calls due in the window."""
    waits: Waits = field(default_factory=Waits)
    """The vault's PostgreSQL in the window: busy backends by wait event (empty: not
    sampled)."""


@dataclass
class Row:
    pair: Pair
    vault: list[Sample] = field(default_factory=list)
    bao: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)
    open_loop: dict[float, list[Sample]] = field(default_factory=dict)
    """The vault open-loop, by fraction of its own closed-loop peak."""


@dataclass(frozen=True)
class Probes:
    """What the driver reads besides CPU: the vault's batch histograms, its
    PostgreSQL's wait events, and whose CPU mask each client process must have
    (``--pin``)."""

    scrape: Callable[[], batch_metrics.Histograms] | None = None
    client_cpus: frozenset[int] | None = None
    waits: WaitSampler | None = None


async def measure(
    script: str,
    system: str,
    config: dict[str, Any],
    server_cpu: Callable[[], float],
    seconds: float,
    db_cpu: Callable[[], float] = lambda: 0.0,
    probes: Probes = Probes(),
) -> Sample:
    """Run ``<script> --client`` (the benchmark itself, whose ``--client`` side is
    :func:`.client.client`) with ``config`` for ``system`` ("vault", "bao", "floor" or
    "echo")."""
    scrape = probes.scrape or dict
    async with h.ClientProcess.running(script, {**config, "system": system}) as client:
        await client.expect("window_start")
        cpu0, db0, busy0 = server_cpu(), db_cpu(), h.machine_busy_seconds()
        # After the CPU: a scrape is a loopback HTTP call of a millisecond or two.
        before = scrape()
        if probes.waits is not None:
            probes.waits.start()
        if probes.client_cpus is not None:
            pinning.check(f"{system} client", pinning.affinities([client.pid]), probes.client_cpus)
        await client.expect("window_end")
        cpu1, db1, busy1 = server_cpu(), db_cpu(), h.machine_busy_seconds()
        after = scrape()
        waits = await probes.waits.stop() if probes.waits is not None else Waits()
        result = await client.expect("result")
    return Sample(
        rate=result["items"] / seconds,
        calls_rate=result["ok"] / seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=Counter(result["errors"]),
        server_cores=(cpu1 - cpu0) / seconds,
        db_cores=(db1 - db0) / seconds,
        client_cores=result["cpu_s"] / seconds,
        other_cores=max(0.0, (busy1 - busy0 - (cpu1 - cpu0) - result["cpu_s"]) / seconds),
        batches=batch_metrics.window(before, after),
        late=result.get("late", 0),
        due=result.get("due", 0),
        waits=waits,
    )
