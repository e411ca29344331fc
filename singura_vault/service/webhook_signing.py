"""Standard Webhooks signing (https://www.standardwebhooks.com): secrets, ids, signatures.

A secret is ``whsec_`` + base64 of 32 random bytes; the signature of a message is
``v1,`` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")), where
the key is the base64-decoded part after ``whsec_``. During a secret rotation's overlap
the ``webhook-signature`` header carries one ``v1,`` entry per secret, space
separated, newest first; a consumer accepts the message if any entry verifies.

Pure functions, no I/O: the delivery worker opens the secret (through the credential
path), signs, and forgets it. Nothing here logs or raises with a key or a signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from uuid import UUID

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of the format, not a secret
SECRET_BYTES = 32


def new_secret() -> tuple[bytes, str]:
    """A new signing key and its ``whsec_`` form (the only time it is shown)."""
    key = secrets.token_bytes(SECRET_BYTES)
    return key, SECRET_PREFIX + base64.b64encode(key).decode("ascii")


def message_id(delivery_id: UUID) -> str:
    """The webhook-id of a delivery: one per (event, endpoint), the same on every
    retry and redelivery, so a consumer can drop duplicates."""
    return f"msg_{delivery_id.hex}"


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` entry of the webhook-signature header."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every key given (newest first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(k, msg_id, timestamp, body) for k in keys),
    }
