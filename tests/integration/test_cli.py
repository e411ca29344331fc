"""The ``singura-vault`` command as a user runs it: a real process, real signals."""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
from pathlib import Path

import grpc
import pytest

from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.keys import generate_encryption_key
from singura_vault.proto.singura.vault.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    connections_pb2_grpc,
    credentials_pb2_grpc,
    organizations_pb2_grpc,
)
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.cli import Serving, free_port, run
from tests.support.messages import connection_message, org_message


def test_serve_embedded_end_to_end(cli_env: dict[str, str]) -> None:
    """serve starts embedded PostgreSQL, answers RPCs and probes, and stops cleanly on SIGTERM."""
    address = cli_env["SINGURA_LISTEN"]
    data_dir = Path(cli_env["SINGURA_DATA_DIR"])
    vault = Serving(cli_env)
    admin_key_file = data_dir / "admin-api-key"
    admin_key = admin_key_file.read_text().strip()
    # README's way to get it: the command finds the file through SINGURA_DATA_DIR.
    printed = run(["keys", "admin-key"], cli_env)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == admin_key
    auth = (("authorization", f"Bearer {admin_key}"),)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListOrganizations(opb.ListOrganizationsRequest())
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]  # RpcError declares no code(); AioRpcError has it
            created = stub.CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message(slug="cli-org")),
                metadata=auth,
            ).organization
            connection = (
                connections_pb2_grpc.ConnectionServiceStub(channel)
                .CreateConnection(
                    cpb.CreateConnectionRequest(connection=connection_message(created.id)),
                    metadata=auth,
                )
                .connection
            )
            credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
            secret = canary("cli")
            credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=created.id,
                    connection_id=connection.id,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    value=secret,
                ),
                metadata=auth,
            )
        probe = run(["health", "--address", address], cli_env)
        assert probe.returncode == 0, probe.stderr
        assert "SERVING" in probe.stdout
    finally:
        code = vault.terminate()
    assert code == 0
    names = [e["event"] for e in vault.events]
    assert names.index("vault_stopping") < names.index("vault_stopped")
    # Startup's objects are frozen out of the collector's walks (singura_vault/heap.py).
    (serving,) = [e for e in vault.events if e["event"] == "vault_serving"]
    assert isinstance(serving["heap_frozen"], int)
    assert serving["heap_frozen"] > 10_000
    assert not EmbeddedPostgres(data_dir).is_running()
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o007 == 0, "data dir is open to others"
    keyring = data_dir / "keyring.json"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert stat.S_IMODE(admin_key_file.stat().st_mode) == 0o600
    created_events = [e for e in vault.events if e["event"] == "bootstrap_admin_key_created"]
    assert [e["path"] for e in created_events] == [str(admin_key_file)]
    assert not any(admin_key in json.dumps(e) for e in vault.events)
    assert "development_keyring_in_use" in [e["event"] for e in vault.events]
    assert not any(secret in json.dumps(e) for e in vault.events)
    # Nothing in the log may carry a database URL's secret parts or a stack trace.
    with_traces = [
        (e["event"], e.get("task"), e.get("error_type")) for e in vault.events if "exception" in e
    ]
    assert not with_traces, with_traces

    # The data survives a restart of vault and database.
    vault = Serving(cli_env)
    try:
        with grpc.insecure_channel(address) as channel:
            stub = organizations_pb2_grpc.OrganizationServiceStub(channel)
            again = stub.GetOrganization(
                opb.GetOrganizationRequest(organization_id=created.id), metadata=auth
            ).organization
            revealed = credentials_pb2_grpc.CredentialServiceStub(channel).RevealCredential(
                crpb.RevealCredentialRequest(
                    organization_id=created.id,
                    connection_id=connection.id,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                ),
                metadata=auth,
            )
        assert admin_key_file.read_text().strip() == admin_key  # no second bootstrap
        assert again.slug == "cli-org"
        assert revealed.value == secret  # same development keyring after the restart
        status = run(["migrate", "status"], cli_env)
        assert status.returncode == 0, status.stderr
        assert "applied  001_initial_schema" in status.stdout
    finally:
        assert vault.terminate() == 0


def test_serve_takes_a_fresh_loose_mode_data_dir(cli_env: dict[str, str]) -> None:
    """A new, empty SINGURA_DATA_DIR of mode 0755: serve writes its development key
    files there first, and must still take the directory over (it used to refuse it,
    seeing files that were not the embedded server's)."""
    parent = Path(cli_env["SINGURA_DATA_DIR"])
    parent.chmod(0o711)  # as root, the embedded server's own user must pass through it
    loose = parent / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    vault = Serving({**cli_env, "SINGURA_DATA_DIR": str(loose)})
    try:
        assert (loose / "keyring.json").exists()
        assert stat.S_IMODE(loose.stat().st_mode) in (0o700, 0o710)
    finally:
        assert vault.terminate() == 0


@pytest.mark.parametrize(
    ("host", "cause"),
    [("127.0.0.1:{port}", "connection was refused"), ("db.invalid:5432", "does not resolve")],
)
def test_an_unreachable_database_is_named_with_its_cause(
    cli_env: dict[str, str], host: str, cause: str
) -> None:
    """serve says which variable, which host and port, and why; SINGURA_DB_WAIT makes it
    try again for a while first, logging each attempt."""
    endpoint = host.format(port=free_port())
    env = {
        **cli_env,
        "DATABASE_URL": f"postgresql://singura_service:hunter2@{endpoint}/singura",
        "ENCRYPTION_KEY": generate_encryption_key(),
        "SINGURA_AUTH_SECRET": base64.b64encode(os.urandom(32)).decode(),
        "SINGURA_DB_WAIT": "1s",
    }
    refused = run(["serve"], env)
    assert refused.returncode != 0
    assert f"cannot reach PostgreSQL at {endpoint} (DATABASE_URL): " in refused.stderr
    assert cause in refused.stderr
    assert "gave up after 1 s (SINGURA_DB_WAIT)" in refused.stderr
    assert '"db_waiting"' in refused.stderr
    assert "hunter2" not in refused.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["serve", "--bogus"],
        ["health", "--bogus"],
        ["keys", "bogus"],
        ["migrate"],
        ["audit", "export"],
        ["keys", "rotate", "--bogus"],
    ],
)
def test_every_usage_error_exits_1(cli_env: dict[str, str], args: list[str]) -> None:
    """docs/operations.md#exit-codes: usage errors exit 1 from every parser (2 is a bad
    configuration, and for health a failed connection: a typo must not read as that)."""
    result = run(args, cli_env)
    assert result.returncode == 1, result.stderr
    assert "usage: singura-vault" in result.stderr


def test_health_probe_exit_codes(cli_env: dict[str, str]) -> None:
    """The probe exits 2 when nothing listens and 1 on bad arguments (grpc_health_probe codes)."""
    nobody = run(["health", "--address", cli_env["SINGURA_LISTEN"], "--timeout", "0.5"], cli_env)
    assert nobody.returncode == 2
    assert "failed to connect" in nobody.stderr
    bad = run(["health", "--timeout", "soon"], cli_env)
    assert bad.returncode == 1


def test_client_commands_dial_singura_listen_and_name_missing_commands(
    cli_env: dict[str, str],
) -> None:
    """With SINGURA_LISTEN set, health dials it (loopback for a wildcard host) without
    --address; a missing sub-command is named COMMAND, not argparse's internal name."""
    port = cli_env["SINGURA_LISTEN"].rpartition(":")[2]
    env = {**cli_env, "SINGURA_LISTEN": f"0.0.0.0:{port}"}
    nobody = run(["health", "--timeout", "0.5"], env)
    assert nobody.returncode == 2
    assert f"127.0.0.1:{port}" in nobody.stderr
    helped = run(["health", "--help"], env)
    assert f"127.0.0.1:{port}" in helped.stdout
    assert "SINGURA_API_KEY" not in helped.stdout  # health sends no key
    exported = run(["audit", "export", "--help"], cli_env)
    assert "SINGURA_API_KEY" in exported.stdout
    assert "(default jsonl)" in exported.stdout
    assert "SINGURA_AUTH_SECRET" in run(["serve", "--help"], cli_env).stdout
    for group in ("keys", "migrate", "audit"):
        bare = run([group], cli_env)
        assert bare.returncode == 1
        assert "required: COMMAND" in bare.stderr
        assert "_command" not in bare.stderr


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("SINGURA_LISTEN", "nonsense", "SINGURA_LISTEN"),
        ("SINGURA_LISTEN", "0.0.0.0:50051", "SINGURA_ALLOW_INSECURE"),
        ("DB_POOL_MAX", "many", "DB_POOL_MAX"),
        ("DB_POOL_MIN", "50", "DB_POOL_MIN (50) is larger than DB_POOL_MAX"),
        ("SINGURA_HEALTH_INTERVAL", "nan", "SINGURA_HEALTH_INTERVAL"),
        ("DATABASE_URL", "mysql://root:hunter2@db/x", "DATABASE_URL must be a PostgreSQL URL"),
        # One definition of embedded mode: an owner URL alone means an external database.
        (
            "DATABASE_OWNER_URL",
            "postgresql://owner:hunter2@db.example/x",
            "DATABASE_OWNER_URL is set but DATABASE_URL is not",
        ),
        ("ENCRYPTION_KEY", "hunter2-is-a-32-character-secret", "singura-vault keys generate"),
        ("SINGURA_ENV", "production", "ENCRYPTION_KEY"),
        ("SINGURA_TLS_CERT", "/nonexistent/cert.pem", "SINGURA_TLS_KEY"),
        ("SINGURA_ENV", "production+root-key", "SINGURA_AUDIT_SIGNING_KEY_FILE"),
        ("SINGURA_ENV", "production+keys", "requires TLS on the gRPC port"),
    ],
)
def test_bad_configuration_refuses_to_start(
    cli_env: dict[str, str], variable: str, value: str, fragment: str
) -> None:
    """A bad variable stops serve with exit 2 and a message naming it, never echoing secrets."""
    env = {**cli_env, variable: value}
    if value.startswith("production+"):  # keys configured: the next check speaks
        env.update(
            SINGURA_ENV="production",
            ENCRYPTION_KEY=generate_encryption_key(),
            SINGURA_AUTH_SECRET=generate_encryption_key(),
        )
    if value == "production+keys":  # ... and the audit signing key: the transport check
        signing_key = Path(cli_env["SINGURA_DATA_DIR"]) / "signing-key"
        created = run(["keys", "generate-signing-key", "--output", str(signing_key)], cli_env)
        assert created.returncode == 0, created.stderr
        assert "BEGIN PUBLIC KEY" in created.stdout
        env.update(SINGURA_AUDIT_SIGNING_KEY_FILE=str(signing_key))
    result = run(["serve"], env)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_generate_prints_a_valid_root_key(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`keys generate` prints a 32-byte base64 key, or writes a 0600 keyring file once."""
    import base64

    printed = run(["keys", "generate"], cli_env)
    assert printed.returncode == 0
    assert len(base64.b64decode(printed.stdout.strip(), validate=True)) == 32
    keyring = tmp_path / "keyring.json"
    written = run(["keys", "generate", "--keyring-file", str(keyring)], cli_env)
    assert written.returncode == 0, written.stderr
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    again = run(["keys", "generate", "--keyring-file", str(keyring)], cli_env)
    assert again.returncode == 2
    assert str(keyring) in again.stderr


def test_audit_export_verify_and_prune_commands(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`audit export` writes every event (jsonl and csv, mode 0600), `audit verify`
    confirms the chain, and `audit prune` runs against the same database."""
    vault = Serving(cli_env)
    try:
        data_dir = Path(cli_env["SINGURA_DATA_DIR"])
        admin_key = (data_dir / "admin-api-key").read_text().strip()
        auth = (("authorization", f"Bearer {admin_key}"),)
        with grpc.insecure_channel(cli_env["SINGURA_LISTEN"]) as channel:
            org = (
                organizations_pb2_grpc.OrganizationServiceStub(channel)
                .CreateOrganization(
                    opb.CreateOrganizationRequest(organization=org_message()), metadata=auth
                )
                .organization
            )
            for _ in range(3):
                connections_pb2_grpc.ConnectionServiceStub(channel).CreateConnection(
                    cpb.CreateConnectionRequest(connection=connection_message(org.id)),
                    metadata=auth,
                )
        address = ["--address", cli_env["SINGURA_LISTEN"]]
        jsonl = tmp_path / "audit.jsonl"
        exported = run(
            ["audit", "export", "--organization", org.id, "--output", str(jsonl), *address],
            cli_env,
        )
        assert exported.returncode == 0, exported.stderr
        events = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert [e["action"] for e in events] == ["organization.created"] + [
            "connection.created"
        ] * 3
        assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600
        # Embedded development mode signs checkpoints with a key it made in the data dir.
        signing_key = data_dir / "audit-signing-key"
        assert stat.S_IMODE(signing_key.stat().st_mode) == 0o600
        signed = jsonl.with_name("signed.jsonl")
        checkpoints = jsonl.with_name("checkpoints.jsonl")
        public_key = jsonl.with_name("public.pem")
        with grpc.insecure_channel(cli_env["SINGURA_LISTEN"]) as channel:
            audit_pb2_grpc.AuditServiceStub(channel).CreateAuditCheckpoint(
                audit_pb2.CreateAuditCheckpointRequest(organization_id=org.id), metadata=auth
            )
        for command in (
            ["audit", "export", "--organization", org.id, "--output", str(signed),
             "--checkpoints", str(checkpoints), *address],
            ["audit", "public-key", "--output", str(public_key), *address],
        ):  # fmt: skip
            done = run(command, cli_env)
            assert done.returncode == 0, done.stderr
        offline = run(
            ["audit", "verify", "--export", str(signed), "--checkpoints", str(checkpoints),
             "--public-key", str(public_key)],
            cli_env,
        )  # fmt: skip
        assert offline.returncode == 0, offline.stderr
        assert "ok: 4 events (positions 1 to 4) and 1 signed checkpoint verified" in offline.stdout
        as_csv = tmp_path / "audit.csv"
        run(
            [
                "audit",
                "export",
                "--organization",
                org.id,
                "--format",
                "csv",
                "--output",
                str(as_csv),
                "--since",
                "1d",
                *address,
            ],
            cli_env,
        )
        lines = as_csv.read_text().splitlines()
        assert lines[0].startswith("id,organization_id,sequence")
        assert len(lines) == 1 + 4
        verified = run(["audit", "verify", "--organization", org.id, *address], cli_env)
        assert verified.returncode == 0, verified.stderr
        assert verified.stdout.startswith("ok: 4 events verified")
        system = run(["audit", "verify", "--system", *address], cli_env)
        assert system.returncode == 0, system.stderr
        pruned = run(["audit", "prune", "--older-than", "365d"], cli_env)
        assert pruned.returncode == 0, pruned.stderr
        assert "pruned 0 events" in pruned.stdout
        bad = run(["audit", "prune", "--older-than", "forever"], cli_env)
        assert bad.returncode == 1
    finally:
        assert vault.terminate() == 0


def test_keys_rotation_commands_against_a_running_vault(cli_env: dict[str, str]) -> None:
    """`keys rotate`, `keys rotate-data-key` and `keys rewrap --wait` rotate the
    development keyring and re-encrypt a stored credential, which stays readable."""
    vault = Serving(cli_env)
    try:
        data_dir = Path(cli_env["SINGURA_DATA_DIR"])
        admin_key = (data_dir / "admin-api-key").read_text().strip()
        auth = (("authorization", f"Bearer {admin_key}"),)
        secret = canary("cli-rotation")
        with grpc.insecure_channel(cli_env["SINGURA_LISTEN"]) as channel:
            org = (
                organizations_pb2_grpc.OrganizationServiceStub(channel)
                .CreateOrganization(
                    opb.CreateOrganizationRequest(organization=org_message()), metadata=auth
                )
                .organization
            )
            conn = (
                connections_pb2_grpc.ConnectionServiceStub(channel)
                .CreateConnection(
                    cpb.CreateConnectionRequest(connection=connection_message(org.id)),
                    metadata=auth,
                )
                .connection
            )
            credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
            request = crpb.RevealCredentialRequest(
                organization_id=org.id,
                connection_id=conn.id,
                type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
            )
            credentials.StoreCredential(
                crpb.StoreCredentialRequest(
                    organization_id=org.id,
                    connection_id=conn.id,
                    type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                    value=secret,
                ),
                metadata=auth,
            )
            address = ["--address", cli_env["SINGURA_LISTEN"]]
            rotated = run(["keys", "rotate", *address], cli_env)
            assert rotated.returncode == 0, rotated.stderr
            assert "1 data key rewrapped" in rotated.stdout
            keyring = json.loads((data_dir / "keyring.json").read_text())
            assert len(keyring["keys"]) == 2
            assert keyring["primary"] in rotated.stdout
            new_dek = run(["keys", "rotate-data-key", "--organization", org.id, *address], cli_env)
            assert "data key v2" in new_dek.stdout
            rewrapped = run(["keys", "rewrap", "--wait", *address], cli_env)
            assert rewrapped.returncode == 0, rewrapped.stderr
            assert "completed, 1/1 credentials" in rewrapped.stdout
            status = run(["keys", "status", "--organization", org.id, *address], cli_env)
            assert "v1   ACTIVE    0 credentials" in status.stdout
            assert "v2   ACTIVE    1 credential " in status.stdout
            assert credentials.RevealCredential(request, metadata=auth).value == secret
            assert secret not in rotated.stdout + new_dek.stdout + rewrapped.stdout
    finally:
        assert vault.terminate() == 0


def test_sigterm_during_writes_loses_no_acknowledged_write(cli_env: dict[str, str]) -> None:
    """SIGTERM while clients store credentials: every acknowledged store survives, nothing
    half-written remains (one current version per credential, versions consecutive)."""

    vault = Serving({**cli_env, "SINGURA_SHUTDOWN_GRACE": "10"})
    data_dir = Path(cli_env["SINGURA_DATA_DIR"])
    admin_key = (data_dir / "admin-api-key").read_text().strip()
    auth = (("authorization", f"Bearer {admin_key}"),)
    address = cli_env["SINGURA_LISTEN"]
    with grpc.insecure_channel(address) as channel:
        org = (
            organizations_pb2_grpc.OrganizationServiceStub(channel)
            .CreateOrganization(
                opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE)),
                metadata=auth,
            )
            .organization
        )
        conns = [
            connections_pb2_grpc.ConnectionServiceStub(channel)
            .CreateConnection(
                cpb.CreateConnectionRequest(connection=connection_message(org.id)), metadata=auth
            )
            .connection.id
            for _ in range(4)
        ]
    acknowledged: dict[str, list[str]] = {c: [] for c in conns}
    stores_seen = threading.Semaphore(0)

    def writer(conn: str) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = credentials_pb2_grpc.CredentialServiceStub(channel)
            while True:
                value = canary("shutdown")
                try:
                    stub.StoreCredential(
                        crpb.StoreCredentialRequest(
                            organization_id=org.id,
                            connection_id=conn,
                            type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                            value=value,
                        ),
                        metadata=auth,
                        timeout=10,
                    )
                except grpc.RpcError:
                    return  # the vault is going away: this write was not acknowledged
                acknowledged[conn].append(value)
                stores_seen.release()

    threads = [threading.Thread(target=writer, args=(c,)) for c in conns]
    for thread in threads:
        thread.start()
    for _ in range(40):  # let writes flow before the signal
        assert stores_seen.acquire(timeout=30)
    assert vault.terminate() == 0
    for thread in threads:
        thread.join(timeout=30)
    assert sum(len(v) for v in acknowledged.values()) >= 40

    vault = Serving(cli_env)
    try:
        with grpc.insecure_channel(address) as channel:
            credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
            for conn, values in acknowledged.items():
                versions = credentials.ListCredentialVersions(
                    crpb.ListCredentialVersionsRequest(
                        organization_id=org.id,
                        connection_id=conn,
                        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                        page_size=1000,
                    ),
                    metadata=auth,
                ).credentials
                numbers = sorted(v.version for v in versions)
                assert numbers == list(range(1, len(numbers) + 1))
                assert [v.state for v in versions].count(crpb.CREDENTIAL_STATE_ACTIVE) == 1
                assert len(numbers) >= len(values)  # every acknowledged store is there
                for position, value in enumerate(values, start=1):
                    revealed = credentials.RevealCredential(
                        crpb.RevealCredentialRequest(
                            organization_id=org.id,
                            connection_id=conn,
                            type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
                            version=position,
                        ),
                        metadata=auth,
                    )
                    assert revealed.value == value
    finally:
        assert vault.terminate() == 0


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("postgresql://vault@db.internal:5432/singura?sslmode=verify-full", True),
        ("postgresql://vault@db.internal/singura?sslmode=require", True),
        ("postgresql://vault@db.internal/singura?sslmode=prefer", False),
        ("postgresql://vault@db.internal/singura", False),
        ("postgresql://vault@/singura?host=/var/run/postgresql", True),
        # Multi-host (failover) URLs: every host must be safe.
        ("postgresql://vault@db1:5432,db2:5432/singura?sslmode=verify-full", True),
        ("postgresql://vault@db1,db2/singura?target_session_attrs=read-write", False),
        ("postgresql://vault@/singura?host=/run/a,/run/b&port=5432,5433", True),
        ("postgresql://vault@/singura?host=/run/a,db2", False),
    ],
)
def test_production_database_urls_must_use_tls(url: str, secure: bool) -> None:
    """In production an external DATABASE_URL needs sslmode require/verify-*, or a socket."""
    from singura_vault.process import database_url_uses_tls

    assert database_url_uses_tls(url) is secure
