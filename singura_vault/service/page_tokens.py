"""Page tokens a client cannot forge or edit: the service's cursor, MAC-sealed.

The services issue plain cursor tokens (``service/pagination.py``: the last row's
sort key and a fingerprint of the filters). Before one leaves the vault it is
sealed here with HMAC-SHA256 under a key derived from ``SINGURA_AUTH_SECRET``
(shared by every vault process, kept outside the database), bound to the RPC and
to the API key that asked; an incoming token must carry a valid seal for the same
RPC and key, or it is INVALID_ARGUMENT. So a token cannot be forged, edited
(another cursor, other filters), or replayed by another caller or on another
method. Tokens are not encrypted: what they carry (a time and an id from a page
the caller was shown) is not secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final

from singura_vault.errors import InvalidArgument

_KEY_LABEL: Final = b"singura-vault/page-token/v1"
_TAG_BYTES: Final = 16
_SEPARATOR: Final = "."


class PageTokenSealer:
    """Seals and opens page tokens for one vault deployment's auth secret."""

    def __init__(self, auth_secret: bytes) -> None:
        self._key = hmac.new(auth_secret, _KEY_LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "<PageTokenSealer>"

    def seal(self, token: str, method: str, caller: str) -> str:
        """The token as the client sees it ('' stays '': no next page)."""
        if not token:
            return ""
        tag = self._tag(token, method, caller)
        return f"{token}{_SEPARATOR}{_b64(tag)}"

    def open(self, sealed: str, method: str, caller: str) -> str:
        """The service's token inside ``sealed``; INVALID_ARGUMENT if it was not issued
        by this deployment for this method and caller, or was changed."""
        if not sealed:
            return ""
        token, _, tag_text = sealed.rpartition(_SEPARATOR)
        # Compared as text, not decoded: base64 has several spellings of the same
        # bytes (the unused low bits of the last character), and an edited token
        # must never be accepted.
        expected = _b64(self._tag(token, method, caller))
        if not token or not hmac.compare_digest(tag_text.encode(), expected.encode()):
            raise InvalidArgument(
                "page_token",
                "is not a token this vault issued for this call and API key (or it was "
                "changed); repeat the call with an empty page_token to start again",
            )
        return token

    def _tag(self, token: str, method: str, caller: str) -> bytes:
        message = b"\x00".join((method.encode(), caller.encode(), token.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
