"""Round trips per RPC, counted: each statement the vault sends to PostgreSQL (BEGIN and
COMMIT included) is one, so a change that adds one to a hot path fails here.

The goal (#12) is one per read and two per write; where a budget is above that, the
comment says what the remaining trips are."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from google.protobuf import duration_pb2
from structlog.testing import capture_logs

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.composition.access import build_access
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, store
from tests.support.polling import until
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault

POOL_SIZE = 4


@pytest.fixture
async def counting_vault(
    service_dsn: str, key_manager: keys.KeyManager, auth_secret: bytes
) -> AsyncIterator[Vault]:
    """A vault whose every statement is logged (DB_SLOW_QUERY_MS=0)."""
    db = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=POOL_SIZE, slow_query_ms=0)
    )
    access = build_access(db, auth_secret)
    vault = await start_vault(Components(db, key_manager=key_manager, access=access))
    await until(lambda: access.key_cache_live)
    yield vault
    await stop_vault(vault)
    await db.close()


async def trips(make_call: Any) -> list[str]:
    """The statements the fewest of a few identical calls sent, by query name (BEGIN and
    COMMIT are unnamed). The first use of a statement on a pooled connection also
    prepares it and, for array parameters, looks up their types: that happens once per
    connection, so the steady state is the least over more calls than connections.
    The health monitor's pings carry no rpc_method and are left out."""
    fewest: list[str] | None = None
    for _ in range(POOL_SIZE + 2):
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
            await make_call()
        sent = [
            str(e["query"]) for e in events if e["event"] == "db_slow_query" and "rpc_method" in e
        ]
        if fewest is None or len(sent) < len(fewest):
            fewest = sent
    assert fewest is not None
    return fewest


async def test_round_trips_per_rpc_stay_within_budget(counting_vault: Vault) -> None:
    """Authentication from the cache adds none; a read is one statement that enters its
    scope itself (migration 013); a reveal adds its audit event; a batch of 10 reveals
    costs what one does."""
    vault = counting_vault
    org, conn = await tenant(vault)
    stored = await store(vault, org, conn, canary("trips"))
    get = await trips(
        lambda: vault.credentials.GetCredential(
            crpb.GetCredentialRequest(organization_id=org, credential_id=stored.id)
        )
    )
    # A call alone is a coalesced batch of one (migration 022): still one statement.
    assert get == ["credential_get_batch"], get
    reads = {
        "connection_get_scoped": lambda: vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=org, connection_id=conn)
        ),
        "connection_list_scoped": lambda: vault.connections.ListConnections(
            cpb.ListConnectionsRequest(organization_id=org)
        ),
        "organization_get_scoped": lambda: vault.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=org)
        ),
        "organization_list_scoped": lambda: vault.organizations.ListOrganizations(
            opb.ListOrganizationsRequest()
        ),
        "credential_list_scoped": lambda: vault.credentials.ListCredentials(
            crpb.ListCredentialsRequest(organization_id=org, connection_id=conn)
        ),
        "credential_versions_scoped": lambda: vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
        ),
        "credential_expiring_scoped": lambda: vault.credentials.ListExpiringCredentials(
            crpb.ListExpiringCredentialsRequest(
                organization_id=org, within=duration_pb2.Duration(seconds=604800)
            )
        ),
    }
    for name, call in reads.items():
        assert await trips(call) == [name]
    reveal = crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS)
    revealed = await trips(lambda: vault.credentials.RevealCredential(reveal))
    # The read, then the audit event (which records whether the vault could open it).
    assert revealed == ["credential_for_reveal_batch", "audit_append_batch"], revealed
    batch = crpb.BatchRevealCredentialsRequest(
        organization_id=org,
        items=[crpb.BatchRevealItem(connection_id=conn, type=ACCESS)] * 10,
    )
    batched = await trips(lambda: vault.credentials.BatchRevealCredentials(batch))
    # One read and one audit statement for all 10.
    assert batched == ["credential_for_reveal_scoped", "audit_append_scoped"], batched
    stored_trips = await trips(
        lambda: vault.credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org, connection_id=conn, type=ACCESS, value=canary("trips-2")
            )
        )
    )
    # What sealing needs (migration 014), then supersede and insert in one statement.
    assert stored_trips == ["credential_store_plan_batch", "credential_store_batch"]
