"""The operator console (singura_vault/console/) against a real vault: its pages, its
sessions and their timeouts (an injected clock, no sleeps), CSRF refusal, its headers,
an organization key's confinement, and a scan of every page for stored secrets.

The console application runs in the test's event loop through httpx's ASGI transport
(the transport Starlette's TestClient is built on), so it and the vault share a loop;
tests/integration/test_console_browser.py runs the real `console` process in a real browser.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from singura_vault.console import overview
from singura_vault.console.app import create_app
from singura_vault.console.pages import audit as audit_pages
from singura_vault.console.security import CONTENT_SECURITY_POLICY
from singura_vault.console.sessions import SessionStore
from singura_vault.console.vault_client import ChannelSettings, OperatorKey, VaultClient
from singura_vault.console.web import SESSION_COOKIE
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from tests.support.audit import chain_pending_audit
from tests.support.console_seed import Seeded, seed
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.postgres import PostgresServer
from tests.support.vault import Vault

IDLE_S = 600.0
LIFETIME_S = 3600.0
PAGES = (
    "/connections",
    "/connections?failing=1",
    "/expiring?within=7",
    "/expiring?within=30",
    "/audit",
    "/keys",
    "/api-keys",
    "/orgs",
)
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Console:
    http: httpx.AsyncClient
    clock: FakeClock
    sessions: SessionStore

    async def sign_in(self, key: str, organization_id: str = "") -> httpx.Response:
        form = await self.http.get("/signin")
        token = _token(form.text)
        return await self.http.post(
            "/signin",
            data={"csrf_token": token, "api_key": key, "organization_id": organization_id},
        )

    async def token(self, path: str = "/connections") -> str:
        return _token((await self.http.get(path)).text)


def _token(html: str) -> str:
    match = TOKEN.search(html)
    assert match, "no CSRF token in the page"
    return match[1]


@pytest.fixture
async def console(vault: Vault) -> AsyncIterator[Console]:
    clock = FakeClock()
    sessions = SessionStore(clock=clock, idle_s=IDLE_S, lifetime_s=LIFETIME_S)
    client = VaultClient(ChannelSettings(vault.address))
    app = create_app(client, sessions=sessions)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.test") as http:
        yield Console(http, clock, sessions)
    await client.close()


@pytest.fixture
async def seeded(vault: Vault, provider: FakeOAuthProvider, owner_dsn: str) -> Seeded:
    return await seed(vault, provider, owner_dsn)


async def test_admin_sign_in_lands_on_connections_with_a_session_cookie(
    console: Console, vault: Vault
) -> None:
    """Signing in with the admin key sets an HttpOnly, SameSite=Strict session cookie
    (not Secure over plain HTTP) and redirects to the connections page."""
    response = await console.sign_in(vault.admin_key)
    assert response.status_code == 303
    assert response.headers["location"] == "/connections"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    assert vault.admin_key not in cookie
    page = await console.http.get("/connections")
    assert page.status_code == 200
    assert "Admin key" in page.text


async def test_session_cookie_is_secure_over_https(vault: Vault) -> None:
    """Served over TLS (an https request), the session cookie is Secure."""
    client = VaultClient(ChannelSettings(vault.address))
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url="https://console.test") as http:
        token = _token((await http.get("/signin")).text)
        response = await http.post(
            "/signin", data={"csrf_token": token, "api_key": vault.admin_key}
        )
    await client.close()
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)
    )
    assert "Secure" in cookie


async def test_every_page_carries_the_security_headers_and_no_inline_code(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """Each page (and the sign-in page) sends the strict CSP, X-Frame-Options DENY,
    Referrer-Policy no-referrer and no-store, and has no inline script or style."""
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'self'")
    signin = await console.http.get("/signin")
    await console.sign_in(vault.admin_key)
    pages = [signin] + [await console.http.get(p) for p in (*PAGES, f"/orgs/{seeded.org_a}")]
    for page in pages:
        assert page.status_code == 200, (page.url, page.text[:500])
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        html = page.text
        assert "<style" not in html
        assert " style=" not in html
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
        assert not re.search(r"\son[a-z]+=", html), "inline event handler"


async def test_connections_put_what_needs_attention_first_across_organizations(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """The admin sees both organizations' connections; the refused one first, then the
    one whose refresh failed (with its error and count), then scope drift; filters narrow."""
    await console.sign_in(vault.admin_key)
    html = (await console.http.get("/connections")).text
    order = [html.index(c) for c in (seeded.error_conn, seeded.failing_conn, seeded.drift_conn)]
    assert order == sorted(order)
    assert html.index(seeded.drift_conn) < html.index(seeded.ok_conn_b)
    assert seeded.org_b_name in html
    assert seeded.org_a_name in html
    assert "503" in html  # the failed refresh's error
    assert re.search(r"1 failed refresh[<,]", html), "the failure count, singular"
    assert "read:user" in html  # requested but not granted: missing
    failing = (await console.http.get("/connections?failing=1")).text
    assert seeded.error_conn in failing
    assert seeded.failing_conn in failing
    assert seeded.drift_conn not in failing
    assert seeded.ok_conn_b not in failing
    zoom = (await console.http.get("/connections?platform=zoom")).text
    assert seeded.ok_conn_b in zoom
    assert seeded.error_conn not in zoom
    drift = (await console.http.get("/connections?drift=missing")).text
    assert seeded.drift_conn in drift
    assert seeded.failing_conn not in drift
    bad = await console.http.get("/connections?status=bogus")
    assert bad.status_code == 400


async def test_expiring_credentials_by_organization_in_7_and_30_days(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """7 days: A's 3-day credential, A's expired access token and B's 5-day one; 30
    days adds A's 20-day credential. Grouped under each organization's name."""
    await console.sign_in(vault.admin_key)
    week = (await console.http.get("/expiring?within=7")).text
    month = (await console.http.get("/expiring?within=30")).text
    assert seeded.org_a_name in week
    assert seeded.org_b_name in week
    assert "expired" in week  # the linked connection's access token expired
    assert seeded.error_conn not in week  # its credential expires in 20 days
    assert seeded.error_conn in month
    assert (await console.http.get("/expiring?within=9")).status_code == 400


async def test_audit_chain_verifies_then_names_the_tampered_event(
    console: Console,
    vault: Vault,
    seeded: Seeded,
    postgres: PostgresServer,
    database_name: str,
    monkeypatch: pytest.MonkeyPatch,
    owner_dsn: str,
) -> None:
    """Events show sequence and hash, page with the API's tokens, filter by action;
    "verify now" reports a clean chain, and after an event is edited in the database,
    the first bad event."""
    monkeypatch.setattr(audit_pages, "AUDIT_PAGE_SIZE", 3)
    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)  # what the sequencer does a moment later
    finally:
        await owner.close()
    await console.sign_in(vault.admin_key)
    first = (await console.http.get(f"/audit?org={seeded.org_a}")).text
    assert "Not verified in this session yet" in first
    assert re.search(r'<code class="hash">[0-9a-f]{64}</code>', first)
    older = re.search(r'href="(/audit\?[^"]*page_token=[^"]+)"', first)
    assert older, "no link to older events"
    second = (await console.http.get(older[1].replace("&amp;", "&"))).text
    assert "Newest" in second
    only = (await console.http.get(f"/audit?org={seeded.org_a}&action=credential.stored")).text
    assert "credential.stored" in only
    assert "connection.created" not in only

    token = await console.token(f"/audit?org={seeded.org_a}")
    verified = await console.http.post(
        "/audit/verify", data={"csrf_token": token, "org": seeded.org_a}, follow_redirects=True
    )
    assert "Verified:" in verified.text, verified.text[:2000]

    conn = await asyncpg.connect(postgres.dsn("postgres", database_name))
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE singura.audit_logs SET actor = 'someone-else' WHERE id = "
                "(SELECT min(id) FROM singura.audit_logs WHERE organization_id = $1)",
                uuid.UUID(seeded.org_a),
            )
    finally:
        await conn.close()
    failed = await console.http.post(
        "/audit/verify", data={"csrf_token": token, "org": seeded.org_a}, follow_redirects=True
    )
    assert "Verification failed" in failed.text


async def test_state_changing_requests_without_the_csrf_token_are_refused(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """POSTs with no token or another session's token get 403 and change nothing;
    sign-in without its double-submit cookie too."""
    before = await vault.access.ListApiKeys(apb.ListApiKeysRequest(organization_id=seeded.org_a))
    await console.sign_in(vault.admin_key)
    create = {"org": seeded.org_a, "roles": "reader", "name": "csrf"}
    for data in (create, {**create, "csrf_token": "not-the-token"}):
        refused = await console.http.post("/api-keys", data=data)
        assert refused.status_code == 403
        assert "Refused" in refused.text
    for path in ("/audit/verify", "/keys/rewrap", "/signout", "/api-keys/revoke"):
        assert (await console.http.post(path, data={})).status_code == 403, path
    after = await vault.access.ListApiKeys(apb.ListApiKeysRequest(organization_id=seeded.org_a))
    assert len(after.api_keys) == len(before.api_keys)
    assert (await console.http.get("/connections")).status_code == 200  # still signed in
    async with httpx.AsyncClient(
        transport=console.http._transport, base_url="http://console.test"
    ) as fresh:
        no_cookie = await fresh.post(
            "/signin", data={"csrf_token": "x", "api_key": vault.admin_key}
        )
    assert no_cookie.status_code == 403
    assert SESSION_COOKIE not in no_cookie.headers.get("set-cookie", "")


async def test_sessions_end_when_idle_or_too_old(console: Console, vault: Vault) -> None:
    """Just under the idle timeout the session lives (and its idle clock restarts); at
    it, the page sends the browser to sign in again; active sessions still end at
    the absolute lifetime."""
    await console.sign_in(vault.admin_key)
    console.clock.now += IDLE_S - 1
    assert (await console.http.get("/connections")).status_code == 200
    console.clock.now += IDLE_S - 1
    assert (await console.http.get("/connections")).status_code == 200
    console.clock.now += IDLE_S
    expired = await console.http.get("/connections")
    assert expired.status_code == 303
    assert expired.headers["location"] == "/signin?why=expired"
    assert len(console.sessions) == 0

    await console.sign_in(vault.admin_key)
    for _ in range(int(LIFETIME_S // (IDLE_S / 2)) - 1):
        console.clock.now += IDLE_S / 2
        assert (await console.http.get("/connections")).status_code == 200
    console.clock.now += IDLE_S / 2
    ended = await console.http.get("/connections")
    assert ended.headers["location"] == "/signin?why=expired"


async def test_sign_out_ends_the_session(console: Console, vault: Vault) -> None:
    """After signing out, the old cookie opens nothing."""
    await console.sign_in(vault.admin_key)
    cookie = console.http.cookies[SESSION_COOKIE]
    token = await console.token()
    out = await console.http.post("/signout", data={"csrf_token": token})
    assert out.headers["location"] == "/signin?why=signed_out"
    console.http.cookies.set(SESSION_COOKIE, cookie)
    again = await console.http.get("/connections")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/signin")


async def test_an_organization_key_sees_only_its_organization(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """An organization key signs in with its organization's id and sees its
    connections only; naming another organization, or the admin-only pages, shows the
    API's refusal with its reason and request id."""
    asked = await console.sign_in(seeded.org_key_a)
    assert asked.status_code == 401
    assert "organization key" in asked.text
    other = await console.sign_in(seeded.org_key_a, seeded.org_b)
    assert other.status_code == 401
    assert "PERMISSION_DENIED" in other.text
    ok = await console.sign_in(seeded.org_key_a, seeded.org_a)
    assert ok.status_code == 303
    page = (await console.http.get("/connections")).text
    assert seeded.error_conn in page
    assert seeded.ok_conn_b not in page
    assert seeded.org_b_name not in page
    expiring = (await console.http.get("/expiring?within=30")).text
    assert seeded.org_b_name not in expiring
    assert seeded.ok_conn_b not in expiring
    refused = await console.http.get(f"/connections?org={seeded.org_b}")
    assert seeded.ok_conn_b not in refused.text
    assert "PERMISSION_DENIED" in refused.text
    assert re.search(r"Request id</dt><dd><code>[0-9a-f]{32}</code>", refused.text)
    for path in ("/keys", "/api-keys", f"/orgs/{seeded.org_b}", f"/audit?org={seeded.org_b}"):
        response = await console.http.get(path)
        assert response.status_code == 403, path
        assert "PERMISSION_DENIED" in response.text, path
        assert seeded.org_b_name not in response.text
    own = await console.http.get("/orgs", follow_redirects=True)
    assert own.status_code == 200
    assert seeded.org_a_name in own.text


async def test_no_stored_secret_or_key_appears_in_any_page(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """Every page, for the admin and for the organization key, is scanned for every
    stored secret value, both API keys and the session id: none appears."""
    forbidden = [*seeded.secrets, vault.admin_key, seeded.org_key_a]
    bodies: list[str] = []
    for key, org in ((vault.admin_key, ""), (seeded.org_key_a, seeded.org_a)):
        await console.sign_in(key, org)
        session_id = console.http.cookies[SESSION_COOKIE]
        paths = [*PAGES, f"/orgs/{seeded.org_a}", f"/audit?org={seeded.org_a}"]
        paths += [f"/connections?org={seeded.org_a}", f"/api-keys?org={seeded.org_a}"]
        for path in paths:
            response = await console.http.get(path)
            bodies.append(response.text + str(response.headers))
        assert not any(session_id in body for body in bodies)
    assert len(bodies) >= 2 * len(PAGES)
    leaked = [s for s in forbidden if any(s in body for body in bodies)]
    assert not leaked, f"{len(leaked)} secret values appeared in console pages"


async def test_a_new_api_key_is_shown_once_and_can_be_revoked(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """Creating a key shows its secret on that response only; the list shows its key
    id; revoking it makes the vault refuse it."""
    await console.sign_in(vault.admin_key)
    token = await console.token(f"/api-keys?org={seeded.org_a}")
    created = await console.http.post(
        "/api-keys",
        data={"csrf_token": token, "org": seeded.org_a, "roles": ["reader"], "name": "ops"},
    )
    assert created.status_code == 200
    secret = re.search(r'id="new-secret" type="text" readonly value="(svk_[^"]+)"', created.text)
    assert secret, created.text[:2000]
    key_id = secret[1].split("_")[1]
    listing = (await console.http.get(f"/api-keys?org={seeded.org_a}")).text
    assert key_id in listing
    assert secret[1] not in listing
    revoked = await console.http.post(
        "/api-keys/revoke",
        data={"csrf_token": token, "org": seeded.org_a, "key_id": key_id},
        follow_redirects=True,
    )
    assert f"API key {key_id} is revoked" in revoked.text
    keys = await vault.access.ListApiKeys(apb.ListApiKeysRequest(organization_id=seeded.org_a))
    (mine,) = [k for k in keys.api_keys if k.key_id == key_id]
    assert mine.revoke_time.seconds > 0


async def test_a_revoked_operator_key_ends_its_session(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """When the vault stops accepting the signed-in key, the next page ends the
    session and asks to sign in again."""
    created = await vault.access.CreateApiKey(apb.CreateApiKeyRequest(name="temp admin"))
    await console.sign_in(created.secret)
    assert (await console.http.get("/connections")).status_code == 200
    await vault.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=created.api_key.key_id))
    refused = await console.http.get("/connections")
    assert refused.status_code == 303
    assert refused.headers["location"] == "/signin?why=refused"
    assert len(console.sessions) == 0


async def test_vault_errors_show_status_reason_and_request_id(
    console: Console, vault: Vault
) -> None:
    """An organization that does not exist: the vault's NOT_FOUND with its AIP-193
    reason and the request id the console sent."""
    await console.sign_in(vault.admin_key)
    response = await console.http.get(f"/orgs/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "NOT_FOUND" in response.text
    reason = re.search(r"Reason</dt><dd><code>([^<]+)</code>", response.text)
    assert reason
    assert reason[1] != "none given"
    assert re.search(r"Request id</dt><dd><code>[0-9a-f]{32}</code>", response.text)


async def test_keys_page_shows_versions_and_rewrap_progress(
    console: Console, vault: Vault, seeded: Seeded
) -> None:
    """Root and data key versions are listed; a rewrap started from the console is
    shown running (no worker runs in this vault) and its progress is served as JSON."""
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=seeded.org_a))
    await console.sign_in(vault.admin_key)
    token = await console.token("/keys")
    started = await console.http.post(
        "/keys/rewrap", data={"csrf_token": token}, follow_redirects=True
    )
    assert "is running" in started.text
    job = re.search(r'data-rewrap-job="([^"]+)" data-rewrap-running="yes"', started.text)
    assert job, started.text[:3000]
    assert "<progress" in started.text
    progress = (await console.http.get(f"/keys/rewrap/{job[1]}")).json()
    assert progress["state"] == "running"
    assert progress["total"] >= 2
    assert progress["done"] == 0
    assert seeded.org_a in started.text  # its data key versions


def test_attention_order_and_scope_drift() -> None:
    """ERROR before EXPIRED before failing refreshes before drift before healthy; drift
    is computed as the API's ScopeDrift: sets, only with requested scopes."""

    def conn(name: str, **fields: object) -> overview.ConnectionRow:
        return overview.connection_row(
            "o",
            "Org",
            cpb.Connection(id=name, display_name=name, **fields),  # type: ignore[arg-type]
        )

    rows = [
        conn("ok", status=cpb.CONNECTION_STATUS_ACTIVE),
        conn("extra", requested_scopes=["a"], permissions_granted=["a", "b"]),
        conn("failing", refresh_failure_count=2),
        conn("expired", status=cpb.CONNECTION_STATUS_EXPIRED),
        conn("error", status=cpb.CONNECTION_STATUS_ERROR),
        conn("missing", requested_scopes=["a", "b"], permissions_granted=["a"]),
        conn("no-request", permissions_granted=["x"]),
    ]
    ordered = [r.connection.id for r in overview.attention_first(rows)]
    assert ordered[:5] == ["error", "expired", "failing", "missing", "extra"]
    assert set(ordered[5:]) == {"ok", "no-request"}
    assert overview.scope_drift(rows[1].connection) == ((), ("b",))
    assert overview.scope_drift(rows[6].connection) == ((), ())


def test_operator_key_cannot_be_printed_or_pickled() -> None:
    """repr, str, format and pickle of the held key never give its text."""
    key = OperatorKey("svk_abcdefgh12345678_s3cr3t-value")
    assert "s3cr3t" not in f"{key!r} {key} {key:>40}"
    assert key.key_id == "abcdefgh12345678"
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_the_console_loads_no_key_or_database_module() -> None:
    """Importing the console application (as `console` runs it) loads nothing of
    singura_vault.keys, db, repositories or service, nor asyncpg or cryptography."""
    code = (
        "import sys, singura_vault.console.runner\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('asyncpg', 'cryptography')"
        " or m.startswith(('singura_vault.keys', 'singura_vault.db', "
        "'singura_vault.repositories', 'singura_vault.service')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
