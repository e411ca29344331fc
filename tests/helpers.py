"""Small builders and assertions shared by the gRPC tests."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb


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
