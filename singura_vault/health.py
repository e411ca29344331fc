"""Health: the standard grpc.health.v1 service, driven by PostgreSQL reachability.

A monitor pings the database every SINGURA_HEALTH_INTERVAL seconds and sets the
status of the whole server ("") and of each vault service to SERVING or
NOT_SERVING, so orchestrators stop routing to a vault that cannot reach its
database, and route again once it can.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from grpc_health.v1 import _async as health_aio  # published as grpc_health.v1.health.aio
from grpc_health.v1 import health_pb2

from singura_vault.logs import get_logger

log = get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health_aio.HealthServicer):  # type: ignore[misc]  # untyped base
    """grpcio-health-checking's async servicer, with ``List`` (which its async
    flavour leaves UNIMPLEMENTED although reflection advertises it)."""

    async def List(  # noqa: N802 - the gRPC method's name
        self, request: health_pb2.HealthListRequest, context: object
    ) -> health_pb2.HealthListResponse:
        # A snapshot of the statuses this servicer publishes (the base class
        # keeps them in _server_status; set() is the only writer).
        return health_pb2.HealthListResponse(
            statuses={
                service: health_pb2.HealthCheckResponse(status=status)
                for service, status in self._server_status.items()
            }
        )


class HealthMonitor:
    """Keeps the health servicer's statuses in step with a probe (a DB ping)."""

    def __init__(
        self,
        servicer: HealthServicer,
        services: Sequence[str],
        probe: Callable[[], Awaitable[None]],
        interval_s: float,
    ) -> None:
        self._servicer = servicer
        self._services = ("", *services)
        self._probe = probe
        self._interval_s = interval_s
        self._healthy: bool | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> bool:
        """Probe now and publish the result; returns True when healthy."""
        try:
            # asyncio.timeout rather than wait_for, which on 3.11 can drop a cancellation.
            async with asyncio.timeout(max(self._interval_s, 1.0)):
                await self._probe()
            healthy = True
        except Exception as exc:  # any failure to answer means "not serving"
            healthy = False
            if self._healthy is not False:
                log.warning("db_unreachable", error_type=type(exc).__name__)
        if healthy and self._healthy is False:
            log.info("db_reachable_again")
        if healthy != self._healthy:
            status = SERVING if healthy else NOT_SERVING
            for service in self._services:
                await self._servicer.set(service, status)
        self._healthy = healthy
        return healthy

    def check_soon(self) -> None:
        """Probe now rather than at the next interval: a call just found the database
        gone (or back), and orchestrators should hear of it within milliseconds."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="health-monitor")

    async def stop(self) -> None:
        """Stop probing and report NOT_SERVING (first step of a graceful shutdown)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._servicer.enter_graceful_shutdown()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._woken()

    async def _woken(self) -> None:
        """Returns when stopping or when check_soon() was called."""
        stop = asyncio.ensure_future(self._stopping.wait())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((stop, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            wake.cancel()
