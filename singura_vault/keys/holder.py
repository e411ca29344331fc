"""The base class of every object that holds key material.

A key holder cannot be pickled, copied or mutated, and its repr never shows
key bytes: the material stays in the one object it was put into, the way
Tink's keyset handle refuses to be serialized in the clear. Subclasses give a
more specific redacted ``__repr__``; they must never add a method that returns
key bytes, and never raise from ``__repr__`` (logging and tracebacks call it).
"""

from __future__ import annotations

from typing import NoReturn, SupportsIndex

__all__ = ["KeyHolder"]


class KeyHolder:
    """Refuses pickling, copying and attribute changes; reprs without key bytes."""

    __slots__ = ()

    def _refuse_copy(self) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} holds key material, which cannot be copied or serialized"
        )

    def __reduce__(self) -> NoReturn:
        self._refuse_copy()

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        self._refuse_copy()

    def __getstate__(self) -> NoReturn:
        self._refuse_copy()

    def __copy__(self) -> NoReturn:
        self._refuse_copy()

    def __deepcopy__(self, memo: dict[int, object]) -> NoReturn:
        self._refuse_copy()

    # Immutable after construction, so that nothing can, say, relabel a data key
    # with another organization's id; constructors use object.__setattr__.
    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: key material redacted>"
