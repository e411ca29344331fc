"""Signed audit checkpoints: an exported chain verified offline against them catches
what the hash chain alone cannot -- a re-hashed chain, a cut-off tail, a removed
checkpoint -- as well as reordering and forged signatures."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from singura_vault import keys
from singura_vault.config import PoolSettings
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as pb_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.repositories.audit_checkpoints import AuditCheckpointRepository
from singura_vault.service.audit_checkpoints import AuditCheckpointService
from singura_vault.service.audit_offline import canonical, read_jsonl, verify_offline
from tests.support.api_keys import make_key
from tests.support.audit import chain_of, verify
from tests.support.audit_checkpoints import (
    audit,
    checkpoint,
    cli,
    export_files,
    grow,
)
from tests.support.postgres import PostgresServer
from tests.support.status import expect_status
from tests.support.tenants import new_org
from tests.support.vault import Vault


def load(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path.read_text(encoding="utf-8").splitlines(), str(path))


async def rehash_after_editing(
    postgres: PostgresServer, database: str, org: str, sequence: int
) -> None:
    """What a superuser can do that the hash chain alone cannot show: edit an event,
    then recompute every later hash and the chain head."""
    conn = await asyncpg.connect(postgres.dsn("postgres", database))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE singura.audit_logs SET actor = 'someone-else' "
                "WHERE organization_id = $1 AND chain_seq = $2",
                org,
                sequence,
            )
            rows = await conn.fetch(
                "SELECT id, chain_seq, prev_hash, singura.audit_canonical(a) AS canonical "
                "FROM singura.audit_logs a WHERE organization_id = $1 AND chain_seq >= $2 "
                "ORDER BY chain_seq",
                org,
                sequence,
            )
            previous = rows[0]["prev_hash"]
            for row in rows:
                digest = hashlib.sha256(previous + row["canonical"].encode()).digest()
                await conn.execute(
                    "UPDATE singura.audit_logs SET prev_hash = $2, hash = $3 WHERE id = $1",
                    row["id"],
                    previous,
                    digest,
                )
                previous = digest
            await conn.execute(
                "UPDATE singura.audit_chain_heads SET last_hash = $2 WHERE chain_key = $1",
                org,
                previous,
            )
    finally:
        await conn.close()


async def test_an_export_verifies_offline_and_a_rehashed_chain_does_not(
    signing_vault: Vault, postgres: PostgresServer, database_name: str, tmp_path: Path
) -> None:
    """Export + checkpoints + public key verify offline (`audit verify --export`); after a
    superuser edits an event and re-hashes the rest, the database's own verification
    still passes, but the offline check against the earlier checkpoint names it."""
    vault = signing_vault
    org, events = await chain_of(vault, 6)
    conn = events[1].resource_id
    first = await checkpoint(vault, org)
    assert first.sequence == 6
    assert first.previous_signature == ""
    await grow(vault, org, conn, 3, "b")
    second = await checkpoint(vault, org)
    assert (second.sequence, second.previous_signature) == (9, first.signature)
    again = await checkpoint(vault, org)  # the head did not move: the same checkpoint
    assert again.signature == second.signature

    exported, checkpoints, public = await export_files(vault, org, tmp_path)
    verified = await asyncio.to_thread(
        cli,
        ["audit", "verify", "--export", str(exported), "--checkpoints", str(checkpoints),
         "--public-key", str(public)],
        vault,
        tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "ok: 9 events (positions 1 to 9) and 2 signed checkpoints verified" in verified.stdout

    await rehash_after_editing(postgres, database_name, org, 4)
    assert (await verify(vault, org)).ok  # the chain alone cannot tell
    tampered, _, _ = await export_files(vault, org, tmp_path / "after")
    report = verify_offline(load(tampered), load(checkpoints), public.read_text())
    assert not report.ok
    assert "position 6 does not match the checkpoint" in report.problem
    assert "re-hashed" in report.problem


async def test_offline_verification_catches_truncation_reordering_and_forgery(
    signing_vault: Vault, signer: keys.AuditSigner, tmp_path: Path
) -> None:
    """Each attack on the files (or on the chain before it was exported) is named:
    events cut off after a checkpoint, two events swapped, a checkpoint removed from
    the middle, a forged signature, another key."""
    vault = signing_vault
    org, events = await chain_of(vault, 4)
    conn = events[1].resource_id
    for round_ in range(3):
        await grow(vault, org, conn, 2, f"r{round_}")
        await checkpoint(vault, org)
    exported, checkpoints, public = await export_files(vault, org, tmp_path)
    good_events, good_checkpoints, key = load(exported), load(checkpoints), public.read_text()
    assert len(good_events) == 10
    assert len(good_checkpoints) == 3
    assert verify_offline(good_events, good_checkpoints, key).ok

    cut = verify_offline(good_events[:-1], good_checkpoints, key)
    assert "the export ends at position 9" in cut.problem
    assert "removed from the end" in cut.problem

    swapped = list(good_events)
    swapped[4], swapped[5] = swapped[5], swapped[4]
    assert "position 5 is missing" in verify_offline(swapped, good_checkpoints, key).problem

    gap = [good_checkpoints[0], good_checkpoints[2]]
    assert "a checkpoint between them is missing" in verify_offline(good_events, gap, key).problem

    forged = [dict(c) for c in good_checkpoints]
    forged[1]["hash"] = good_events[0]["hash"]
    assert "bad signature" in verify_offline(good_events, forged, key).problem

    other = keys.AuditSigner.generate_file(tmp_path / "other-key")
    assert other.key_id != signer.key_id
    wrong_key = verify_offline(good_events, good_checkpoints, other.public_key_pem)
    assert f"not by the given public key ({other.key_id})" in wrong_key.problem

    edited = [dict(e) for e in good_events]
    edited[2]["actor"] = "someone-else"
    assert "does not match its hash" in verify_offline(edited, good_checkpoints, key).problem


async def test_python_canonical_matches_the_database_for_awkward_text(
    signing_vault: Vault, owner_dsn: str, tmp_path: Path
) -> None:
    """The offline verifier's rebuild of singura.audit_canonical() is byte-identical to
    the database's, for quotes, escapes, control characters and non-ASCII text."""
    vault = signing_vault
    org = await new_org(vault)
    conn = (
        await vault.connections.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=cpb.Connection(
                    organization_id=org,
                    platform=cpb.PLATFORM_SLACK,
                    platform_user_id='U"\\1',
                    platform_workspace_id="T1",
                    display_name="Zürich ☃ \u2028 end",
                )
            )
        )
    ).connection.id
    await vault.connections.UpdateConnectionStatus(
        cpb.UpdateConnectionStatusRequest(
            organization_id=org,
            connection_id=conn,
            status=cpb.CONNECTION_STATUS_ERROR,
            reason='token "revoked" by admin \\ ünïcode 🚫 \u2028 /end',
        )
    )
    exported, _, _ = await export_files(vault, org, tmp_path)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await owner.execute("SELECT set_config('singura.organization_id', $1, false)", org)
        rows = await owner.fetch(
            "SELECT chain_seq, singura.audit_canonical(a) AS c FROM singura.audit_logs a "
            "WHERE organization_id = $1 ORDER BY chain_seq",
            org,
        )
    finally:
        await owner.close()
    ours = [canonical(e) for e in load(exported)]
    assert ours == [r["c"] for r in rows]
    assert any('\\"revoked\\"' in c and "🚫" in c for c in ours)

    # The serializer itself, on what the API refuses but a trigger could record.
    samples = [
        {"b": 1, "a": [1.5, -0.25, None, True], "aa": {"\x01\n\t\b\f\r": "\x1f\x7f"}},
        {"é": "ü", "ab": "", "b": {"c": [], "d": {}}, "\\": '"'},
    ]
    owner = await asyncpg.connect(owner_dsn)
    try:
        for sample in samples:
            expected = await owner.fetchval("SELECT $1::jsonb::text", json.dumps(sample))
            event = {"id": "1", "sequence": "1", "occur_time": "1970-01-01T00:00:00Z",
                     "details": sample}  # fmt: skip
            assert canonical(event).endswith(", " + expected + "]")
    finally:
        await owner.close()


async def test_periodic_signing_in_two_processes_signs_each_moved_head_once(
    signing_vault: Vault, service_dsn: str, signer: keys.AuditSigner
) -> None:
    """Two signers (two pools, as two vault processes) running rounds at once: every
    chain whose head moved gets exactly one new checkpoint per round, and the
    checkpoints of each chain stay one line."""
    vault = signing_vault
    orgs = [await new_org(vault) for _ in range(3)]
    pools = [
        await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2)) for _ in range(2)
    ]
    try:
        services = [AuditCheckpointService(AuditCheckpointRepository(p), signer) for p in pools]
        # Both None while the vault's own sequencer, woken by the writes above (a pass at
        # most every 10 ms), holds the lock signing shares with it: that round is retried.
        first: list[int | None] = [None, None]
        async with asyncio.timeout(30):
            while first == [None, None]:
                first = list(await asyncio.gather(*(s.sign_due() for s in services)))
        # Three organizations' chains and the system chain; the other signer either
        # found the round taken (None) or came after it, with nothing left (0).
        assert sorted(first, key=lambda n: -1 if n is None else n)[-1] == 4
        assert sorted(first, key=lambda n: -1 if n is None else n)[0] in (None, 0)
        assert await services[0].sign_due() == 0  # nothing moved since
        await new_org(vault)  # one new chain
        # None while the vault's own sequencer, woken by that write, holds the lock
        # signing shares with it (it chains pending events first).
        signed = None
        async with asyncio.timeout(30):
            while signed is None:
                signed = await services[1].sign_due()
        assert signed == 1
    finally:
        for pool in pools:
            await pool.close()
    for org in orgs:
        stream = audit(vault).ExportAuditCheckpoints(
            pb.ExportAuditCheckpointsRequest(organization_id=org)
        )
        chain = [c async for message in stream for c in message.checkpoints]
        assert len(chain) == 1
        assert chain[0].key_id == signer.key_id


async def test_without_a_signing_key_checkpoints_say_how_to_configure_one(
    vault: Vault,
) -> None:
    """A vault with no audit signing key answers FAILED_PRECONDITION naming the setting;
    another organization's key may not checkpoint a chain that is not its own."""
    org = await new_org(vault)
    await expect_status(
        audit(vault).CreateAuditCheckpoint(pb.CreateAuditCheckpointRequest(organization_id=org)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SINGURA_AUDIT_SIGNING_KEY_FILE",
    )
    other = vault.as_key(await make_key(vault, await new_org(vault), (1,)))
    await expect_status(
        pb_grpc.AuditServiceStub(other.channel).CreateAuditCheckpoint(
            pb.CreateAuditCheckpointRequest(organization_id=org)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_checkpoint_files_are_plain_jsonl(tmp_path: Path) -> None:
    """read_jsonl names the file and line of anything that is not a JSON object."""
    with pytest.raises(ValueError, match="line 2: not JSON"):
        read_jsonl(["{}", "nope"], "export x")
    assert read_jsonl([json.dumps({"a": 1}), ""], "export x") == [{"a": 1}]
