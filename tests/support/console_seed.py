"""A vault with something for every console page, made through the API (and, where
the API has no call for it, the way the vault itself would have written it).

- organization A: a connection the platform refuses (status ERROR), one whose token
  refresh failed against the fake OAuth provider (503), one whose granted scopes drift
  from the requested ones, and credentials expiring in 3 and 20 days;
- organization B: one healthy connection and a credential expiring in 5 days;
- an organization key of A (reader), for the confinement tests.
Every stored value is a canary (tests/support/canaries.py), so a page that showed one is caught.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as oapb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.oauth import link
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.status import expect_status
from tests.support.vault import Vault


@dataclass
class Seeded:
    org_a: str
    org_a_name: str
    org_b: str
    org_b_name: str
    error_conn: str
    failing_conn: str
    drift_conn: str
    ok_conn_b: str
    org_key_a: str
    secrets: list[str] = field(default_factory=list)


def _in(days: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


async def _store(vault: Vault, org: str, conn: str, days: float, secrets: list[str]) -> None:
    value = canary("console")
    secrets.append(value)
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=crpb.CREDENTIAL_TYPE_API_KEY,
            value=value,
            expire_time=_in(days),
        )
    )


async def seed(vault: Vault, provider: FakeOAuthProvider, owner_dsn: str) -> Seeded:
    secrets: list[str] = []
    # A: its first connection has real tokens from the fake provider; its refresh fails.
    linked = await link(vault, provider)
    secrets += [linked.access_token, linked.refresh_token, linked.client_secret]
    org_a = linked.org
    await vault.connections.UpdateConnection(
        cpb.UpdateConnectionRequest(
            connection=cpb.Connection(
                organization_id=org_a, id=linked.conn, display_name="Acme Slack (refreshing)"
            ),
            update_mask=FieldMask(paths=["display_name"]),
        )
    )
    await vault.organizations.UpdateOrganization(
        opb.UpdateOrganizationRequest(
            organization=opb.Organization(id=org_a, plan=opb.PLAN_STARTER),
            update_mask=FieldMask(paths=["plan"]),
        )
    )
    provider.fail_next(status=503)
    await expect_status(
        vault.oauth.GetAccessToken(
            oapb.GetAccessTokenRequest(organization_id=org_a, connection_id=linked.conn)
        ),
        grpc.StatusCode.UNAVAILABLE,
        "503",
    )
    error_conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=connection_message(
                    org_a, display_name="Acme Google", platform=cpb.PLATFORM_GOOGLE_WORKSPACE
                )
            )
        )
    ).connection.id
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org_a,
            connection_id=error_conn,
            status=cpb.CONNECTION_STATUS_ERROR,
            reason="the workspace admin removed the app",
        )
    )
    drift_conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=connection_message(
                    org_a,
                    display_name="Acme GitHub",
                    platform=cpb.PLATFORM_GITHUB,
                    permissions_granted=["repo", "admin:org"],
                )
            )
        )
    ).connection.id
    # requested_scopes is written by StartAuthorization/CompleteAuthorization only; set
    # it as that flow would have (the owner, scoped to the organization).
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org_a)
        await owner.execute(
            "UPDATE singura.platform_connections SET requested_scopes = $3 "
            "WHERE organization_id = $1 AND id = $2",
            uuid.UUID(org_a),
            uuid.UUID(drift_conn),
            ["repo", "read:user"],
        )
    finally:
        await owner.close()
    await _store(vault, org_a, drift_conn, 3, secrets)
    await _store(vault, org_a, error_conn, 20, secrets)
    org_a_name = (
        await vault.organizations.GetOrganization(opb.GetOrganizationRequest(organization_id=org_a))
    ).organization.name

    # B: healthy.
    org_b_message = org_message(name=f"Globex {uuid.uuid4().hex[:6]}")
    org_b = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_b_message)
        )
    ).organization.id
    ok_conn_b = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=connection_message(
                    org_b, display_name="Globex Zoom", platform=cpb.PLATFORM_ZOOM
                )
            )
        )
    ).connection.id
    await _store(vault, org_b, ok_conn_b, 5, secrets)

    created = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(
            organization_id=org_a, roles=[apb.API_KEY_ROLE_READER], name="console reader"
        )
    )
    secrets.append(created.secret)
    return Seeded(
        org_a=org_a,
        org_a_name=org_a_name,
        org_b=org_b,
        org_b_name=org_b_message.name,
        error_conn=error_conn,
        failing_conn=linked.conn,
        drift_conn=drift_conn,
        ok_conn_b=ok_conn_b,
        org_key_a=created.secret,
        secrets=secrets,
    )
