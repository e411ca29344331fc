"""Customer-managed keys per organization (#29 item 5), end to end over gRPC with a real
OpenBao dev server: set a provider, migrate an organization's data keys to its own
transit key and back, the tenant's kill switch, resumability, audit and events, and
the provider's token kept out of logs and errors."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from structlog.testing import capture_logs

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.domain.sealed import StoredDataKey
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.service.access import AccessService
from singura_vault.service.data_keys import migrate_data_key
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.credentials import ACCESS, reveal, store
from tests.support.error_details import details
from tests.support.error_details import refused as refused_with
from tests.support.openbao import BaoServer, start_bao
from tests.support.status import expect_status
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault

TTL_S = 60.0
UNAVAILABLE_REASON = "ORGANIZATION_KEY_UNAVAILABLE"


class Clock:
    """A monotonic clock the test moves (the organization-key cache TTL is read on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class TenantKey:
    name: str
    token: str


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    server = start_bao(tmp_path_factory.mktemp("bao-cmek"))
    try:
        server.enable_transit()
        yield server
    finally:
        server.stop()


@pytest.fixture
def tenant_key(bao: BaoServer) -> TenantKey:
    """The tenant's own derived transit key and a least-privilege token for it."""
    name = f"tenant-{secrets.token_hex(4)}"
    bao.create_key(name, derived=True)
    return TenantKey(name, bao.vault_token(name))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cmek_components(db: Database, root_key: str, access: AccessService, clock: Clock) -> Components:
    manager = keys.KeyManager(
        keys.LocalKeyring.from_encryption_key(root_key), organization_key_ttl_s=TTL_S, clock=clock
    )
    return Components(db, key_manager=manager, access=access)


@pytest.fixture
async def cmek(
    db: Database, root_key: str, access_service: AccessService, clock: Clock
) -> AsyncIterator[tuple[Vault, Components]]:
    components = cmek_components(db, root_key, access_service, clock)
    running = await start_vault(components)
    yield running, components
    await stop_vault(running)


def set_request(
    org: str, bao: BaoServer, key: str, token: str
) -> kpb.SetOrganizationKeyProviderRequest:
    return kpb.SetOrganizationKeyProviderRequest(
        organization_id=org,
        address=bao.address,
        key_name=key,
        authentication=kpb.TransitAuthentication(token=token),
    )


async def data_key_roots(owner_dsn: str, org: str) -> list[str]:
    """As the schema owner, in the organization's scope: which root key wraps each live
    data key."""
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        rows = await owner.fetch(
            "SELECT root_key_id FROM singura.data_keys WHERE state = 'active' ORDER BY version"
        )
    finally:
        await owner.close()
    return [r["root_key_id"] for r in rows]


async def events_and_audit(
    owner_dsn: str, org: str
) -> tuple[list[tuple[str, dict[str, object]]], list[str]]:
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        events = await owner.fetch(
            "SELECT type, data::text AS data FROM singura.events ORDER BY cursor"
        )
        audit = await owner.fetch(
            "SELECT action, details::text AS details FROM singura.audit_logs "
            "WHERE organization_id = $1 ORDER BY id",
            uuid.UUID(org),
        )
    finally:
        await owner.close()
    return (
        [(e["type"], json.loads(e["data"])) for e in events],
        [a["action"] + " " + a["details"] for a in audit],
    )


async def test_setting_a_provider_is_validated_and_admin_only(
    cmek: tuple[Vault, Components], bao: BaoServer, tenant_key: TenantKey
) -> None:
    """A bad token or an unknown key is FAILED_PRECONDITION (ORGANIZATION_KEY_UNAVAILABLE)
    naming the address and key but never the token; an organization key may read the
    provider but not set it; nothing is stored for a refused provider."""
    vault, _ = cmek
    org, _conn = await tenant(vault)
    wrong_token = "s." + secrets.token_urlsafe(18)
    with capture_logs() as logged:
        refused = await expect_status(
            vault.keys.SetOrganizationKeyProvider(
                set_request(org, bao, tenant_key.name, wrong_token)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            bao.address,
            tenant_key.name,
        )
    assert wrong_token not in refused
    assert wrong_token not in repr(logged)
    missing = f"missing-{secrets.token_hex(3)}"
    await expect_status(
        vault.keys.SetOrganizationKeyProvider(
            set_request(org, bao, missing, bao.vault_token(missing))
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        missing,
        "does not exist",
    )
    await expect_status(
        vault.keys.SetOrganizationKeyProvider(
            kpb.SetOrganizationKeyProviderRequest(
                organization_id=org,
                address="http://bao.example.com:8200",
                key_name=tenant_key.name,
                authentication=kpb.TransitAuthentication(token=tenant_key.token),
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "address",
        "loopback",
    )
    reader = await vault.access.CreateApiKey(
        apb.CreateApiKeyRequest(organization_id=org, roles=[apb.API_KEY_ROLE_READER], name="r")
    )
    as_reader = vault.as_key(reader.secret)
    await expect_status(
        as_reader.keys.SetOrganizationKeyProvider(
            set_request(org, bao, tenant_key.name, tenant_key.token)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "admin",
    )
    status = await as_reader.keys.GetOrganizationKeyProvider(
        kpb.GetOrganizationKeyProviderRequest(organization_id=org)
    )
    assert not status.HasField("provider")
    assert not status.HasField("latest_migration")
    await expect_status(
        vault.keys.ClearOrganizationKeyProvider(
            kpb.ClearOrganizationKeyProviderRequest(organization_id=org)
        ),
        grpc.StatusCode.NOT_FOUND,
        "no key provider",
    )


async def test_migration_kill_switch_and_migration_back(
    cmek: tuple[Vault, Components],
    bao: BaoServer,
    tenant_key: TenantKey,
    owner_dsn: str,
    clock: Clock,
) -> None:
    """An organization's data keys move to its own transit key and back; while its key
    is disabled at its KMS its reveals and stores fail with ORGANIZATION_KEY_UNAVAILABLE
    (within the cache TTL), another organization's never do, and re-enabling the key
    restores service without a restart. Each step is audited and evented."""
    vault, components = cmek
    org, conn = await tenant(vault)
    other, other_conn = await tenant(vault)
    first = canary("cmek-first")
    await store(vault, org, conn, first)
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    second = canary("cmek-second")
    await store(vault, org, conn, second)
    await store(vault, other, other_conn, canary("other-org"))
    assert all(not r.startswith("org-transit:") for r in await data_key_roots(owner_dsn, org))

    with capture_logs() as logged:
        set_response = await vault.keys.SetOrganizationKeyProvider(
            set_request(org, bao, tenant_key.name, tenant_key.token)
        )
        provider_id = set_response.provider.id
        assert set_response.provider.address == bao.address
        assert set_response.migration.state == kpb.ORGANIZATION_KEY_MIGRATION_STATE_RUNNING
        assert set_response.migration.total == 2
        completed = await components.organization_key_migration.work_once()
        assert [str(m.id) for m in completed] == [set_response.migration.id]

        roots = await data_key_roots(owner_dsn, org)
        assert roots == [f"org-transit:{provider_id}:v1"] * 2
        assert all(not r.startswith("org-transit:") for r in await data_key_roots(owner_dsn, other))
        assert await reveal(vault, org, conn, version=1) == first
        assert await reveal(vault, org, conn) == second
        status = await vault.keys.GetOrganizationKeyProvider(
            kpb.GetOrganizationKeyProviderRequest(organization_id=org)
        )
        assert status.provider.id == provider_id
        assert status.provider.key_name == tenant_key.name
        assert status.latest_migration.state == kpb.ORGANIZATION_KEY_MIGRATION_STATE_COMPLETED
        assert status.latest_migration.done == 2

        # The kill switch: the tenant stops its key decrypting what it wrapped.
        bao.rotate_key(tenant_key.name)
        bao.ok("POST", f"transit/keys/{tenant_key.name}/config", {"min_decryption_version": 2})
        # Within the TTL the cached data key still serves; past it, the KMS decides.
        assert await reveal(vault, org, conn) == second
        clock.now += TTL_S + 1
        killed = await refused_with(
            vault.credentials.RevealCredential(
                crpb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            UNAVAILABLE_REASON,
        )
        message = killed.details() or ""
        assert bao.address in message, message
        assert tenant_key.name in message, message
        assert details(killed)["ErrorInfo"].metadata["key_name"] == tenant_key.name
        assert tenant_key.token not in message
        await refused_with(
            vault.credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=org, connection_id=conn, type=ACCESS, value=canary("refused")
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            UNAVAILABLE_REASON,
        )
        # Another organization is untouched.
        still_fine = canary("other-still-fine")
        await store(vault, other, other_conn, still_fine)
        assert await reveal(vault, other, other_conn) == still_fine

        # Re-enabled: service returns, same process, no restart.
        bao.ok("POST", f"transit/keys/{tenant_key.name}/config", {"min_decryption_version": 1})
        assert await reveal(vault, org, conn) == second
        third = canary("cmek-third")
        await store(vault, org, conn, third)
        assert await reveal(vault, org, conn) == third

        # And back to the global root key.
        cleared = await vault.keys.ClearOrganizationKeyProvider(
            kpb.ClearOrganizationKeyProviderRequest(organization_id=org)
        )
        assert cleared.migration.target_provider_id == ""
        assert cleared.migration.total == 2
        await components.organization_key_migration.work_once()
        assert all(not r.startswith("org-transit:") for r in await data_key_roots(owner_dsn, org))
        assert await reveal(vault, org, conn, version=1) == first
        assert await reveal(vault, org, conn) == third
        after = await vault.keys.GetOrganizationKeyProvider(
            kpb.GetOrganizationKeyProviderRequest(organization_id=org)
        )
        assert not after.HasField("provider")
        assert after.latest_migration.state == kpb.ORGANIZATION_KEY_MIGRATION_STATE_COMPLETED

    assert tenant_key.token not in repr(logged)
    events, audit = await events_and_audit(owner_dsn, org)
    changes = [d["change"] for t, d in events if t == "key.organization_provider_changed"]
    assert changes == ["set", "cleared"]
    migrated = [d for t, d in events if t == "key.organization_keys_migrated"]
    assert [m["target"] for m in migrated] == [f"org-transit:{provider_id}", "global"]
    actions = [a.split(" ", 1)[0] for a in audit]
    for action in (
        "organization_key_provider.set",
        "organization_key_provider.cleared",
        "organization_key_migration.started",
        "organization_key_migration.progress",
        "organization_key_migration.completed",
    ):
        assert action in actions, action
    assert not any(tenant_key.token in a for a in audit)
    other_events, _ = await events_and_audit(owner_dsn, other)
    assert not [t for t, _ in other_events if t.startswith("key.organization")]


async def test_an_interrupted_migration_is_resumed_by_another_process(
    cmek: tuple[Vault, Components],
    bao: BaoServer,
    tenant_key: TenantKey,
    owner_dsn: str,
    db: Database,
    root_key: str,
    access_service: AccessService,
    clock: Clock,
) -> None:
    """A migration stopped after one of two data keys (a killed process) is completed by
    the next worker, in a process that never saw it start (a fresh key manager)."""
    vault, components = cmek
    org, conn = await tenant(vault)
    value = canary("resume")
    await store(vault, org, conn, value)
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    started = await vault.keys.SetOrganizationKeyProvider(
        set_request(org, bao, tenant_key.name, tenant_key.token)
    )
    (migration,) = await components.organization_key_repository.running_migrations()

    async def one_key_then_die(stored: StoredDataKey) -> StoredDataKey:
        target = await components.organization_keys.load(
            uuid.UUID(org), uuid.UUID(started.provider.id)
        )
        moved = await migrate_data_key(components.key_manager, stored, target)
        return moved or stored

    prefix = f"org-transit:{started.provider.id}"
    assert await components.organization_key_repository.migrate_one(
        migration, prefix, one_key_then_die
    )
    roots = await data_key_roots(owner_dsn, org)
    assert sum(r.startswith(prefix) for r in roots) == 1
    midway = await vault.keys.GetOrganizationKeyProvider(
        kpb.GetOrganizationKeyProviderRequest(organization_id=org)
    )
    assert midway.latest_migration.state == kpb.ORGANIZATION_KEY_MIGRATION_STATE_RUNNING
    assert (midway.latest_migration.done, midway.latest_migration.total) == (1, 2)
    assert await reveal(vault, org, conn) == value  # readable mid-way: each row says its key

    another_process = cmek_components(db, root_key, access_service, clock)
    completed = await another_process.organization_key_migration.work_once()
    assert [str(m.id) for m in completed] == [started.migration.id]
    assert all(r.startswith(prefix) for r in await data_key_roots(owner_dsn, org))
    done = await vault.keys.GetOrganizationKeyProvider(
        kpb.GetOrganizationKeyProviderRequest(organization_id=org)
    )
    assert done.latest_migration.state == kpb.ORGANIZATION_KEY_MIGRATION_STATE_COMPLETED
    assert done.latest_migration.done == 2
    assert await reveal(vault, org, conn) == value


async def test_root_key_rotation_rewraps_the_sealed_provider_tokens(
    db: Database,
    root_key: str,
    access_service: AccessService,
    clock: Clock,
    bao: BaoServer,
    tenant_key: TenantKey,
) -> None:
    """A provider's token is sealed under the global root key: RotateRootKey rewraps it
    with the data keys, RetireRootKey refuses while one is still under the old key, and a
    vault that holds only the new root key still opens it (and so the tenant's data)."""

    async def running(manager: keys.KeyManager) -> tuple[Vault, Components]:
        components = Components(db, key_manager=manager, access=access_service)
        return await start_vault(components), components

    def manager(key: str, previous: tuple[str, ...] = ()) -> keys.KeyManager:
        return keys.KeyManager(
            keys.LocalKeyring.from_encryption_key(key, previous),
            organization_key_ttl_s=TTL_S,
            clock=clock,
        )

    vault, components = await running(manager(root_key))
    try:
        org, conn = await tenant(vault)
        value = canary("cmek-root-rotation")
        await store(vault, org, conn, value)
        await vault.keys.SetOrganizationKeyProvider(
            set_request(org, bao, tenant_key.name, tenant_key.token)
        )
        await components.organization_key_migration.work_once()
    finally:
        await stop_vault(vault)

    new_key = keys.generate_encryption_key()
    vault, _ = await running(manager(new_key, (root_key,)))
    try:
        old_root = keys.LocalKeyring.from_encryption_key(root_key).primary_key_id()
        retire_old = kpb.RetireKeyVersionRequest(root_key_id=old_root)
        await expect_status(
            vault.keys.RetireKeyVersion(retire_old),
            grpc.StatusCode.FAILED_PRECONDITION,
            "1 customer-managed key provider tokens",
        )
        await vault.keys.RotateRootKey(kpb.RotateRootKeyRequest())
        # Nothing needs the old key now: what refuses is only that an ENCRYPTION_KEY
        # root key is retired by leaving it out of ENCRYPTION_KEY_PREVIOUS.
        await expect_status(
            vault.keys.RetireKeyVersion(retire_old),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ENCRYPTION_KEY_PREVIOUS",
        )
    finally:
        await stop_vault(vault)

    vault, _ = await running(manager(new_key))
    try:
        assert await reveal(vault, org, conn) == value
    finally:
        await stop_vault(vault)


@dataclass
class Load:
    """Reveals of one organization's credential, again and again, each outcome recorded
    with the phases it started and ended in, until told to stop."""

    vault: Vault
    org: str
    conn: str
    value: str
    # (phase at start, phase at end, "ok" or the ErrorInfo reason / status name)
    outcomes: list[tuple[str, str, str]]
    done: int = 0

    async def run(self, phase: list[str], stop: asyncio.Event, progress: asyncio.Condition) -> None:
        while not stop.is_set():
            started_in = phase[0]
            try:
                revealed = await reveal(self.vault, self.org, self.conn)
                outcome = "ok" if revealed == self.value else "wrong value"
            except grpc.aio.AioRpcError as error:
                reason = details(error).get("ErrorInfo")
                outcome = reason.reason if reason is not None else error.code().name
            self.outcomes.append((started_in, phase[0], outcome))
            async with progress:
                self.done += 1
                progress.notify_all()


async def test_one_tenants_kill_switch_under_load_leaves_the_others_alone(
    cmek: tuple[Vault, Components], bao: BaoServer, clock: Clock
) -> None:
    """Two tenants with transit keys of their own and one on the global root key, all
    revealing at once: the first tenant disables its key mid-load; its calls keep working
    while its data key is cached (the TTL), then every one fails with
    ORGANIZATION_KEY_UNAVAILABLE; the second tenant's and the global tenant's calls never
    fail; re-enabling the key brings the first tenant back without a restart."""
    vault, components = cmek
    loads: list[Load] = []
    keys_of: list[TenantKey] = []
    for name in ("a", "b", "global"):
        org, conn = await tenant(vault)
        value = canary(f"cmek-load-{name}")
        await store(vault, org, conn, value)
        if name != "global":
            key = TenantKey(f"tenant-{name}-{secrets.token_hex(4)}", "")
            bao.create_key(key.name, derived=True)
            key.token = bao.vault_token(key.name)
            keys_of.append(key)
            await vault.keys.SetOrganizationKeyProvider(set_request(org, bao, key.name, key.token))
        loads.append(Load(vault, org, conn, value, []))
    await components.organization_key_migration.work_once()
    first, second, global_tenant = loads

    phase = ["before"]
    stop = asyncio.Event()
    progress = asyncio.Condition()

    async def calls_in_phase(count: int) -> None:
        """Wait (no clock) until every tenant made ``count`` calls that started in the
        current phase."""
        async with progress:
            await progress.wait_for(
                lambda: all(
                    sum(1 for s, e, _ in load.outcomes if s == e == phase[0]) >= count
                    for load in loads
                )
            )

    runners = [asyncio.create_task(load.run(phase, stop, progress)) for load in loads]
    try:
        await calls_in_phase(5)
        # The first tenant disables its key at its KMS: nothing it wrapped decrypts.
        bao.rotate_key(keys_of[0].name)
        bao.ok("POST", f"transit/keys/{keys_of[0].name}/config", {"min_decryption_version": 2})
        phase[0] = "disabled, within the cache bound"
        await calls_in_phase(5)
        clock.now += TTL_S + 1
        phase[0] = "disabled, past the bound"
        await calls_in_phase(5)
        bao.ok("POST", f"transit/keys/{keys_of[0].name}/config", {"min_decryption_version": 1})
        phase[0] = "re-enabled"
        await calls_in_phase(5)
    finally:
        stop.set()
        await asyncio.gather(*runners)

    def outcomes(load: Load, in_phase: str) -> set[str]:
        """What the calls wholly inside a phase got (a call in flight while the test
        flips the key or the clock may see either side)."""
        return {o for s, e, o in load.outcomes if s == e == in_phase}

    for other in (second, global_tenant):
        assert {o for _, _, o in other.outcomes} == {"ok"}, other.outcomes
    assert outcomes(first, "before") == {"ok"}
    assert outcomes(first, "disabled, within the cache bound") == {"ok"}
    assert outcomes(first, "disabled, past the bound") == {UNAVAILABLE_REASON}
    assert outcomes(first, "re-enabled") == {"ok"}
