"""singura_vault/heap.py: what serve does to the garbage collector once it serves."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from singura_vault import heap


class _Node:
    """An object that can sit in a reference cycle and be weakly referenced."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process's heap is unfrozen again afterwards (freezing is process-wide)."""
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_freeze_collects_startup_garbage_first_and_freezes_what_lives() -> None:
    """A cycle already unreachable is collected, not frozen; a live object leaves the
    collector's walks (gc.get_objects no longer lists it) and is counted."""
    garbage, kept = _Node(), _Node()
    garbage.other = _Node()
    garbage.other.other = garbage
    dead = weakref.ref(garbage)
    del garbage
    was_disabled = not gc.isenabled()
    gc.disable()  # only the freeze's own collection may collect the cycle
    try:
        assert dead() is not None
        frozen = heap.freeze_startup_heap()
    finally:
        if not was_disabled:
            gc.enable()
    assert dead() is None
    assert frozen == gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())
