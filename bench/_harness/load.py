"""The client side of one measurement: keep a number of calls in flight through a
warm-up and a measured window, tell the driving process when the window starts and
ends, and keep what completed inside it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from .clients import emit
from .meters import cpu_seconds

Call = Callable[[int, int], Awaitable[tuple[int, str]]]
"""(worker, sequence number) -> (items done, status code name)."""


@dataclass(frozen=True)
class Window:
    """What completed inside the measured window."""

    latencies: list[float]
    """Seconds per call that completed OK, sorted."""
    items: int
    errors: Counter[str]
    cpu_s: float
    """This process's CPU seconds over the window."""


async def drive(
    call: Call,
    concurrency: int,
    warmup: float,
    seconds: float,
    transport_errors: tuple[type[Exception], ...] = (),
) -> Window:
    """Keep ``concurrency`` calls in flight for ``warmup`` + ``seconds`` seconds, and
    emit the events ``window_start`` and ``window_end``. A gRPC error counts under its
    status code, one of ``transport_errors`` under its class name; any other exception
    ends the run."""
    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + seconds
    latencies: list[float] = []
    items = 0
    errors: Counter[str] = Counter()

    async def worker(index: int) -> None:
        nonlocal items
        n = 0
        while True:
            begun = time.perf_counter()
            if begun >= window_end:
                return
            try:
                done_items, code = await call(index, n)
            except grpc.aio.AioRpcError as exc:
                done_items, code = 0, exc.code().name
            except transport_errors as exc:
                done_items, code = 0, type(exc).__name__
            n += 1
            done = time.perf_counter()
            if window_start <= done <= window_end:
                if code == "OK":
                    latencies.append(done - begun)
                else:
                    errors[code] += 1
                items += done_items

    async def markers() -> tuple[float, float]:
        # The driving process reads its server's CPU between these two events.
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu0 = cpu_seconds()
        emit({"event": "window_start"})
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        emit({"event": "window_end"})
        return cpu0, cpu_seconds()

    marker_task = asyncio.create_task(markers())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    cpu0, cpu1 = await marker_task
    latencies.sort()
    return Window(latencies, items, errors, cpu1 - cpu0)
