"""Database limits turn into clear, retryable statuses, never hangs."""

from __future__ import annotations

import asyncpg
import grpc

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.access import AccessService
from tests.support.messages import org_message
from tests.support.status import expect_status
from tests.support.vault import start_vault, stop_vault


async def test_exhausted_pool_is_unavailable_after_the_connect_timeout(
    service_dsn: str, key_manager: keys.KeyManager, access_service: AccessService
) -> None:
    """With every pooled connection held, a call fails UNAVAILABLE after DB_CONNECT_TIMEOUT."""
    db = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=1, connect_timeout_ms=300)
    )
    # Authentication goes through access_service's own pool: only the call's
    # transaction waits for the busy connection.
    vault = await start_vault(Components(db, key_manager=key_manager, access=access_service))
    try:
        async with db.admin(read_only=True):  # the only connection is busy elsewhere
            await expect_status(
                vault.organizations.ListOrganizations(opb.ListOrganizationsRequest(), timeout=10),
                grpc.StatusCode.UNAVAILABLE,
                "DB_CONNECT_TIMEOUT",
            )
    finally:
        await stop_vault(vault)
        await db.close()


async def test_lock_wait_past_the_query_timeout_is_deadline_exceeded(
    service_dsn: str,
    owner_dsn: str,
    key_manager: keys.KeyManager,
    access_service: AccessService,
) -> None:
    """A statement stuck behind another transaction's lock is cancelled at DB_QUERY_TIMEOUT."""
    db = await Database.connect(
        service_dsn, PoolSettings(min_size=1, max_size=3, query_timeout_ms=300)
    )
    vault = await start_vault(Components(db, key_manager=key_manager, access=access_service))
    owner = await asyncpg.connect(owner_dsn)
    try:
        org = (
            await vault.organizations.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message())
            )
        ).organization
        async with owner.transaction():
            await owner.execute("SELECT set_config('singura.organization_id', $1, true)", org.id)
            await owner.execute(
                "SELECT 1 FROM singura.organizations WHERE id = $1 FOR UPDATE", org.id
            )
            await expect_status(
                vault.organizations.DeleteOrganization(
                    opb.DeleteOrganizationRequest(organization_id=org.id), timeout=10
                ),
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "DB_QUERY_TIMEOUT",
            )
    finally:
        await owner.close()
        await stop_vault(vault)
        await db.close()
