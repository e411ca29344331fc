"""A Node.js client (clients/node/smoke.mjs) talks to the vault: "any language" holds.

The client loads the .proto files at run time with @grpc/proto-loader and runs the
newcomer's path against a real vault: organization, connection, store, reveal, audit.
Node and npm are required: a machine without them fails this test, it does not skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.canaries import canary
from tests.support.node_tools import ensure_node_modules, run, tool
from tests.support.vault import Vault

NODE_DIR = Path(__file__).resolve().parents[2] / "clients" / "node"
SMOKE_TIMEOUT_S = 60


def _tool(name: str) -> str:
    return tool(name, "runs the Node.js client in clients/node")


async def test_node_client_smoke(vault: Vault) -> None:
    """smoke.mjs creates, stores, reveals and reads the audit trail; exit 0 and a summary."""
    node = _tool("node")
    npm = _tool("npm")
    await ensure_node_modules(npm, NODE_DIR)
    secret = canary("node")
    env = {
        **os.environ,
        "VAULT_ADDRESS": vault.address,
        "VAULT_API_KEY": vault.admin_key,
        "VAULT_SECRET_VALUE": secret,
    }
    code, stdout, stderr = await run(
        node, "smoke.mjs", cwd=NODE_DIR, env=env, limit_s=SMOKE_TIMEOUT_S
    )
    assert code == 0, f"node smoke.mjs exited {code}:\n{stderr}"
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line JSON summary, got: {stdout!r}"
    summary = json.loads(lines[0])
    assert summary["ok"] is True
    assert summary["value_matches"] is True
    assert summary["proto_files"] == len(list((NODE_DIR.parent.parent / "protos").rglob("*.proto")))
    assert summary["credential_version"] == 1
    assert "credential.revealed" in summary["audit_actions"]
    assert {"organization.created", "connection.created"} <= set(summary["audit_actions"])
    assert secret not in stdout
    assert secret not in stderr
    assert vault.admin_key not in stdout + stderr


async def test_node_client_reports_a_refused_key(vault: Vault) -> None:
    """A wrong key: exit 1 and a message naming the call and the gRPC status."""
    node = _tool("node")
    await ensure_node_modules(_tool("npm"), NODE_DIR)
    env = {
        **os.environ,
        "VAULT_ADDRESS": vault.address,
        "VAULT_API_KEY": "svk_0000000000000000_not-a-real-key",
    }
    code, stdout, stderr = await run(
        node, "smoke.mjs", cwd=NODE_DIR, env=env, limit_s=SMOKE_TIMEOUT_S
    )
    assert code == 1, stderr
    assert stdout == ""
    assert "smoke: FAILED: CreateOrganization failed: UNAUTHENTICATED" in stderr
