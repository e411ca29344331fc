"""Signed audit checkpoints and their offline check: checkpoints over RPC, a chain
grown by stored credentials, the audit CLI run against a vault, and exported files."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from singura_vault.proto.singura.vault.v1 import audit_pb2 as pb
from singura_vault.proto.singura.vault.v1 import audit_pb2_grpc as pb_grpc
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from tests.support.cli import CLI
from tests.support.vault import Vault


def audit(vault: Vault) -> pb_grpc.AuditServiceStub:
    return pb_grpc.AuditServiceStub(vault.channel)


async def checkpoint(vault: Vault, org: str) -> pb.AuditCheckpoint:
    answer = await audit(vault).CreateAuditCheckpoint(
        pb.CreateAuditCheckpointRequest(organization_id=org)
    )
    return answer.checkpoint


async def grow(vault: Vault, org: str, conn: str, count: int, tag: str) -> None:
    from google.protobuf import field_mask_pb2

    for i in range(count):
        await vault.connections.UpdateConnection(
            cpb.UpdateConnectionRequest(
                connection=cpb.Connection(organization_id=org, id=conn, display_name=f"{tag}{i}"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )


def cli(args: list[str], vault: Vault, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(SINGURA_API_KEY=vault.admin_key, SINGURA_DATA_DIR=str(tmp_path / "cli-data"))
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def export_files(vault: Vault, org: str, tmp_path: Path) -> tuple[Path, Path, Path]:
    await asyncio.to_thread(tmp_path.mkdir, exist_ok=True)
    events, checkpoints, public = (tmp_path / n for n in ("e.jsonl", "c.jsonl", "pub.pem"))
    for path in (events, checkpoints):
        path.unlink(missing_ok=True)
    address = ["--address", vault.address]
    exported = await asyncio.to_thread(
        cli,
        ["audit", "export", "--organization", org, "--output", str(events),
         "--checkpoints", str(checkpoints), *address],
        vault,
        tmp_path,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    key = await asyncio.to_thread(
        cli, ["audit", "public-key", "--output", str(public), *address], vault, tmp_path
    )
    assert key.returncode == 0, key.stderr
    return events, checkpoints, public
