"""clients/typescript/README.md's connect example (``readme-example connect``), run as
written against a real vault and the loopback OAuth provider, with httpx as the browser.

The example is a small node:http app: ``GET /connect`` calls
``vault.oauth.startAuthorization`` and redirects to the provider, ``GET /oauth/callback``
checks the state against its cookie and calls ``vault.oauth.completeAuthorization``. The
test saves the README's ``tsconfig.json`` and ``connect.ts`` into a project whose
node_modules link the client, TypeScript and @types/node of clients/typescript (what the
first example's ``npm install`` makes, without its run time), runs the README's run
block with ``PORT=0``, reads the redirect URI from the line it prints, registers that
URI with the provider and the organization's Slack OAuth client, and follows the
redirects by hand. Node and npm are required: a machine without them fails, never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.canaries import canary
from tests.support.messages import org_message
from tests.support.node_tools import ensure_node_modules, run, tool
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.typescript_readme import README, example_env, readme_blocks
from tests.support.vault import Vault

ROOT = Path(__file__).resolve().parents[2]
TS_DIR = ROOT / "clients" / "typescript"
BUILD_TIMEOUT_S = 120
# From starting the run block (npx tsc, then node) to its "listening" line.
START_TIMEOUT_S = 120
LINE_TIMEOUT_S = 30
_LISTENING = re.compile(
    r"^listening: open http://127\.0\.0\.1:(\d+)/connect "
    r"\(redirect URI (http://127\.0\.0\.1:\d+/oauth/callback)\)$"
)
_CONNECTED = re.compile(r"^connected Acme Slack: connection ([0-9a-f-]{36})$")


def _normalized(lines: list[str]) -> list[str]:
    """Output lines without the run's port and connection id."""
    return [
        re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", re.sub(r"[0-9a-f-]{36}", "<id>", line))
        for line in lines
    ]


@pytest.fixture(scope="module")
async def built_client() -> None:
    """npm ci (only when the lock changed) and npm run build, once for this module."""
    npm = tool("npm", "runs the connect example in clients/typescript/README.md")
    tool("node", "runs the connect example in clients/typescript/README.md")
    await ensure_node_modules(npm, TS_DIR)
    code, stdout, stderr = await run(npm, "run", "build", cwd=TS_DIR, limit_s=BUILD_TIMEOUT_S)
    assert code == 0, f"npm run build (tsc) failed (exit {code}):\n{stdout}\n{stderr}"


def _project(directory: Path) -> str:
    """The example's project, as the README's first example leaves it, plus connect.ts;
    returns the connect example's run block."""
    directory.mkdir()
    (directory / "package.json").write_text(
        json.dumps({"name": "vault-example", "private": True, "type": "module"}),
        encoding="utf-8",
    )
    modules = directory / "node_modules"
    for name, target in (
        ("@singura/vault-client", TS_DIR),
        ("typescript", TS_DIR / "node_modules" / "typescript"),
        ("@types/node", TS_DIR / "node_modules" / "@types" / "node"),
    ):
        (modules / name).parent.mkdir(parents=True, exist_ok=True)
        (modules / name).symlink_to(target, target_is_directory=True)
    (modules / ".bin").mkdir()
    (modules / ".bin" / "tsc").symlink_to(Path("..") / "typescript" / "bin" / "tsc")

    text = README.read_text(encoding="utf-8")
    tsconfig = [b for b in readme_blocks(text) if b.kind == "file" and b.file == "tsconfig.json"]
    blocks = readme_blocks(text, "connect")
    assert [(b.kind, b.file) for b in blocks] == [
        ("file", "connect.ts"),
        ("run", None),
        ("output", None),
    ], "the README's connect example: connect.ts, the run block, its output"
    for block in [*tsconfig, *blocks]:
        if block.kind == "file":
            assert block.file is not None
            (directory / block.file).write_text(block.body, encoding="utf-8")
    return blocks[1].body


def _printed_output() -> list[str]:
    blocks = readme_blocks(README.read_text(encoding="utf-8"), "connect")
    return next(b.body for b in blocks if b.kind == "output").splitlines()


@dataclass
class App:
    """The running example, the browser that talks to it, and the vault set-up behind it."""

    process: asyncio.subprocess.Process
    connect_url: str
    redirect_uri: str
    first_line: str
    org: str
    vault: Vault
    provider: FakeOAuthProvider
    browser: httpx.AsyncClient

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(LINE_TIMEOUT_S):
            raw = await self.process.stdout.readline()
        assert raw, "the example exited"
        return raw.decode().rstrip("\n")

    async def to_callback(self, browser: httpx.AsyncClient | None = None) -> str:
        """/connect, then the provider's consent: the callback URL the provider sent the
        browser to (not followed yet)."""
        started = await self.browser.get(self.connect_url)
        assert started.status_code == 302, started.text
        assert self.browser.cookies.get("connect_state"), "/connect set no state cookie"
        consent = await self.browser.get(started.headers["location"])
        assert consent.status_code == 302, consent.text
        callback: str = consent.headers["location"]
        assert callback.startswith(self.redirect_uri + "?")
        return callback


@pytest.fixture
async def app(
    built_client: None, vault: Vault, provider: FakeOAuthProvider, tmp_path: Path
) -> AsyncIterator[App]:
    bash = tool("bash", "runs the connect example in clients/typescript/README.md")
    run_block = _project(tmp_path / "vault-example")
    org = (
        await vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message(plan=opb.PLAN_ENTERPRISE))
        )
    ).organization.id
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "admin-api-key").write_text(vault.admin_key + "\n", encoding="ascii")
    (data_dir / "admin-api-key").chmod(0o600)
    env = {**example_env(vault, data_dir), "ORG": org, "PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        bash,
        "-euo",
        "pipefail",
        "-c",
        run_block,
        cwd=tmp_path / "vault-example",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # one process group: bash, npx and node stop together
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            first = (await process.stdout.readline()).decode().rstrip("\n")
        listening = _LISTENING.match(first)
        if listening is None:
            assert process.stderr is not None
            process.kill()
            err = (await process.stderr.read()).decode(errors="replace")
            pytest.fail(f"the example did not start: {first!r}\n{err}")
        redirect_uri = listening[2]
        assert redirect_uri == f"http://127.0.0.1:{listening[1]}/oauth/callback"

        # The organization's Slack client, with the app's callback as its redirect URI.
        client_id = f"ts-connect-{uuid.uuid4().hex[:8]}"
        secret = canary("client-secret")
        provider.register_client(client_id, secret)
        provider.register_redirect_uri(client_id, redirect_uri)
        await vault.oauth.SetOAuthClient(
            pb.SetOAuthClientRequest(
                client=pb.OAuthClient(
                    organization_id=org,
                    platform=cpb.PLATFORM_SLACK,
                    client_id=client_id,
                    client_secret=secret,
                    token_url=provider.slack_token_url,
                    revocation_url=provider.slack_revocation_url,
                    authorization_url=provider.slack_authorization_url,
                    redirect_uris=[redirect_uri],
                )
            )
        )
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as browser:
            yield App(
                process,
                f"http://127.0.0.1:{listening[1]}/connect",
                redirect_uri,
                first,
                org,
                vault,
                provider,
                browser,
            )
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(LINE_TIMEOUT_S):
                await process.communicate()
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def test_connect_example_creates_a_connection_and_prints_its_id(app: App) -> None:
    """Browser -> the example's /connect -> provider consent -> the example's callback:
    an ACTIVE Slack connection with the provider's identity and the requested scope, its
    id printed and shown as the README says, and no state or code in the output."""
    app.provider.set_identity(workspace_id="T-ts-acme", user_id="U-ts-alice")
    callback = await app.to_callback()
    query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    landed = await app.browser.get(callback)
    assert landed.status_code == 200, landed.text
    printed = await app.line()
    connected = _CONNECTED.match(printed)
    assert connected, printed
    connection_id = connected[1]
    assert landed.text == printed + "\n"
    assert _normalized([app.first_line, printed]) == _normalized(_printed_output())

    got = await app.vault.connections.GetConnection(
        cpb.GetConnectionRequest(organization_id=app.org, connection_id=connection_id)
    )
    connection = got.connection
    assert connection.status == cpb.CONNECTION_STATUS_ACTIVE
    assert connection.platform == cpb.PLATFORM_SLACK
    assert connection.display_name == "Acme Slack"
    assert (connection.platform_workspace_id, connection.platform_user_id) == (
        "T-ts-acme",
        "U-ts-alice",
    )
    assert list(connection.requested_scopes) == ["channels:read"]
    token = await app.vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=app.org, connection_id=connection_id)
    )
    assert app.provider.is_access_token_valid(token.access_token)

    # The state cookie is cleared, and nothing secret reached the page or the output.
    assert not app.browser.cookies.get("connect_state")
    os.killpg(app.process.pid, signal.SIGTERM)
    stdout, stderr = await app.process.communicate()
    output = f"{app.first_line}\n{printed}\n{stdout.decode()}\n{stderr.decode()}"
    for secret in (query["state"], query["code"], token.access_token, app.vault.admin_key):
        assert secret not in output + landed.text, "a secret appeared in the example's output"


async def test_connect_example_shows_the_reason_when_the_user_denies(app: App) -> None:
    """The user presses Deny: the callback gets error=access_denied, the example shows
    OAUTH_AUTHORIZATION_DENIED and the provider's error, and no connection is made."""
    app.provider.deny_next_authorization()
    calls = app.provider.token_calls
    callback = await app.to_callback()
    assert parse_qs(urlsplit(callback).query)["error"] == ["access_denied"]
    landed = await app.browser.get(callback)
    assert landed.status_code == 400
    expected = "not connected: OAUTH_AUTHORIZATION_DENIED (the provider answered access_denied)"
    assert landed.text == expected + "\n"
    assert await app.line() == expected
    assert app.provider.token_calls == calls
    listed = await app.vault.connections.ListConnections(
        cpb.ListConnectionsRequest(organization_id=app.org)
    )
    assert list(listed.connections) == []


async def test_connect_example_refuses_a_callback_from_another_browser(app: App) -> None:
    """A callback without the state cookie of the browser that started it (a link sent to
    someone else) is refused before the vault is called, and the state stays usable."""
    callback = await app.to_callback()
    calls = app.provider.token_calls
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as other:
        refused = await other.get(callback)
    assert refused.status_code == 400
    assert "not started in this browser" in refused.text
    assert app.provider.token_calls == calls
    landed = await app.browser.get(callback)
    assert landed.status_code == 200, landed.text
    assert _CONNECTED.match(await app.line())
