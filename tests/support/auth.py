"""Small builders and assertions shared by the gRPC tests."""

from __future__ import annotations

import secrets
import string
from typing import Any

import grpc


def new_key_text() -> str:
    """A well-formed API key string (svk_<16>_<43>) that no vault knows yet."""
    alphabet = string.ascii_lowercase + string.digits
    key_id = "".join(secrets.choice(alphabet) for _ in range(16))
    return f"svk_{key_id}_{secrets.token_urlsafe(32)}"


class _Bearer:
    """Adds ``authorization: Bearer <key>`` to every call that does not set its own."""

    def __init__(self, key: str) -> None:
        self._key = key

    def _with_token(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if not any(k == "authorization" for k, _ in metadata):
            metadata.append(("authorization", f"Bearer {self._key}"))
        return details._replace(metadata=metadata)


class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]  # generic in grpc-stubs only
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]  # generic in grpc-stubs only
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def bearer(key: str) -> list[Any]:
    """Client interceptors that authenticate every call with ``key`` (grpc.aio files
    an interceptor under one call kind only, hence one per kind)."""
    return [_UnaryBearer(key), _StreamBearer(key)]
