"""Open-loop load: calls start on a fixed schedule, whatever the server answers.

A closed loop (``--concurrency`` calls in flight, the next starting when one ends)
measures latency at saturation, which is queueing, not speed. Here call ``k`` is due
at ``start + k / rate``: a timer starts every call that is due, without waiting for
earlier ones (in flight is unbounded), and a call's latency runs from when it was
*due*, not from when it started, so a client or server that falls behind shows as
latency rather than as fewer calls (no coordinated omission). A call that starts more
than :data:`LATE_S` (2 ms) after it was due is a late start: many of them say the client
could not keep the schedule, and the figures are the client's.

The calls counted are those due inside the measured window, each awaited to its end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import _harness as h
import grpc

TICK_S = 0.001
"""The scheduler never sleeps less: uvloop's timers count whole milliseconds (a
shorter sleep returns at once, and waiting that way would spin on the client's CPU);
the calls that fall due meanwhile start together when it wakes."""
LATE_S = 0.002
"""A start this much after the call was due counts as late: beyond the tick, and the
timer firing a little after it, the client did not keep the schedule."""


def due_until(rate: float, start: float, end: float, next_k: int, now: float) -> int:
    """The first call index not yet due at ``now``: calls ``next_k`` up to (not
    including) the result are due; none at or after ``end`` is ever due."""
    last_due = math.floor((min(now, math.nextafter(end, -math.inf)) - start) * rate)
    return max(next_k, last_due + 1)


@dataclass(frozen=True)
class Record:
    """One call: when it was due, when it started and ended (perf_counter seconds),
    its status and the items it did."""

    due: float
    started: float
    ended: float
    code: str
    items: int


@dataclass(frozen=True)
class Summary:
    due: int
    """Calls due in the window."""
    ok: int
    items: int
    errors: Counter[str]
    late: int
    p50_s: float
    p99_s: float


def summarize(records: Iterable[Record], window_start: float, window_end: float) -> Summary:
    """The calls due in ``[window_start, window_end)``: latency from due to end (OK
    calls), errors by status, late starts."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    due = items = late = 0
    for record in records:
        if not window_start <= record.due < window_end:
            continue
        due += 1
        items += record.items
        late += record.started - record.due > LATE_S
        if record.code == "OK":
            latencies.append(record.ended - record.due)
        else:
            errors[record.code] += 1
    latencies.sort()
    return Summary(
        due,
        len(latencies),
        items,
        errors,
        late,
        h.percentile(latencies, 0.5),
        h.percentile(latencies, 0.99),
    )


async def drive_open(
    call: h.Call,
    rate: float,
    warmup: float,
    seconds: float,
    lanes: int,
    transport_errors: tuple[type[Exception], ...] = (),
) -> dict[str, Any]:
    """Start calls at ``rate`` per second for ``warmup`` + ``seconds``; emit the
    events ``window_start`` and ``window_end`` as :func:`_harness.drive` does, and
    return the window's result. Call ``k`` runs as ``call(k % lanes, k // lanes)``, so
    the call functions pick their slots as they do for ``lanes`` closed-loop workers."""
    start = time.perf_counter()
    window_start = start + warmup
    end = window_start + seconds
    records: list[Record] = []
    running: set[asyncio.Task[None]] = set()

    async def one(k: int, due: float) -> None:
        started = time.perf_counter()
        try:
            items, code = await call(k % lanes, k // lanes)
        except grpc.aio.AioRpcError as exc:
            items, code = 0, exc.code().name
        except transport_errors as exc:
            items, code = 0, type(exc).__name__
        records.append(Record(due, started, time.perf_counter(), code, items))

    async def markers() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu0 = h.cpu_seconds()
        h.emit({"event": "window_start"})
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        h.emit({"event": "window_end"})
        return cpu0, h.cpu_seconds()

    marker_task = asyncio.create_task(markers())
    next_k = 0
    most_in_flight = 0
    while True:
        now = time.perf_counter()
        upto = due_until(rate, start, end, next_k, now)
        for k in range(next_k, upto):
            task = asyncio.create_task(one(k, start + k / rate))
            running.add(task)
            task.add_done_callback(running.discard)
        next_k = upto
        most_in_flight = max(most_in_flight, len(running))
        following = start + next_k / rate
        if following >= end:
            break
        await asyncio.sleep(max(TICK_S, following - time.perf_counter()))
    await asyncio.gather(*running)
    cpu0, cpu1 = await marker_task
    summary = summarize(records, window_start, end)
    return {
        "event": "result",
        "ok": summary.ok,
        "items": summary.items,
        "errors": dict(summary.errors),
        "p50_ms": summary.p50_s * 1000,
        "p99_ms": summary.p99_s * 1000,
        "cpu_s": cpu1 - cpu0,
        "due": summary.due,
        "late": summary.late,
        "most_in_flight": most_in_flight,
    }
