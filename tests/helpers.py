"""Small builders and assertions shared by the gRPC tests."""

from __future__ import annotations

import secrets
import string
import uuid
from typing import Any

import grpc
import pytest

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb


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


def org_message(**overrides: Any) -> opb.Organization:
    suffix = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "name": f"Acme {suffix}",
        "slug": f"acme-{suffix}",
        "domain": f"acme-{suffix}.com",
        "plan": opb.PLAN_FREE,
    }
    fields.update(overrides)
    return opb.Organization(**fields)


def connection_message(organization_id: str, **overrides: Any) -> cpb.Connection:
    fields: dict[str, Any] = {
        "organization_id": organization_id,
        "platform": cpb.PLATFORM_SLACK,
        "platform_user_id": f"U{uuid.uuid4().hex[:10]}",
        "platform_workspace_id": "T0001",
        "display_name": "Acme Slack",
        "permissions_granted": ["channels:read", "users:read"],
    }
    fields.update(overrides)
    return cpb.Connection(**fields)


async def expect_status(call: Any, code: grpc.StatusCode, *fragments: str) -> str:
    """Await an RPC that must fail with ``code``; return its details for more checks."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details, details
    return details


async def first_refusal(call: Any, *, attempts: int = 3000) -> grpc.StatusCode:
    """Repeat ``call()`` until it fails and return its status code: polling for a
    change another process makes (10 ms apart, ~30 s at most), not a timed check."""
    import asyncio

    for _ in range(attempts):
        try:
            await call()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        await asyncio.sleep(0.01)
    raise AssertionError(f"the call still succeeds after {attempts} attempts")


# The advisory lock of the audit sequencers (migrations 012 and 023): each sequencer
# takes it shared, so a test that holds it exclusively keeps new events pending.
AUDIT_SEQUENCER_LOCK = 1397114627


async def chain_pending_audit(conn: Any) -> int:
    """Chain every committed pending audit event now (as the vault's sequencer does a
    moment after each write), so a test may read audit_logs directly; returns how many.

    The vault's own sequencer may be chaining some of them right now, and a sequencer
    skips events another one holds (migration 023): holding the sequencers' lock
    exclusively first waits for it to commit and keeps it out until this is done."""
    chained = 0
    await conn.execute("SELECT pg_advisory_lock($1)", AUDIT_SEQUENCER_LOCK)
    try:
        while (n := await conn.fetchval("SELECT singura.audit_sequence(10000)")) > 0:
            chained += n
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", AUDIT_SEQUENCER_LOCK)
    return chained
