"""One measurement from the driving side: start a client process for one operation
against one system, read the server's and the machine's CPU over the client's window,
and keep the result as a :class:`Sample` in the :class:`Row` of its pair."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _harness as h

from .pairs import Pair


@dataclass
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: Counter[str]
    server_cores: float
    db_cores: float
    """Of server_cores, PostgreSQL's (0 for OpenBao, whose storage is in its process)."""
    client_cores: float
    other_cores: float


@dataclass
class Row:
    pair: Pair
    vault: list[Sample] = field(default_factory=list)
    bao: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)


async def measure(
    script: str,
    system: str,
    config: dict[str, Any],
    server_cpu: Callable[[], float],
    seconds: float,
    db_cpu: Callable[[], float] = lambda: 0.0,
) -> Sample:
    """Run ``<script> --client`` (the benchmark itself, whose ``--client`` side is
    :func:`.client.client`) with ``config`` for ``system`` ("vault", "bao" or "floor")."""
    async with h.ClientProcess.running(script, {**config, "system": system}) as client:
        await client.expect("window_start")
        cpu0, db0, busy0 = server_cpu(), db_cpu(), h.machine_busy_seconds()
        await client.expect("window_end")
        cpu1, db1, busy1 = server_cpu(), db_cpu(), h.machine_busy_seconds()
        result = await client.expect("result")
    return Sample(
        rate=result["items"] / seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=Counter(result["errors"]),
        server_cores=(cpu1 - cpu0) / seconds,
        db_cores=(db1 - db0) / seconds,
        client_cores=result["cpu_s"] / seconds,
        other_cores=max(0.0, (busy1 - busy0 - (cpu1 - cpu0) - result["cpu_s"]) / seconds),
    )
