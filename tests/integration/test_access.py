"""Authentication and authorization: every RPC, every kind of wrong key."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from structlog.testing import capture_logs

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.config.environment import load_settings
from singura_vault.context import Role
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.access import AccessService, RateLimit, load_auth_secret
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.auth import new_key_text
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.polling import first_refusal
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.vault import Stubs, Vault, start_vault, stop_vault

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
R, W, V = apb.API_KEY_ROLE_READER, apb.API_KEY_ROLE_WRITER, apb.API_KEY_ROLE_REVEALER


@dataclass
class World:
    """Two organizations, a connection and credential in A, and keys of every kind."""

    vault: Vault
    org_a: str
    org_b: str
    conn_a: str
    cred_a: str
    keys: dict[str, str]


@pytest.fixture
async def world(vault: Vault, owner_dsn: str) -> World:
    org_a = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
        )
    ).organization.id
    org_b = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization.id
    conn_a = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org_a))
        )
    ).connection.id
    cred_a = (
        await vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org_a,
                connection_id=conn_a,
                type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                value=canary("access"),
            )
        )
    ).credential.id
    keys = {
        "a_reader": await make_key(vault, org_a, (R,)),
        "a_writer": await make_key(vault, org_a, (W,)),
        "a_revealer": await make_key(vault, org_a, (V,)),
        "a_all": await make_key(vault, org_a, (R, W, V)),
        "a_reader_revealer": await make_key(vault, org_a, (R, V)),
        "b_all": await make_key(vault, org_b, (R, W, V)),
        "revoked": await make_key(vault, org_a, (R, W, V)),
        "expired": await make_key(vault, org_a, (R, W, V)),
    }
    await vault.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=keys["revoked"][4:20]))
    owner = await asyncpg.connect(owner_dsn)
    try:
        # No sleeping until expiry: move the expiry into the past, as time would.
        await owner.execute(
            "UPDATE singura.api_keys SET expires_at = now() - interval '1 second' "
            "WHERE key_id = $1",
            keys["expired"][4:20],
        )
    finally:
        await owner.close()
    return World(vault, org_a, org_b, conn_a, cred_a, keys)


Call = Callable[[Stubs, World], Awaitable[Any]]
ADMIN = "admin"
ANY_ROLE = "any"
READ, WRITE, REVEAL = "read", "write", "reveal"

RPCS: dict[str, tuple[str, Call]] = {
    "CreateOrganization": (
        ADMIN,
        lambda s, w: s.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        ),
    ),
    "GetOrganization": (
        ANY_ROLE,
        lambda s, w: s.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=w.org_a)
        ),
    ),
    "ListOrganizations": (
        ADMIN,
        lambda s, w: s.organizations.ListOrganizations(opb.ListOrganizationsRequest()),
    ),
    "UpdateOrganization": (
        ADMIN,
        lambda s, w: s.organizations.UpdateOrganization(
            opb.UpdateOrganizationRequest(
                organization=opb.Organization(id=w.org_a, name="Renamed"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        ),
    ),
    "DeleteOrganization": (
        ADMIN,
        lambda s, w: s.organizations.DeleteOrganization(
            opb.DeleteOrganizationRequest(organization_id=str(uuid.uuid4()))
        ),
    ),
    "CreateConnection": (
        WRITE,
        lambda s, w: s.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(w.org_a))
        ),
    ),
    "GetConnection": (
        READ,
        lambda s, w: s.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=w.org_a, connection_id=w.conn_a)
        ),
    ),
    "ListConnections": (
        READ,
        lambda s, w: s.connections.ListConnections(
            cpb.ListConnectionsRequest(organization_id=w.org_a)
        ),
    ),
    "UpdateConnection": (
        WRITE,
        lambda s, w: s.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=cpb.Connection(
                    organization_id=w.org_a, id=w.conn_a, display_name="Renamed"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        ),
    ),
    "UpdateConnectionStatus": (
        WRITE,
        lambda s, w: s.connections.UpdateConnectionStatus(
            cpb.UpdateConnectionStatusRequest(
                organization_id=w.org_a,
                connection_id=w.conn_a,
                status=cpb.CONNECTION_STATUS_ACTIVE,
                reason="still fine",
            )
        ),
    ),
    "DeleteConnection": (
        WRITE,
        lambda s, w: s.connections.DeleteConnection(
            cpb.DeleteConnectionRequest(organization_id=w.org_a, connection_id=str(uuid.uuid4()))
        ),
    ),
    "UndeleteConnection": (
        WRITE,
        lambda s, w: s.connections.UndeleteConnection(
            cpb.UndeleteConnectionRequest(organization_id=w.org_a, connection_id=str(uuid.uuid4()))
        ),
    ),
    "StoreCredential": (
        WRITE,
        lambda s, w: s.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=w.org_a,
                connection_id=w.conn_a,
                type=crpb.CREDENTIAL_TYPE_API_KEY,
                value=canary("matrix"),
            )
        ),
    ),
    "GetCredential": (
        READ,
        lambda s, w: s.credentials.GetCredential(
            crpb.GetCredentialRequest(organization_id=w.org_a, credential_id=w.cred_a)
        ),
    ),
    "ListCredentials": (
        READ,
        lambda s, w: s.credentials.ListCredentials(
            crpb.ListCredentialsRequest(organization_id=w.org_a, connection_id=w.conn_a)
        ),
    ),
    "ListCredentialVersions": (
        READ,
        lambda s, w: s.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=w.org_a,
                connection_id=w.conn_a,
                type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
            )
        ),
    ),
    "RevealCredential": (
        REVEAL,
        lambda s, w: s.credentials.RevealCredential(
            crpb.RevealCredentialRequest(
                organization_id=w.org_a,
                connection_id=w.conn_a,
                type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
            )
        ),
    ),
    "ListExpiringCredentials": (
        READ,
        lambda s, w: s.credentials.ListExpiringCredentials(
            crpb.ListExpiringCredentialsRequest(
                organization_id=w.org_a, within=duration_pb2.Duration(seconds=3600)
            )
        ),
    ),
    "RevokeCredential": (
        WRITE,
        lambda s, w: s.credentials.RevokeCredential(
            crpb.RevokeCredentialRequest(organization_id=w.org_a, credential_id=str(uuid.uuid4()))
        ),
    ),
    **{
        name: (
            WRITE,
            lambda s, w, name=name, request=request: getattr(s.credentials, name)(
                request(
                    organization_id=w.org_a,
                    connection_id=w.conn_a,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    version=1,
                )
            ),
        )
        for name, request in (
            ("DisableCredentialVersion", crpb.DisableCredentialVersionRequest),
            ("EnableCredentialVersion", crpb.EnableCredentialVersionRequest),
            ("DestroyCredentialVersion", crpb.DestroyCredentialVersionRequest),
            ("CancelCredentialDestroy", crpb.CancelCredentialDestroyRequest),
        )
    },
    "CreateApiKey": (
        ADMIN,
        lambda s, w: s.access.CreateApiKey(
            apb.CreateApiKeyRequest(organization_id=w.org_a, roles=[R])
        ),
    ),
    "ListApiKeys": (ADMIN, lambda s, w: s.access.ListApiKeys(apb.ListApiKeysRequest())),
    "RevokeApiKey": (
        ADMIN,
        lambda s, w: s.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id="0" * 16)),
    ),
}

# Keys of organization A that lack what each requirement needs.
TOO_LITTLE = {
    ADMIN: "a_all",
    WRITE: "a_reader_revealer",
    READ: "a_revealer",
    REVEAL: "a_all_but_reveal",
}
ENOUGH = {
    ADMIN: None,
    ANY_ROLE: "a_revealer",
    READ: "a_reader",
    WRITE: "a_writer",
    REVEAL: "a_revealer",
}


async def outcome(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("rpc", sorted(RPCS))
async def test_every_rpc_checks_the_key(world: World, rpc: str) -> None:
    """No, malformed, unknown, revoked or expired keys are UNAUTHENTICATED; other-org
    and too-little-role keys PERMISSION_DENIED; the right key gets through."""
    need, call = RPCS[rpc]
    vault = world.vault
    for bad in (None, "svk_short", new_key_text(), world.keys["revoked"], world.keys["expired"]):
        assert await outcome(call(vault.as_key(bad), world)) == UNAUTHENTICATED, (rpc, bad)
    assert await outcome(call(vault.as_key(world.keys["b_all"]), world)) == DENIED, rpc
    little = TOO_LITTLE.get(need)
    if little == "a_all_but_reveal":
        little_key = await make_key(vault, world.org_a, (R, W))
        assert await outcome(call(vault.as_key(little_key), world)) == DENIED, rpc
    elif little is not None:
        assert await outcome(call(vault.as_key(world.keys[little]), world)) == DENIED, rpc
    enough = ENOUGH[need]
    stubs = vault if enough is None else vault.as_key(world.keys[enough])
    assert await outcome(call(stubs, world)) not in (UNAUTHENTICATED, DENIED), rpc


async def test_admin_key_creates_an_organization_and_its_key(vault: Vault) -> None:
    """An admin key makes an organization and an org key; that key works only there."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization
    created = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org.id, roles=[R, W], name="ci")
    )
    assert created.secret.startswith("svk_")
    assert created.api_key.key_id == created.secret[4:20]
    assert created.api_key.created_by == vault.admin_key[4:20]
    org_key = vault.as_key(created.secret)
    fetched = await org_key.organizations.GetOrganization(
        opb.GetOrganizationRequest(organization_id=org.id)
    )
    assert fetched.organization.id == org.id
    await org_key.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=connection_message(org.id))
    )
    await expect_status(
        org_key.organizations.ListOrganizations(opb.ListOrganizationsRequest()), DENIED
    )
    listed = await vault.access.ListApiKeys(apb.ListApiKeysRequest(organization_id=org.id))
    assert [k.key_id for k in listed.api_keys] == [created.api_key.key_id]
    assert created.secret not in str(listed)
    await expect_status(
        vault.access.CreateApiKey(apb.CreateApiKeyRequest(organization_id=org.id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "role",
    )
    await expect_status(
        vault.access.CreateApiKey(apb.CreateApiKeyRequest(roles=[R])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "admin",
    )


async def test_denied_calls_are_audited(
    world: World, postgres: PostgresServer, database_name: str
) -> None:
    """UNAUTHENTICATED and PERMISSION_DENIED calls leave access.denied audit events."""
    vault = world.vault
    await outcome(
        vault.as_key(new_key_text()).organizations.ListOrganizations(opb.ListOrganizationsRequest())
    )
    await outcome(
        vault.as_key(world.keys["b_all"]).connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=world.org_a, connection_id=world.conn_a)
        )
    )
    superuser = await asyncpg.connect(postgres.dsn("postgres", database_name))
    try:
        await chain_pending_audit(superuser)
        rows = await superuser.fetch(
            "SELECT organization_id, actor, outcome, details::text AS details "
            "FROM singura.audit_logs WHERE action = 'access.denied' ORDER BY id"
        )
    finally:
        await superuser.close()
    assert len(rows) == 2
    unknown, other_org = rows
    assert (unknown["organization_id"], unknown["actor"]) == (None, "unknown")
    assert json.loads(unknown["details"])["code"] == "UNAUTHENTICATED"
    assert str(other_org["organization_id"]) == world.org_b  # recorded in the key's tenant
    assert other_org["actor"] == world.keys["b_all"][4:20]
    assert json.loads(other_org["details"])["code"] == "PERMISSION_DENIED"
    assert all(r["outcome"] == "denied" for r in rows)


async def test_rate_limit_holds_across_concurrent_calls(
    db: Database, key_manager: keys.KeyManager, auth_secret: bytes
) -> None:
    """With a burst of 3 and a trickle of refill, 10 concurrent calls: 3 pass, 7 are
    RESOURCE_EXHAUSTED with retry-after-ms in the trailers."""
    limited = build_access(db, auth_secret, RateLimit(rate=0.01, burst=3))
    vault = await start_vault(Components(db, key_manager=key_manager, access=limited))
    try:
        calls = [
            vault.organizations.ListOrganizations(opb.ListOrganizationsRequest()) for _ in range(10)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        passed = [r for r in results if isinstance(r, opb.ListOrganizationsResponse)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(passed) == 3
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        trailers = dict(refused[0].trailing_metadata() or ())
        assert int(trailers["retry-after-ms"]) > 0
        assert "rate limit" in (refused[0].details() or "")
    finally:
        await stop_vault(vault)


async def test_a_refused_key_is_refused_locally_until_its_bucket_refills(
    service_dsn: str, key_manager: keys.KeyManager, auth_secret: bytes
) -> None:
    """Once the shared bucket has refused a key (one token, refilled at 0.01/s: the next
    is 100 s away), the process refuses that key's calls itself: 10 calls more cost no
    lease statement, and each says to retry after at most the first refusal's delay."""
    db = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=2, slow_query_ms=0)
    )  # every statement is logged, by query name
    limited = build_access(db, auth_secret, RateLimit(rate=0.01, burst=1))
    vault = await start_vault(Components(db, key_manager=key_manager, access=limited))
    try:
        request = opb.ListOrganizationsRequest()
        await vault.organizations.ListOrganizations(request)  # spends the only token
        delays = []
        with capture_logs() as events:
            for _ in range(11):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await vault.organizations.ListOrganizations(request)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                trailers = dict(refused.value.trailing_metadata() or ())
                delays.append(int(trailers["retry-after-ms"]))
        leases = [e for e in events if e.get("query") == "api_key_lease"]
        assert len(leases) == 1, leases  # the first refusal only
        assert 90_000 < delays[0] <= 100_000, delays
        assert all(0 < d <= delays[0] for d in delays), delays
    finally:
        await stop_vault(vault)
        await db.close()


class PermitAll:
    """Test-only stand-in for the service-layer checks: allows everything."""

    def principal(self) -> Any:
        from singura_vault.context import current_request

        return current_request().principal

    def require_admin(self, action: str) -> Any:
        return self.principal()

    def require(self, organization_id: Any, roles: Any, action: str) -> Any:
        return self.principal()


async def test_rls_alone_stops_cross_tenant_access(
    db: Database, key_manager: Any, access_service: AccessService
) -> None:
    """With the service-layer check switched off, an org key still reaches 0 rows of
    another organization: reads are NOT_FOUND, updates and deletes change nothing."""
    seam = PermitAll()
    vault = await start_vault(
        Components(db, key_manager=key_manager, access=access_service, authorizer=seam)  # type: ignore[arg-type]  # PermitAll stands in for Authorizer
    )
    try:
        org_a = (
            await vault.organizations.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message())
            )
        ).organization.id
        org_b = (
            await vault.organizations.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message())
            )
        ).organization.id
        conn_b = (
            await vault.connections.CreateConnection(
                cpb.CreateConnectionRequest(connection=connection_message(org_b))
            )
        ).connection
        key_a = vault.as_key(await make_key(vault, org_a, (R, W, V)))
        target = {"organization_id": org_b, "connection_id": conn_b.id}
        await expect_status(
            key_a.connections.GetConnection(cpb.GetConnectionRequest(**target)),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect_status(
            key_a.connections.UpdateConnectionStatus(
                cpb.UpdateConnectionStatusRequest(
                    **target, status=cpb.CONNECTION_STATUS_REVOKED, reason="hijack"
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        )
        await expect_status(
            key_a.connections.DeleteConnection(cpb.DeleteConnectionRequest(**target)),
            grpc.StatusCode.NOT_FOUND,
        )
        listed = await key_a.connections.ListConnections(
            cpb.ListConnectionsRequest(organization_id=org_b)
        )
        assert list(listed.connections) == []
        orgs = await key_a.organizations.ListOrganizations(opb.ListOrganizationsRequest())
        assert [o.id for o in orgs.organizations] == [org_a]  # no admin scope for org keys
        unchanged = await vault.connections.GetConnection(cpb.GetConnectionRequest(**target))
        assert unchanged.connection == conn_b
    finally:
        await stop_vault(vault)


async def test_revocation_reaches_a_second_vault_process(vault: Vault, second_process: str) -> None:
    """A key revoked through one vault process is refused by another as soon as the
    change notification arrives (that process caches keys for 300 s, so nothing else
    could make it refuse the key within this test)."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message())
        )
    ).organization
    key = await make_key(vault, org.id, (R,))
    channel = grpc.aio.insecure_channel(second_process)
    try:
        other = Stubs.on(channel)
        metadata = (("authorization", f"Bearer {key}"),)
        request = opb.GetOrganizationRequest(organization_id=org.id)
        assert (
            await other.organizations.GetOrganization(request, metadata=metadata)
        ).organization.id == org.id
        await vault.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=key[4:20]))
        refused = await first_refusal(
            lambda: other.organizations.GetOrganization(request, metadata=metadata)
        )
        assert refused == UNAUTHENTICATED
    finally:
        await channel.close()


def test_roles_enum_matches_the_contract() -> None:
    """Every domain role has an API_KEY_ROLE_* value and back."""
    assert {f"API_KEY_ROLE_{r.name}" for r in Role} == {
        n
        for n in apb.ApiKeyRole.keys()  # noqa: SIM118 - a protobuf enum wrapper, not a dict
        if n != "API_KEY_ROLE_UNSPECIFIED"
    }


def test_the_auth_secret_can_come_from_an_owner_only_file(tmp_path: Path) -> None:
    """SINGURA_AUTH_SECRET_FILE (container secrets): read with the owner-only check;
    never together with SINGURA_AUTH_SECRET."""
    secret = base64.b64encode(os.urandom(32)).decode()
    path = tmp_path / "auth_secret"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    external = {
        "DATABASE_URL": "postgresql://singura_service@db.internal/singura",
        "SINGURA_AUTH_SECRET_FILE": str(path),
    }
    assert load_auth_secret(load_settings(external)) == base64.b64decode(secret)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_auth_secret(load_settings(external))
    with pytest.raises(ConfigError, match="both set"):
        load_auth_secret(load_settings({**external, "SINGURA_AUTH_SECRET": secret}))
    with pytest.raises(ConfigError, match="SINGURA_AUTH_SECRET_FILE"):
        load_auth_secret(load_settings({"DATABASE_URL": external["DATABASE_URL"]}))
