"""Authentication from memory: verified keys are cached per process, dropped on every
change the database announces, bypassed while announcements may be missed; rate-limit
tokens are leased from the shared bucket in batches and never overspent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.domain.api_keys import KeyLookup
from singura_vault.errors import Unauthenticated
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.repositories.api_keys import ApiKeyRepository
from singura_vault.service.access import AccessService, RateLimit
from singura_vault.service.rate_limit import lease_size
from tests.support.api_keys import make_key
from tests.support.auth import bearer
from tests.support.polling import first_refusal, until
from tests.support.postgres import PostgresServer
from tests.support.vault import Stubs, Vault, start_vault, stop_vault
from tests.support.vault_process import serve_process

R = apb.API_KEY_ROLE_READER


class CountingRepository(ApiKeyRepository):
    """Counts the database lookups authentication makes."""

    lookups = 0

    async def lookup(self, key_id: str, digest: bytes) -> KeyLookup:
        self.lookups += 1
        return await super().lookup(key_id, digest)


@pytest.fixture
async def counted(
    db: Database, key_manager: keys.KeyManager, auth_secret: bytes
) -> AsyncIterator[tuple[Vault, AccessService, CountingRepository]]:
    repository = CountingRepository(db)
    access = AccessService(repository, auth_secret, RateLimit(0, 1))
    vault = await start_vault(Components(db, key_manager=key_manager, access=access))
    await until(lambda: access.key_cache_live)
    yield vault, access, repository
    await stop_vault(vault)


async def test_a_cached_key_authenticates_without_the_database_until_it_is_revoked(
    counted: tuple[Vault, AccessService, CountingRepository],
) -> None:
    """50 calls with one key cost one lookup; its revocation drops it from the cache
    when the change commits, and the next call is refused."""
    vault, access, repository = counted
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=_org())
        )
    ).organization
    key = await make_key(vault, org.id, (R,))
    header = f"Bearer {key}"
    before = repository.lookups
    for _ in range(50):
        principal = await access.authenticate(header)
    assert principal.organization_id is not None
    assert repository.lookups - before == 1
    with pytest.raises(Unauthenticated):
        await access.authenticate(f"Bearer {key[:-4]}abcd")  # a wrong secret: not cached
    await vault.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=key[4:20]))
    stubs = vault.as_key(key)
    refused = await first_refusal(
        lambda: stubs.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=org.id)
        )
    )
    assert refused == grpc.StatusCode.UNAUTHENTICATED


async def test_a_lost_listener_bypasses_the_cache_until_it_listens_again(
    counted: tuple[Vault, AccessService, CountingRepository],
    postgres: PostgresServer,
    database_name: str,
) -> None:
    """When the LISTEN connection is killed, caching stops at once (every call asks the
    database) until the subscription is back, and then resumes."""
    vault, access, repository = counted
    header = f"Bearer {vault.admin_key}"
    await access.authenticate(header)
    killer = await asyncpg.connect(postgres.superuser_dsn)
    try:
        killed = await killer.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid, 10000) FROM "
            "pg_stat_activity WHERE datname = $1 "
            "AND application_name = 'singura-vault-listener') t",
            database_name,
        )
    finally:
        await killer.close()
    assert killed == 1
    await until(lambda: not access.key_cache_live)
    before = repository.lookups
    await access.authenticate(header)
    await access.authenticate(header)
    if not access.key_cache_live:  # still bypassed: both calls asked the database
        assert repository.lookups - before == 2
    await until(lambda: access.key_cache_live)
    before = repository.lookups
    await access.authenticate(header)
    assert repository.lookups == before + 1  # the cache was emptied when it was lost
    before = repository.lookups
    for _ in range(10):
        await access.authenticate(header)
    assert repository.lookups == before


def test_lease_sizes() -> None:
    """A lease is a twentieth of the larger of rate and burst, 1 to 100, never more
    than the burst."""
    assert lease_size(500, 1000) == 50
    assert lease_size(0.01, 40) == 2
    assert lease_size(1, 3) == 1
    assert lease_size(100_000, 200_000) == 100


async def test_two_processes_never_admit_more_than_the_bucket_holds(
    vault: Vault, service_dsn: str, auth_secret: bytes, root_key: str
) -> None:
    """Two vault processes, one key with a 40-token bucket (refill 0.01/s), 60 calls on
    each at once: at most 40 pass (at least 38: a process may be left holding one
    token of its last lease), the rest are RESOURCE_EXHAUSTED with retry-after-ms."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=_org())
        )
    ).organization
    key = await make_key(vault, org.id, (R,))
    limits = {"SINGURA_RATE_LIMIT_RPS": "0.01", "SINGURA_RATE_LIMIT_BURST": "40"}
    async with (
        serve_process(vault, service_dsn, auth_secret, root_key, **limits) as first,
        serve_process(vault, service_dsn, auth_secret, root_key, **limits) as second,
    ):
        channels = [grpc.aio.insecure_channel(a, interceptors=bearer(key)) for a in (first, second)]
        try:
            request = opb.GetOrganizationRequest(organization_id=org.id)
            calls = [
                Stubs.on(channel).organizations.GetOrganization(request)
                for channel in channels
                for _ in range(60)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            for channel in channels:
                await channel.close()
    passed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(passed) + len(refused) == 120
    assert 38 <= len(passed) <= 40, len(passed)
    assert {r.code() for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    trailers = [dict(r.trailing_metadata() or ()) for r in refused]
    assert all(int(t["retry-after-ms"]) > 0 for t in trailers)


def _org() -> opb.Organization:
    from tests.support.messages import org_message

    return org_message()
