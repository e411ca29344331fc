"""Coalescing: the database work of concurrent calls, done by one statement.

Most of what a unary call costs the vault and PostgreSQL is per statement and per
commit -- a round trip, a parse/bind/execute, a transaction, a WAL flush -- not per
row. A :class:`Coalescer` lets concurrent calls share that cost. A call that finds
nothing of its kind in flight goes at once: its batch takes its calls two turns of
the event loop later, so that the calls that became runnable with it join, and no
timer is involved (an idle vault adds no wait). The calls that arrive while a batch
is in flight wait and go together as the next batch, in one statement. Under load,
batches grow with the load; alone, a call is a batch of one.

Each call still gets exactly its own outcome: the batch function returns one result
or one :class:`~singura_vault.errors.VaultError` per item, in order, so a missing or
tampered credential fails only its own call. A failure of the whole statement (the
database unreachable) fails every call of that batch, each with its own copy of the
error. A call that is cancelled (its deadline passed, its client went away) while it
waits is left out of the batch; one cancelled while its batch runs gets nothing, and
the others are unaffected.

Row-level security is not the coalescer's business: each item carries the scope its
caller would have run under (db/pool.py ``request_scope``), and the batch statements
enter that scope for that item's rows alone (migration 022; docs/threat-model.md).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from singura_vault import metrics
from singura_vault.errors import InvariantBroken, VaultError

I = TypeVar("I")  # noqa: E741 - an item, as in Generic[I, R]
R = TypeVar("R")

BatchFunction = Callable[[Sequence[I]], Awaitable[Sequence[R | VaultError]]]

# One batch of a kind in flight at a time (per process): everything that arrives
# meanwhile joins the next one. More in flight would start smaller batches sooner,
# and under load each of them would pay the per-statement cost coalescing removes;
# bench/vs_openbao.py prints the batch sizes this gives.
DEFAULT_MAX_IN_FLIGHT = 1
# Bounds one statement's work (and its arrays); more waiting calls form the next batch.
DEFAULT_MAX_BATCH = 64


class Coalescer(Generic[I, R]):
    """Runs ``batch`` over the items of concurrent :meth:`submit` calls."""

    def __init__(
        self,
        batch: BatchFunction[I, R],
        *,
        operation: str,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if max_in_flight < 1 or max_batch < 1:
            raise ValueError("max_in_flight and max_batch must be at least 1")
        self._batch = batch
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._sizes = metrics.COALESCED_BATCH_SIZE.labels(operation=operation)
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: I) -> R:
        """Do ``item``'s work in the next batch; its own result, or its own error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        while self._waiting and self._in_flight < self._max_in_flight:
            self._in_flight += 1
            # A task, not a call: it starts on the loop's next turn, so calls that
            # arrive in this turn join it.
            task = asyncio.get_running_loop().create_task(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        try:
            # One more turn of the loop before the batch takes its calls: the calls
            # that became runnable with this one (their requests read in the same turn)
            # reach submit() and join it. No clock is involved, so an idle vault still
            # sends a lone call at once. Pinned to one core this gave reveals +22% and
            # gets +6% (docs/scaling.md).
            await asyncio.sleep(0)
            taken, self._waiting = (
                self._waiting[: self._max_batch],
                self._waiting[self._max_batch :],
            )
            # A caller cancelled while waiting (deadline, client gone) is left out.
            live = [(item, future) for item, future in taken if not future.done()]
            if live:
                await self._run_batch(live)
        finally:
            self._in_flight -= 1
            self._start_batches()

    async def _run_batch(self, live: list[tuple[I, asyncio.Future[R]]]) -> None:
        self._sizes.observe(len(live))
        try:
            outcomes = await self._batch([item for item, _ in live])
            if len(outcomes) != len(live):
                raise InvariantBroken("coalesce: a batch gave more or fewer outcomes than items")
        except asyncio.CancelledError:
            # The process is stopping: its callers are being cancelled too.
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in live:
                if not future.done():
                    future.set_exception(_own_copy(exc))
            return
        for (_, future), outcome in zip(live, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, VaultError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


def _own_copy(error: Exception) -> Exception:
    """A copy of ``error`` for one caller: one instance raised by several tasks would
    collect all their tracebacks (and keep their frames alive) as it is re-raised."""
    try:
        twin = copy.copy(error)
    except Exception:  # an exception type that cannot be rebuilt from its args
        return error
    twin.__cause__ = error.__cause__
    twin.__suppress_context__ = True
    return twin
