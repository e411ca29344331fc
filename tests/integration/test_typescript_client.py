"""The TypeScript client (clients/typescript) against a real vault, and its generated code.

``npm ci`` (only when the lock changed), ``npm run build`` (tsc, strict), then
``node --test dist/test/`` with SINGURA_ADDRESS and SINGURA_API_KEY (the admin key)
pointing at the ``vault`` fixture, and SINGURA_TLS_* at a second vault on the same
database that requires mutual TLS (certificates made at test time). A second test
regenerates src/gen/ with ``npm run generate`` in a copy of the tree and fails on any
difference from the checked-in code. Node and npm are required: a machine without
them fails, it does not skip.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.server import VaultServer
from singura_vault.service.access import AccessService
from singura_vault.tls import TlsSettings
from tests.support.canaries import canary
from tests.support.certs import make_pki
from tests.support.node_tools import ensure_node_modules, run, tool
from tests.support.vault import Vault

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "clients" / "typescript"
GEN_DIR = Path("src") / "gen"
BUILD_TIMEOUT_S = 120
NODE_TEST_TIMEOUT_S = 120
# test/{vault,policy,tls,errors}.test.ts hold this many tests today; fewer passing means
# some stopped running.
MIN_NODE_TESTS = 24
TEST_FILES = "dist/test/*.test.js"
# Canaries handed to the node tests (SINGURA_SECRET_VALUES), one per value they store.
SECRETS = 4


def _tool(name: str) -> str:
    return tool(name, "builds and runs the TypeScript client in clients/typescript")


def _buf_dir() -> str:
    """The folder of the buf binary (buf-bin installs it beside the interpreter)."""
    beside = str(Path(sys.executable).parent)
    buf = shutil.which("buf", path=beside) or shutil.which("buf")
    if buf is None:
        pytest.fail("buf not found beside sys.executable or on PATH; install the test extra")
    return str(Path(buf).parent)


def _redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _tap_count(output: str, name: str) -> int:
    found = re.findall(rf"^# {name} (\d+)$", output, flags=re.MULTILINE)
    assert found, f"node --test printed no '# {name}' summary line:\n{output}"
    return int(found[-1])


async def test_typescript_client_against_a_real_vault(
    vault: Vault,
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    tmp_path: Path,
) -> None:
    """tsc builds the client and its tests; node --test passes them against the vault,
    in plaintext and over mutual TLS."""
    node = _tool("node")
    npm = _tool("npm")
    await ensure_node_modules(npm, TS_DIR)

    # A clean build: a test file removed from test/ must not keep running from dist/.
    shutil.rmtree(TS_DIR / "dist", ignore_errors=True)
    code, stdout, stderr = await run(npm, "run", "build", cwd=TS_DIR, limit_s=BUILD_TIMEOUT_S)
    assert code == 0, f"npm run build (tsc) failed (exit {code}):\n{stdout}\n{stderr}"

    # The same vault (database, keys, admin key) behind mutual TLS.
    pki = make_pki(tmp_path / "pki")
    tls_server = VaultServer(
        Components(db, key_manager=key_manager, access=access_service), health_interval_s=0.2
    )
    tls_port = await tls_server.start(
        "127.0.0.1:0", tls=TlsSettings(pki.server_cert, pki.server_key, pki.ca_cert)
    )
    # The values the node tests store: canaries, so the run's log scan looks for them.
    secrets = [canary("ts") for _ in range(SECRETS)]
    env = {
        **os.environ,
        "SINGURA_ADDRESS": vault.address,
        "SINGURA_API_KEY": vault.admin_key,
        "SINGURA_SECRET_VALUES": ",".join(secrets),
        "SINGURA_TLS_ADDRESS": f"127.0.0.1:{tls_port}",
        "SINGURA_TLS_CA": str(pki.ca_cert),
        "SINGURA_TLS_CLIENT_CERT": str(pki.client_cert),
        "SINGURA_TLS_CLIENT_KEY": str(pki.client_key),
    }
    # The compiled test files by name: `node --test dist/test/` on Node 20, and on
    # the Node versions that read the arguments as glob patterns too.
    test_files = sorted(p.relative_to(TS_DIR).as_posix() for p in TS_DIR.glob(TEST_FILES))
    assert len(test_files) >= 4, f"expected 4 compiled test files in dist/test/: {test_files}"
    try:
        code, stdout, stderr = await run(
            node,
            "--test",
            "--test-reporter=tap",
            *test_files,
            cwd=TS_DIR,
            env=env,
            limit_s=NODE_TEST_TIMEOUT_S,
        )
    finally:
        await tls_server.stop(0)
    output = _redact(f"{stdout}\n{stderr}", vault.admin_key, *secrets)
    assert code == 0, f"node --test {' '.join(test_files)} exited {code}:\n{output}"
    assert _tap_count(stdout, "fail") == 0, output
    passed = _tap_count(stdout, "pass")
    assert passed >= MIN_NODE_TESTS, f"only {passed} node tests passed:\n{output}"
    assert not any(secret in stdout + stderr for secret in secrets), (
        "a stored secret value appeared in the test output"
    )
    assert vault.admin_key not in stdout + stderr, "the API key appeared in the test output"


def _files(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


async def test_typescript_generated_code_is_current(tmp_path: Path) -> None:
    """`npm run generate` in a copy of the tree reproduces src/gen/ byte for byte."""
    npm = _tool("npm")
    await ensure_node_modules(npm, TS_DIR)

    # The copy keeps the layout buf.gen.yaml relies on: ../../protos with the repo's
    # buf.yaml above it, proto/ beside it, and the installed plugin in node_modules.
    copy = tmp_path / "clients" / "typescript"
    copy.mkdir(parents=True)
    shutil.copy2(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(TS_DIR / "proto", copy / "proto")
    for name in ("package.json", "buf.gen.yaml"):
        shutil.copy2(TS_DIR / name, copy / name)
    (copy / "node_modules").symlink_to(TS_DIR / "node_modules", target_is_directory=True)

    env = {**os.environ, "PATH": _buf_dir() + os.pathsep + os.environ.get("PATH", "")}
    code, stdout, stderr = await run(
        npm, "run", "generate", cwd=copy, env=env, limit_s=BUILD_TIMEOUT_S
    )
    assert code == 0, f"npm run generate failed (exit {code}):\n{stdout}\n{stderr}"

    fresh = _files(copy / GEN_DIR)
    checked_in = _files(TS_DIR / GEN_DIR)
    assert fresh, "npm run generate wrote nothing"
    assert "singura/vault/v1/organizations_pb.ts" in fresh
    assert "google/rpc/error_details_pb.ts" in fresh
    drift = sorted(
        name for name in fresh.keys() | checked_in.keys() if fresh.get(name) != checked_in.get(name)
    )
    assert not drift, (
        "clients/typescript/src/gen is out of date with protos/ (or the plugin); "
        f"run `npm run generate` in clients/typescript. Differing files: {drift}"
    )
