"""The background-task registry: the one owner of a process's long-running tasks.

A vault process runs a dozen loops beside its gRPC server (the audit and event
sequencers, the refresh and webhook workers, version destruction, the purge, the
rewrap worker, checkpoints, retention, the embedded PostgreSQL supervisor...).
``BackgroundTasks`` starts each under a name and is the only thing that stops them:
``stop()`` cancels **and awaits** every one, so a task cancelled mid-statement has
handed its connection back before the pool closes, and nothing is left running
behind a "stopped" server.

A task that raises is never lost silently: the failure is logged
(``background_task_failed``, with the task's name and the exception's type) and the
task is started again after a backoff (1 s, doubling to 30 s; back to 1 s once a run
has lasted a minute), while the other tasks run on. The vault keeps serving: each
of these loops already survives a lost database on its own, so an escaped exception
is a bug in one job, and stopping every tenant's API for it would turn the bug into
an outage (the ``background_task_failed`` event is what to alert on). A task that
returns has finished its work and is not restarted (``background_task_finished``).

``WokenLoop`` is the body that most of those loops share: wait for a wake-up (a
commit of this process) or a fallback interval, run one pass, repeat.

This module must never start a task that it does not also await in ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from singura_vault.logs import get_logger

__all__ = ["BackgroundTasks", "TaskFactory", "WokenLoop"]

log = get_logger(__name__)

# Builds a fresh coroutine for each (re)start: a coroutine object runs only once.
TaskFactory = Callable[[], Coroutine[Any, Any, None]]

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A run that lasted this long was healthy: its next failure restarts quickly again.
HEALTHY_RUN_S = 60.0


class BackgroundTasks:
    """Named background tasks, restarted after a crash, cancelled and awaited together."""

    def __init__(
        self,
        *,
        first_backoff_s: float = FIRST_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """The backoff bounds and the clock that measures a run are injectable so that a
        test restarts a crashed task at once rather than after a second."""
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._monotonic = monotonic
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the tasks started and not yet stopped, in start order."""
        return tuple(self._tasks)

    def start(self, name: str, factory: TaskFactory) -> None:
        """Run ``factory()`` as the task ``name`` until ``stop()``; a crash restarts it."""
        if self._stopping:
            raise RuntimeError(f"background task {name!r} started after stop()")
        if name in self._tasks:
            raise ValueError(f"a background task named {name!r} is already running")
        self._tasks[name] = asyncio.create_task(self._supervise(name, factory), name=name)

    async def stop(self) -> None:
        """Cancel every task, then await each until it has finished (its cleanup too).

        A task that catches the cancellation to finish what it was doing is waited for;
        ``stop()`` returns only when no task of this registry is left running.
        """
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        # gather, not a loop of awaits: one task's slow cleanup does not delay the
        # cancellation of the others, and return_exceptions keeps every one awaited.
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for task, result in zip(tasks, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error(
                    "background_task_failed",
                    task=task.get_name(),
                    error_type=type(result).__name__,
                    exc_info=result,
                )
        self._tasks.clear()

    async def _supervise(self, name: str, factory: TaskFactory) -> None:
        backoff_s = self._first_backoff_s
        while True:
            started = self._monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._monotonic() - started >= HEALTHY_RUN_S:
                    backoff_s = self._first_backoff_s
                log.error(
                    "background_task_failed",
                    task=name,
                    error_type=type(exc).__name__,
                    restart_in_s=backoff_s,
                    exc_info=exc,
                )
                if self._stopping:
                    return  # it failed while finishing after stop()'s cancel: no restart
                await asyncio.sleep(backoff_s)
                backoff_s = min(max(backoff_s * 2, self._first_backoff_s), self._max_backoff_s)
                log.warning("background_task_restarted", task=name)
                continue
            log.info("background_task_finished", task=name)
            return


class WokenLoop:
    """A loop that runs a pass when woken, or every ``interval_s`` without a wake-up.

    A base for the loops that work after a commit (the audit and event sequencers, the
    webhook delivery worker): ``wake()`` is cheap and coalesces (wake-ups that arrive
    while a pass runs make one more pass, not one each), and ``run_forever`` is what
    ``BackgroundTasks`` runs. A subclass's ``_pass`` handles its own failures (the loop
    only sequences passes) and returns whether more work is waiting, in which case the
    next pass runs at once. ``wait_first``: the first pass waits like the others
    (False: it runs at once).

    ``min_spacing_s`` paces a busy loop: a pass starts at least that long after the
    previous one started, and the wake-ups that arrive meanwhile are served by that one
    pass. A loop woken after being idle that long runs at once, so pacing adds no wait
    to a quiet vault; under load each pass does more per statement and per commit.
    ``monotonic`` and ``sleep`` are injected for tests.
    """

    def __init__(
        self,
        interval_s: float,
        *,
        wait_first: bool = True,
        min_spacing_s: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._interval_s = interval_s
        self._wait_first = wait_first
        self._woken = asyncio.Event()
        self._min_spacing_s = min_spacing_s
        self._monotonic = monotonic
        self._sleep = sleep
        self._last_start: float | None = None

    def wake(self) -> None:
        """Ask for a pass soon."""
        self._woken.set()

    async def run_forever(self) -> None:
        again = not self._wait_first
        while True:
            if not again:
                # asyncio.timeout, never wait_for: on Python 3.11 wait_for drops a
                # cancellation that arrives just as the wait ends (a write woke us while
                # BackgroundTasks.stop cancelled us), and stop() then waits for this
                # loop for ever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval_s):
                        await self._woken.wait()
            await self._keep_spacing()
            self._woken.clear()
            self._last_start = self._monotonic()
            again = await self._pass()

    async def _keep_spacing(self) -> None:
        if self._min_spacing_s <= 0 or self._last_start is None:
            return
        left = self._min_spacing_s - (self._monotonic() - self._last_start)
        if left > 0:
            await self._sleep(left)

    async def _pass(self) -> bool:
        """One pass; True when more work is waiting."""
        raise NotImplementedError
