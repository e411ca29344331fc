"""The Coalescer (db/coalesce.py) on its own: when calls go at once and when they wait,
that each call gets its own outcome, and what cancellation does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from singura_vault.db.coalesce import Coalescer
from singura_vault.errors import NotFound, Unavailable, VaultError


class Gated:
    """A batch function that records its batches and, while ``hold`` is armed, keeps the
    first batch in flight until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.hold = False
        self.fail_with: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int | VaultError]:
        self.batches.append(list(items))
        if self.hold:
            self.hold = False
            self.entered.set()
            await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [NotFound(f"no item {i}") if i < 0 else i * 10 for i in items]


async def _until(condition: object, *, turns: int = 1000) -> None:
    """Let the event loop run until ``condition()`` holds (no wall-clock waiting)."""
    for _ in range(turns):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_call_alone_is_a_batch_of_one() -> None:
    """A call with nothing else waiting runs at once as a batch of one."""
    batch = Gated()
    coalescer = Coalescer(batch, operation="test")
    assert await coalescer.submit(3) == 30
    assert batch.batches == [[3]]


async def test_calls_arriving_during_a_batch_go_together_in_the_next() -> None:
    """Calls that arrive while a batch runs wait and go together in the next batch."""
    batch = Gated()
    batch.hold = True
    coalescer = Coalescer(batch, operation="test")
    first = asyncio.ensure_future(coalescer.submit(1))
    await batch.entered.wait()
    rest = [asyncio.ensure_future(coalescer.submit(n)) for n in (2, 3, 4, 5)]
    await _until(lambda: len(coalescer._waiting) == 4)
    batch.release.set()
    assert await first == 10
    assert [await call for call in rest] == [20, 30, 40, 50]
    assert batch.batches == [[1], [2, 3, 4, 5]]


async def test_calls_in_the_same_turn_share_the_first_batch() -> None:
    """Calls made in the same event-loop turn share the first batch, each getting its own result."""
    batch = Gated()
    coalescer = Coalescer(batch, operation="test")
    results = await asyncio.gather(*(coalescer.submit(n) for n in (1, 2, 3)))
    assert results == [10, 20, 30]
    assert batch.batches == [[1, 2, 3]]


async def test_a_call_runnable_one_turn_later_joins_the_batch() -> None:
    """A batch takes its calls a loop turn after it starts (no clock): a call whose
    task was runnable then joins it rather than waiting for the next statement."""
    batch = Gated()
    coalescer = Coalescer(batch, operation="test")
    first = asyncio.ensure_future(coalescer.submit(1))
    await asyncio.sleep(0)  # one turn: the first call submits and starts a batch
    second = asyncio.ensure_future(coalescer.submit(2))
    assert await first == 10
    assert await second == 20
    assert batch.batches == [[1, 2]]


async def test_a_batch_holds_at_most_max_batch_items() -> None:
    """A batch holds at most max_batch items; the rest go in the following batches in order."""
    batch = Gated()
    coalescer = Coalescer(batch, operation="test", max_batch=2)
    results = await asyncio.gather(*(coalescer.submit(n) for n in (1, 2, 3, 4, 5)))
    assert results == [10, 20, 30, 40, 50]
    assert batch.batches == [[1, 2], [3, 4], [5]]


async def test_an_item_error_fails_only_its_own_call() -> None:
    """An error for one item fails only that item's call; the others in the batch get their
    results."""
    batch = Gated()
    coalescer = Coalescer(batch, operation="test")
    results = await asyncio.gather(
        coalescer.submit(1), coalescer.submit(-2), coalescer.submit(3), return_exceptions=True
    )
    assert results[0] == 10
    assert results[2] == 30
    assert isinstance(results[1], NotFound)
    assert "no item -2" in str(results[1])


async def test_a_failed_statement_fails_every_call_with_its_own_copy() -> None:
    """One exception instance raised in several tasks would collect all their
    tracebacks (the store leak of #25 was that): each caller gets a copy."""
    batch = Gated()
    batch.fail_with = Unavailable("the database cannot be reached")
    coalescer = Coalescer(batch, operation="test")
    results = await asyncio.gather(
        *(coalescer.submit(n) for n in (1, 2, 3)), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results)
    assert all(str(r) == "the database cannot be reached" for r in results)
    assert len({id(r) for r in results}) == 3
    assert not any(r is batch.fail_with for r in results)


async def test_a_call_cancelled_while_waiting_is_left_out() -> None:
    """A call cancelled while waiting for the next batch is left out of it."""
    batch = Gated()
    batch.hold = True
    coalescer = Coalescer(batch, operation="test")
    first = asyncio.ensure_future(coalescer.submit(1))
    await batch.entered.wait()
    doomed = asyncio.ensure_future(coalescer.submit(2))
    kept = asyncio.ensure_future(coalescer.submit(3))
    await _until(lambda: len(coalescer._waiting) == 2)
    doomed.cancel()
    batch.release.set()
    assert await first == 10
    assert await kept == 30
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert batch.batches == [[1], [3]]


async def test_a_call_cancelled_while_its_batch_runs_leaves_the_others_their_results() -> None:
    """Cancelling a call whose batch is running does not stop the batch or later calls."""
    batch = Gated()
    batch.hold = True
    coalescer = Coalescer(batch, operation="test")
    doomed = asyncio.ensure_future(coalescer.submit(1))
    await batch.entered.wait()
    doomed.cancel()
    await asyncio.sleep(0)
    batch.release.set()
    assert await coalescer.submit(2) == 20
    assert doomed.cancelled()
    assert batch.batches == [[1], [2]]


def test_limits_must_be_positive() -> None:
    """A max_batch below 1 is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Gated(), operation="test", max_batch=0)
