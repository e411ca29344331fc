"""A Node.js client (clients/node/smoke.mjs) talks to the vault: "any language" holds.

The client loads the .proto files at run time with @grpc/proto-loader and runs the
newcomer's path against a real vault: organization, connection, store, reveal, audit.
Node and npm are required: a machine without them fails this test, it does not skip.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.canaries import canary
from tests.conftest import Vault

NODE_DIR = Path(__file__).resolve().parent.parent / "clients" / "node"
# Written into node_modules after a successful `npm ci`: the lock file it installed.
STAMP = NODE_DIR / "node_modules" / ".singura-installed-lock"
NPM_TIMEOUT_S = 300
SMOKE_TIMEOUT_S = 60


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: this test runs the Node.js client in clients/node "
            "and needs Node.js 20+ with npm (Debian: apt-get install nodejs npm)"
        )
    return path


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((NODE_DIR / name).read_bytes())
    return digest.hexdigest()


async def _run(
    *args: str, cwd: Path, limit_s: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a command without blocking the event loop the vault fixture serves on."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(args)} did not finish within {limit_s:.0f} s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def _ensure_node_modules(npm: str) -> None:
    """`npm ci` only when node_modules is missing or was installed from another lock file."""
    wanted = _lock_digest()
    if STAMP.is_file() and STAMP.read_text().strip() == wanted:
        return
    # --ignore-scripts: the dependencies need no install scripts (protobufjs's only
    # prints a version hint), and a test run should not execute any.
    code, stdout, stderr = await _run(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        cwd=NODE_DIR,
        limit_s=NPM_TIMEOUT_S,
    )
    assert code == 0, f"npm ci failed in {NODE_DIR} (exit {code}):\n{stdout}\n{stderr}"
    STAMP.write_text(wanted + "\n")


async def test_node_client_smoke(vault: Vault) -> None:
    """smoke.mjs creates, stores, reveals and reads the audit trail; exit 0 and a summary."""
    node = _tool("node")
    npm = _tool("npm")
    await _ensure_node_modules(npm)
    secret = canary("node")
    env = {
        **os.environ,
        "VAULT_ADDRESS": vault.address,
        "VAULT_API_KEY": vault.admin_key,
        "VAULT_SECRET_VALUE": secret,
    }
    code, stdout, stderr = await _run(
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
    await _ensure_node_modules(_tool("npm"))
    env = {
        **os.environ,
        "VAULT_ADDRESS": vault.address,
        "VAULT_API_KEY": "svk_0000000000000000_not-a-real-key",
    }
    code, stdout, stderr = await _run(
        node, "smoke.mjs", cwd=NODE_DIR, env=env, limit_s=SMOKE_TIMEOUT_S
    )
    assert code == 1, stderr
    assert stdout == ""
    assert "smoke: FAILED: CreateOrganization failed: UNAUTHENTICATED" in stderr
