"""Request messages with valid, unique defaults: an organization and a connection,
any field overridable."""

from __future__ import annotations

import uuid
from typing import Any

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
