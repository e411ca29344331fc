"""Secret: a value the vault handed out (a revealed credential, an access token, a new API
key), wrapped so that it is never printed, logged, pickled or compared by accident.

``repr()`` and ``str()`` show ``Secret('***')``; only ``.reveal()`` returns the text. Two
Secrets compare equal when their values are equal, in constant time; a Secret never equals
a plain string (so ``secret == "guess"`` cannot become an oracle in a log line or a test
assertion message), and it has no hash. Pickling and copying to another process are refused:
a Secret that should travel must be revealed, on purpose, by the code that sends it.
"""

from __future__ import annotations

import hmac
from typing import Any, Final, NoReturn, final

_HIDDEN: Final = "Secret('***')"


@final
class Secret:
    """A secret string. ``reveal()`` is the one way to read it."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret text. Do not log it, print it or put it in an exception."""
        return self._value

    def __repr__(self) -> str:
        return _HIDDEN

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return _HIDDEN

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    # Equality by value but no hash: a hash of the value would be a fingerprint of it.
    __hash__ = None  # type: ignore[assignment]

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied; reveal() it on purpose instead")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied; reveal() it on purpose instead")

    def __copy__(self) -> Secret:
        return self  # immutable: a copy is the same object, not a way out

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self
