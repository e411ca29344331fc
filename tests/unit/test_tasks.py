"""The background-task registry (singura_vault/tasks.py): a crashed task is named in the
log and restarted while the others run on, and stop() cancels and awaits every task.

No PostgreSQL and no sleeps: every step waits on an event that the task under test sets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from singura_vault.tasks import BackgroundTasks, WokenLoop

# A guard against a hang, not a synchronisation: every wait below ends on an event.
GUARD_S = 10


async def test_a_failing_task_is_named_in_the_log_restarted_and_the_others_run_on() -> None:
    """A task that raises is logged as background_task_failed with its name and error type,
    started again, and a task beside it keeps answering throughout."""
    tasks = BackgroundTasks(first_backoff_s=0.0)
    runs = 0
    restarted = asyncio.Event()
    requests: asyncio.Queue[asyncio.Event] = asyncio.Queue()

    async def crashes_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug in one job")
        restarted.set()
        await asyncio.Event().wait()

    async def steady() -> None:
        while True:
            (await requests.get()).set()

    with capture_logs() as events:
        tasks.start("steady", steady)
        tasks.start("crashy", crashes_once)
        async with asyncio.timeout(GUARD_S):
            await restarted.wait()
            answered = asyncio.Event()
            await requests.put(answered)
            await answered.wait()
        assert tasks.names == ("steady", "crashy")
        await tasks.stop()

    failures = [e for e in events if e["event"] == "background_task_failed"]
    assert [(e["task"], e["error_type"], e["log_level"]) for e in failures] == [
        ("crashy", "RuntimeError", "error")
    ]
    assert [e["task"] for e in events if e["event"] == "background_task_restarted"] == ["crashy"]
    assert runs == 2
    assert tasks.names == ()


async def test_stop_awaits_every_task_even_one_that_finishes_after_the_cancel() -> None:
    """stop() returns only once a task that catches the cancellation to finish its work has
    finished, and the other tasks were cancelled meanwhile (not one after the other)."""
    tasks = BackgroundTasks()
    running = asyncio.Event()
    cleaning = asyncio.Event()
    release = asyncio.Event()
    other_cancelled = asyncio.Event()
    finished: list[str] = []

    async def stubborn() -> None:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cleaning.set()
            await release.wait()  # ignores the cancel until its work is done
            finished.append("stubborn")

    async def polite() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("polite")
            other_cancelled.set()

    tasks.start("stubborn", stubborn)
    tasks.start("polite", polite)
    async with asyncio.timeout(GUARD_S):
        await running.wait()
        stopping = asyncio.create_task(tasks.stop())
        await cleaning.wait()
        await other_cancelled.wait()
        assert not stopping.done()
        release.set()
        await stopping
    assert sorted(finished) == ["polite", "stubborn"]
    assert tasks.names == ()


async def test_a_task_that_returns_is_not_restarted() -> None:
    """A task that finishes its work is logged as finished and not started again."""
    tasks = BackgroundTasks(first_backoff_s=0.0)
    runs = 0
    done = asyncio.Event()

    async def once() -> None:
        nonlocal runs
        runs += 1
        done.set()

    with capture_logs() as events:
        tasks.start("once", once)
        async with asyncio.timeout(GUARD_S):
            await done.wait()
        await tasks.stop()
    assert runs == 1
    assert [e["task"] for e in events if e["event"] == "background_task_finished"] == ["once"]


async def test_names_are_unique_and_nothing_starts_after_stop() -> None:
    """A second task of the same name, or a task started after stop(), is refused."""
    tasks = BackgroundTasks()
    tasks.start("job", asyncio.Event().wait)
    with pytest.raises(ValueError, match="already running"):
        tasks.start("job", asyncio.Event().wait)
    await tasks.stop()
    with pytest.raises(RuntimeError, match="after stop"):
        tasks.start("late", asyncio.Event().wait)


class _FakeClock:
    """A monotonic clock the test moves; a sleep on it records its length and moves
    the clock by it (no real time passes)."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.t += seconds


class _ScriptedLoop(WokenLoop):
    """A woken loop whose passes report to the test and wait for its go-ahead: pass n
    records whether the test had woken it, then waits for ``go[n]`` and answers
    ``more[n]`` (whether more work is waiting)."""

    def __init__(
        self,
        more: list[bool],
        *,
        wait_first: bool,
        min_spacing_s: float = 0.0,
        clock: _FakeClock | None = None,
    ) -> None:
        # An hour: no pass below is started by the fallback interval.
        if clock is None:
            super().__init__(3600.0, wait_first=wait_first)
        else:
            super().__init__(
                3600.0,
                wait_first=wait_first,
                min_spacing_s=min_spacing_s,
                monotonic=clock.now,
                sleep=clock.sleep,
            )
        self.more = more
        self.go = [asyncio.Event() for _ in more]
        self.started: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()
        self.woken_by_test = False
        self._passes = 0

    async def _pass(self) -> bool:
        n = self._passes
        self._passes += 1
        self.started.put_nowait((n, self.woken_by_test))
        self.woken_by_test = False
        await self.go[n].wait()
        return self.more[n]

    def wake_from_test(self) -> None:
        self.woken_by_test = True
        self.wake()


@contextlib.asynccontextmanager
async def _running(loop: WokenLoop) -> AsyncIterator[None]:
    """Run ``loop`` for the block (at most GUARD_S), then cancel it and await the end."""
    task = asyncio.create_task(loop.run_forever())
    try:
        async with asyncio.timeout(GUARD_S):
            yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_woken_loop_waits_for_a_wake_up_and_runs_again_at_once_when_more_waits() -> None:
    """WokenLoop (the sequencers' and the webhook worker's loop): the first pass waits for
    a wake-up; a pass that says more work is waiting is followed by the next without
    one; a wake-up that arrives during a pass makes one more pass after it."""
    loop = _ScriptedLoop([True, False, False], wait_first=True)
    async with _running(loop):
        loop.wake_from_test()
        assert await loop.started.get() == (0, True)
        loop.go[0].set()
        # Pass 0 answered "more": pass 1 runs without a wake-up.
        assert await loop.started.get() == (1, False)
        loop.wake_from_test()  # during pass 1
        loop.go[1].set()
        assert await loop.started.get() == (2, True)
        loop.go[2].set()


async def test_a_woken_loop_that_does_not_wait_first_runs_its_first_pass_at_once() -> None:
    """wait_first=False (the webhook worker: deliveries may be due from before the start):
    the first pass runs with no wake-up and no interval elapsed."""
    loop = _ScriptedLoop([False], wait_first=False)
    async with _running(loop):
        assert await loop.started.get() == (0, False)
        loop.go[0].set()


async def test_a_paced_loop_keeps_its_spacing_under_load_and_runs_at_once_after_idle() -> None:
    """min_spacing_s (the audit sequencer's pacing): a wake-up 2 ms after a pass started
    waits the 8 ms left; one that comes after the loop was idle longer than the spacing
    runs at once, with no wait."""
    clock = _FakeClock()
    loop = _ScriptedLoop([False, False, False], wait_first=True, min_spacing_s=0.01, clock=clock)
    async with _running(loop):
        loop.wake_from_test()
        assert await loop.started.get() == (0, True)
        clock.t += 0.002  # the pass takes 2 ms; a commit wakes the loop meanwhile
        loop.wake_from_test()
        loop.go[0].set()
        assert await loop.started.get() == (1, True)
        assert clock.slept == [0.008]
        clock.t += 0.5  # then half a second with nothing to chain
        loop.go[1].set()
        loop.wake_from_test()
        assert await loop.started.get() == (2, True)
        loop.go[2].set()
    assert clock.slept == [0.008]
