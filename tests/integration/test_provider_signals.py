"""IngestProviderSignal end to end (issue #24, "Signals in"): Slack Events API requests
signed with an OAuth client's signing secret and Google RISC security event tokens
verified against a JWKS served by a real HTTP issuer on loopback, over a real gRPC
channel and PostgreSQL. Time is a clock the test holds (no sleeps)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from singura_vault import keys, metrics
from singura_vault.composition import NO_BACKGROUND_REFRESH, Components
from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import events_pb2 as epb
from singura_vault.proto.singura.vault.v1 import events_pb2_grpc as epb_grpc
from singura_vault.proto.singura.vault.v1 import keys_pb2 as kpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as orgpb
from singura_vault.proto.singura.vault.v1 import signals_pb2 as pb
from singura_vault.proto.singura.vault.v1 import signals_pb2_grpc as pb_grpc
from singura_vault.repositories.key_admin import KeyAdminRepository
from singura_vault.service.access import AccessService
from singura_vault.service.rewrap import RewrapWorker
from tests.support.api_keys import make_key
from tests.support.audit import chain_pending_audit
from tests.support.auth import bearer
from tests.support.error_details import details
from tests.support.messages import connection_message, org_message
from tests.support.vault import Vault, start_vault, stop_vault

ISSUER = "https://issuer.risc.test"
KID = "risc-test-key"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SLACK = cpb.PLATFORM_SLACK
GOOGLE = cpb.PLATFORM_GOOGLE_WORKSPACE


class Clock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


class JwksIssuer:
    """A RISC issuer's key publication: a real HTTP server on 127.0.0.1 serving a JWKS
    of the public keys it holds, counting the fetches."""

    def __init__(self) -> None:
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                jwk = json.loads(
                    jwt.algorithms.RSAAlgorithm.to_jwk(issuer.private_key.public_key())
                )
                body = json.dumps({"keys": [{**jwk, "kid": KID, "alg": "RS256", "use": "sig"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v3/certs"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def token(
        self,
        audience: str,
        event: str,
        sub: str,
        *,
        iat: float,
        key: rsa.RSAPrivateKey | None = None,
        jti: str | None = None,
        **claims: Any,
    ) -> bytes:
        payload = {
            "iss": ISSUER,
            "aud": audience,
            "iat": int(iat),
            "jti": jti or uuid.uuid4().hex,
            "events": {event: {"subject": {"subject_type": "iss-sub", "iss": ISSUER, "sub": sub}}},
            **claims,
        }
        signed = jwt.encode(
            payload, key or self.private_key, algorithm="RS256", headers={"kid": KID}
        )
        return signed.encode("ascii")


@pytest.fixture
def issuer() -> Iterator[JwksIssuer]:
    running = JwksIssuer()
    yield running
    running.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def vault(
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    issuer: JwksIssuer,
    clock: Clock,
) -> AsyncIterator[Vault]:
    """A vault whose RISC issuer is the loopback one and whose signal clock is the test's."""
    oauth = dataclasses.replace(NO_BACKGROUND_REFRESH, risc_issuer=ISSUER, risc_jwks_url=issuer.url)
    components = Components(
        db, key_manager=key_manager, access=access_service, oauth=oauth, signal_clock=clock
    )
    running = await start_vault(components)
    yield running
    await stop_vault(running)


def signals(vault: Vault, key: str | None = None) -> pb_grpc.SignalServiceStub:
    if key is None:
        return pb_grpc.SignalServiceStub(vault.channel)
    channel = grpc.aio.insecure_channel(vault.address, interceptors=bearer(key))
    vault._channels.append(channel)
    return pb_grpc.SignalServiceStub(channel)


async def new_org(vault: Vault) -> str:
    response = await vault.organizations.CreateOrganization(
        orgpb.CreateOrganizationRequest(organization=org_message(plan=orgpb.PLAN_ENTERPRISE))
    )
    return response.organization.id


async def slack_client(vault: Vault, org: str, signing_secret: str) -> opb.OAuthClient:
    client = opb.OAuthClient(
        organization_id=org,
        platform=SLACK,
        client_id=f"{uuid.uuid4().int % 10**6}.{uuid.uuid4().int % 10**6}",
        client_secret=f"client-secret-{uuid.uuid4().hex}",
        signing_secret=signing_secret,
    )
    return (await vault.oauth.SetOAuthClient(opb.SetOAuthClientRequest(client=client))).client


async def google_client(vault: Vault, org: str) -> str:
    client_id = f"{uuid.uuid4().hex[:12]}.apps.googleusercontent.com"
    client = opb.OAuthClient(
        organization_id=org, platform=GOOGLE, client_id=client_id, client_secret="g-secret"
    )
    await vault.oauth.SetOAuthClient(opb.SetOAuthClientRequest(client=client))
    return client_id


async def connection(vault: Vault, org: str, **fields: Any) -> str:
    response = await vault.connections.CreateConnection(
        cpb.CreateConnectionRequest(connection=connection_message(org, **fields))
    )
    return response.connection.id


async def status_of(vault: Vault, org: str, conn: str) -> tuple[int, str]:
    got = (
        await vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=org, connection_id=conn)
        )
    ).connection
    return got.status, got.status_reason


def slack_request(
    secret: str, document: dict[str, Any], timestamp: float, *, body: bytes | None = None
) -> pb.IngestProviderSignalRequest:
    """What Slack sends, signed as Slack signs it (header names in Slack's casing)."""
    raw = body if body is not None else json.dumps(document).encode()
    ts = str(int(timestamp))
    mac = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    return pb.IngestProviderSignalRequest(
        platform=SLACK,
        headers={
            "X-Slack-Signature": "v0=" + mac.hexdigest(),
            "X-Slack-Request-Timestamp": ts,
            "Content-Type": "application/json",
        },
        body=raw,
    )


def event_callback(team: str, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "token": "verification-token-unused",
        "team_id": team,
        "api_app_id": "A0TESTAPP",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10]}",
        "event_time": 1234567890,
    }


def counted(platform: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "singura_provider_signals_total", {"platform": platform, "outcome": outcome}
    )
    return value or 0.0


async def refused(call: Any, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    assert details(info.value)["ErrorInfo"].reason == reason
    return info.value.details() or ""


async def events_of(vault: Vault, org: str) -> list[epb.Event]:
    listed = await epb_grpc.EventServiceStub(vault.channel).ListEvents(
        epb.ListEventsRequest(organization_id=org, page_size=100)
    )
    return list(listed.events)


async def test_tokens_revoked_revokes_the_users_connection_in_its_organization_only(
    vault: Vault, owner_dsn: str
) -> None:
    """A signed tokens_revoked for user U1 of team T moves organization A's U1
    connection to REVOKED (reason provider_signal) with connection.status_changed and
    connection.revoked_at_provider events and an audit event; A's other user and
    organization B (another Slack app, another secret, a U1 connection in T too) stay
    ACTIVE; the answer names A and one connection."""
    org_a, org_b = await new_org(vault), await new_org(vault)
    stored = await slack_client(vault, org_a, "signing-secret-a")
    assert stored.has_signing_secret
    assert stored.signing_secret == ""
    await slack_client(vault, org_b, "signing-secret-b")
    u1 = await connection(vault, org_a, platform_workspace_id="T42", platform_user_id="U1")
    u2 = await connection(vault, org_a, platform_workspace_id="T42", platform_user_id="U2")
    b_u1 = await connection(vault, org_b, platform_workspace_id="T42", platform_user_id="U1")
    now = time.time()
    request = slack_request(
        "signing-secret-a",
        event_callback("T42", {"type": "tokens_revoked", "tokens": {"oauth": ["U1"], "bot": []}}),
        now,
    )
    before = counted("slack", "taken")

    answer = await signals(vault).IngestProviderSignal(request)

    assert (answer.kind, answer.connections_affected) == ("tokens_revoked", 1)
    assert list(answer.organization_ids) == [org_a]
    assert answer.status == cpb.CONNECTION_STATUS_REVOKED
    assert await status_of(vault, org_a, u1) == (cpb.CONNECTION_STATUS_REVOKED, "provider_signal")
    assert (await status_of(vault, org_a, u2))[0] == cpb.CONNECTION_STATUS_ACTIVE
    assert (await status_of(vault, org_b, b_u1))[0] == cpb.CONNECTION_STATUS_ACTIVE
    assert counted("slack", "taken") == before + 1

    events = [e for e in await events_of(vault, org_a) if e.connection_id == u1]
    by_type = {e.type: e for e in events}
    changed = by_type["connection.status_changed"]
    assert (changed.data["from"], changed.data["to"]) == ("active", "revoked")
    assert changed.data["reason"] == "provider_signal"
    revoked = by_type["connection.revoked_at_provider"]
    assert revoked.data["signal"] == "tokens_revoked"
    assert revoked.data["platform_workspace_id"] == "T42"
    assert revoked.cursor == changed.cursor + 1
    assert not [e for e in await events_of(vault, org_b) if e.type.endswith("at_provider")]

    owner = await asyncpg.connect(owner_dsn)
    try:
        await chain_pending_audit(owner)
        audited = await owner.fetch(
            "SELECT organization_id, actor, details->>'reason' AS reason FROM singura.audit_logs "
            "WHERE action = 'connection.status_changed' AND resource_id = $1",
            u1,
        )
    finally:
        await owner.close()
    assert [(str(r["organization_id"]), r["reason"]) for r in audited] == [
        (org_a, "provider_signal")
    ]
    # Audited as the forwarding key's act (the admin key here: "svk_<key_id>_<secret>").
    assert audited[0]["actor"] == vault.admin_key.split("_")[1]


async def test_app_uninstalled_revokes_every_connection_of_the_workspace(vault: Vault) -> None:
    """app_uninstalled revokes every connection of the team in the matching
    organization, and none of another team."""
    org = await new_org(vault)
    await slack_client(vault, org, "signing-secret-u")
    in_team = [
        await connection(vault, org, platform_workspace_id="T7", platform_user_id=u)
        for u in ("U1", "U2")
    ]
    other = await connection(vault, org, platform_workspace_id="T8", platform_user_id="U1")
    request = slack_request(
        "signing-secret-u", event_callback("T7", {"type": "app_uninstalled"}), time.time()
    )

    answer = await signals(vault).IngestProviderSignal(request)

    assert (answer.kind, answer.connections_affected) == ("app_uninstalled", 2)
    for conn in in_team:
        assert (await status_of(vault, org, conn))[0] == cpb.CONNECTION_STATUS_REVOKED
    assert (await status_of(vault, org, other))[0] == cpb.CONNECTION_STATUS_ACTIVE


async def test_url_verification_answers_the_challenge_only_when_signed(vault: Vault) -> None:
    """url_verification returns Slack's challenge when the signature verifies, and is
    UNAUTHENTICATED (no challenge) under a wrong secret."""
    org = await new_org(vault)
    await slack_client(vault, org, "signing-secret-v")
    document = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }

    answer = await signals(vault).IngestProviderSignal(
        slack_request("signing-secret-v", document, time.time())
    )
    assert answer.kind == "url_verification"
    assert answer.challenge == document["challenge"]
    assert answer.connections_affected == 0

    await refused(
        signals(vault).IngestProviderSignal(slack_request("not-the-secret", document, time.time())),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_SIGNATURE_INVALID",
    )


async def test_bad_stale_replayed_and_malformed_slack_signals_change_nothing(
    vault: Vault, clock: Clock
) -> None:
    """A wrong secret, no signature, a timestamp 301 s off the vault's clock (either
    way), a replay of a taken request and a new request with a taken event_id are
    UNAUTHENTICATED with their reasons; an unparsable body is INVALID_ARGUMENT; an
    unsupported platform INVALID_ARGUMENT; each counted, and the connection stays
    ACTIVE until a fresh, correctly signed request takes it."""
    org = await new_org(vault)
    await slack_client(vault, org, "signing-secret-r")
    conn = await connection(vault, org, platform_workspace_id="T9", platform_user_id="U9")
    revoke = event_callback(
        "T9", {"type": "tokens_revoked", "tokens": {"oauth": ["U9"]}}, event_id="EvREPLAY1"
    )
    stub = signals(vault)
    counts = {o: counted("slack", o) for o in ("bad_signature", "stale", "replayed", "malformed")}

    await refused(
        stub.IngestProviderSignal(slack_request("wrong-secret", revoke, clock.now)),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_SIGNATURE_INVALID",
    )
    unsigned = slack_request("signing-secret-r", revoke, clock.now)
    del unsigned.headers["X-Slack-Signature"]
    await refused(
        stub.IngestProviderSignal(unsigned),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_SIGNATURE_INVALID",
    )
    for offset in (-301, 301):
        message = await refused(
            stub.IngestProviderSignal(
                slack_request("signing-secret-r", revoke, clock.now + offset)
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "SIGNAL_STALE",
        )
        assert "301 s" in message
    await refused(
        stub.IngestProviderSignal(
            slack_request("signing-secret-r", {}, clock.now, body=b"payload=not-json")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIGNAL_MALFORMED",
    )
    await refused(
        stub.IngestProviderSignal(
            pb.IngestProviderSignalRequest(platform=cpb.PLATFORM_GITHUB, body=b"{}")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIGNAL_PLATFORM_UNSUPPORTED",
    )
    assert (await status_of(vault, org, conn))[0] == cpb.CONNECTION_STATUS_ACTIVE

    # Within the window (300 s old) it is taken; the same request again is a replay.
    fresh = slack_request("signing-secret-r", revoke, clock.now - 300)
    assert (await stub.IngestProviderSignal(fresh)).connections_affected == 1
    await refused(
        stub.IngestProviderSignal(fresh), grpc.StatusCode.UNAUTHENTICATED, "SIGNAL_REPLAYED"
    )
    # Slack's retry of the same event: a new timestamp and signature, the same event_id.
    clock.now += 60
    await refused(
        stub.IngestProviderSignal(slack_request("signing-secret-r", revoke, clock.now)),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_REPLAYED",
    )
    assert counted("slack", "bad_signature") == counts["bad_signature"] + 2
    assert counted("slack", "stale") == counts["stale"] + 2
    assert counted("slack", "replayed") == counts["replayed"] + 2
    assert counted("slack", "malformed") == counts["malformed"] + 1
    assert counted("github", "unsupported") >= 1
    revoked_events = [
        e for e in await events_of(vault, org) if e.type == "connection.revoked_at_provider"
    ]
    assert len(revoked_events) == 1


async def test_roles_reader_refused_signals_role_confined_to_its_organization(
    vault: Vault,
) -> None:
    """A reader key is PERMISSION_DENIED naming API_KEY_ROLE_SIGNALS; a key with the
    signals role takes its own organization's signal, and a signal signed with another
    organization's secret is UNAUTHENTICATED for it (the admin key takes that one)."""
    org_a, org_b = await new_org(vault), await new_org(vault)
    await slack_client(vault, org_a, "signing-secret-ra")
    await slack_client(vault, org_b, "signing-secret-rb")
    conn_a = await connection(vault, org_a, platform_workspace_id="T1", platform_user_id="U1")
    conn_b = await connection(vault, org_b, platform_workspace_id="T1", platform_user_id="U1")
    event = {"type": "tokens_revoked", "tokens": {"oauth": ["U1"]}}
    reader = signals(vault, await make_key(vault, org_a, (apb.API_KEY_ROLE_READER,)))
    signal_key = signals(vault, await make_key(vault, org_a, (apb.API_KEY_ROLE_SIGNALS,)))

    message = await refused(
        reader.IngestProviderSignal(
            slack_request("signing-secret-ra", event_callback("T1", event), time.time())
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert "API_KEY_ROLE_SIGNALS" in message
    assert (await status_of(vault, org_a, conn_a))[0] == cpb.CONNECTION_STATUS_ACTIVE

    answer = await signal_key.IngestProviderSignal(
        slack_request("signing-secret-ra", event_callback("T1", event), time.time())
    )
    assert (list(answer.organization_ids), answer.connections_affected) == ([org_a], 1)

    for_b = slack_request("signing-secret-rb", event_callback("T1", event), time.time())
    await refused(
        signal_key.IngestProviderSignal(for_b),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_SIGNATURE_INVALID",
    )
    assert (await status_of(vault, org_b, conn_b))[0] == cpb.CONNECTION_STATUS_ACTIVE
    answer = await signals(vault).IngestProviderSignal(for_b)
    assert (list(answer.organization_ids), answer.connections_affected) == ([org_b], 1)


async def test_a_signing_secret_is_for_slack_clients_only(vault: Vault) -> None:
    """SetOAuthClient refuses a signing secret on a Google client (INVALID_ARGUMENT
    naming client.signing_secret); a Slack client without one reports none."""
    org = await new_org(vault)
    client = opb.OAuthClient(
        organization_id=org, platform=GOOGLE, client_id="g", client_secret="s", signing_secret="x"
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vault.oauth.SetOAuthClient(opb.SetOAuthClientRequest(client=client))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "client.signing_secret" in (info.value.details() or "")
    assert not (await slack_client(vault, org, "")).has_signing_secret


async def test_risc_tokens_revoked_and_sessions_revoked(
    vault: Vault, issuer: JwksIssuer, clock: Clock
) -> None:
    """A RISC tokens-revoked token signed by the issuer's key for a registered Google
    client id revokes the subject's Google connection; sessions-revoked moves another
    subject's to ERROR; a connection of another subject is untouched; the JWKS is fetched
    once (cached); the same jti again is a replay."""
    org = await new_org(vault)
    audience = await google_client(vault, org)
    alice = await connection(
        vault, org, platform=GOOGLE, platform_workspace_id="acme.test", platform_user_id="111"
    )
    bob = await connection(
        vault, org, platform=GOOGLE, platform_workspace_id="acme.test", platform_user_id="222"
    )
    carol = await connection(
        vault, org, platform=GOOGLE, platform_workspace_id="acme.test", platform_user_id="333"
    )
    stub = signals(vault)
    token = issuer.token(audience, RISC + "tokens-revoked", "111", iat=clock.now, jti="jti-1")

    answer = await stub.IngestProviderSignal(
        pb.IngestProviderSignalRequest(platform=GOOGLE, body=token)
    )
    assert (answer.kind, answer.connections_affected) == (RISC + "tokens-revoked", 1)
    assert list(answer.organization_ids) == [org]
    assert await status_of(vault, org, alice) == (cpb.CONNECTION_STATUS_REVOKED, "provider_signal")

    sessions = issuer.token(audience, RISC + "sessions-revoked", "222", iat=clock.now)
    answer = await stub.IngestProviderSignal(
        pb.IngestProviderSignalRequest(platform=GOOGLE, body=sessions)
    )
    assert answer.status == cpb.CONNECTION_STATUS_ERROR
    assert (await status_of(vault, org, bob))[0] == cpb.CONNECTION_STATUS_ERROR
    assert (await status_of(vault, org, carol))[0] == cpb.CONNECTION_STATUS_ACTIVE
    assert issuer.fetches == 1

    await refused(
        stub.IngestProviderSignal(pb.IngestProviderSignalRequest(platform=GOOGLE, body=token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "SIGNAL_REPLAYED",
    )
    revoked = [e for e in await events_of(vault, org) if e.type == "connection.revoked_at_provider"]
    assert [(e.connection_id, e.data["to"]) for e in revoked] == [
        (alice, "revoked"),
        (bob, "error"),
    ]


async def test_risc_wrong_key_wrong_audience_and_expired_are_refused(
    vault: Vault, issuer: JwksIssuer, clock: Clock
) -> None:
    """A token signed by another key under the issuer's key id, one for an audience
    the vault does not hold, and one whose exp has passed on the vault's clock are each
    refused (SIGNAL_SIGNATURE_INVALID, SIGNAL_SIGNATURE_INVALID, SIGNAL_STALE) and the
    subject's connection stays ACTIVE; a body that is not a JWT is INVALID_ARGUMENT."""
    org = await new_org(vault)
    audience = await google_client(vault, org)
    conn = await connection(
        vault, org, platform=GOOGLE, platform_workspace_id="acme.test", platform_user_id="999"
    )
    stub = signals(vault)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    event = RISC + "account-disabled"
    cases = [
        (
            issuer.token(audience, event, "999", iat=clock.now, key=other_key),
            "SIGNAL_SIGNATURE_INVALID",
        ),
        (
            issuer.token("someone-else.apps.googleusercontent.com", event, "999", iat=clock.now),
            "SIGNAL_SIGNATURE_INVALID",
        ),
        (
            issuer.token(audience, event, "999", iat=clock.now - 7200, exp=int(clock.now) - 3600),
            "SIGNAL_STALE",
        ),
    ]
    for token, reason in cases:
        await refused(
            stub.IngestProviderSignal(pb.IngestProviderSignalRequest(platform=GOOGLE, body=token)),
            grpc.StatusCode.UNAUTHENTICATED,
            reason,
        )
    await refused(
        stub.IngestProviderSignal(
            pb.IngestProviderSignalRequest(platform=GOOGLE, body=b"not a jwt")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "SIGNAL_MALFORMED",
    )
    assert (await status_of(vault, org, conn))[0] == cpb.CONNECTION_STATUS_ACTIVE

    # The same token as the expired one, an hour earlier on the vault's clock, is taken.
    clock.now -= 3600
    valid = issuer.token(audience, event, "999", iat=clock.now - 60, exp=int(clock.now) + 60)
    answer = await stub.IngestProviderSignal(
        pb.IngestProviderSignalRequest(platform=GOOGLE, body=valid)
    )
    assert answer.connections_affected == 1
    assert (await status_of(vault, org, conn))[0] == cpb.CONNECTION_STATUS_REVOKED


def test_slack_signature_is_the_documented_example() -> None:
    """The verifier computes Slack's published example signature (its docs' secret,
    timestamp and body), so the format is Slack's and not only our own round trip."""
    from singura_vault.providers.signals import slack_signature

    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert (
        slack_signature(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body)
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


async def test_rewrap_reseals_the_signing_secret_and_signals_still_verify(
    vault: Vault, components: Components
) -> None:
    """The signing secret is sealed under the client's data key version: after a data
    key rotation and a rewrap, the old version retires and a Slack signal still
    verifies against the re-sealed secret."""
    org = await new_org(vault)
    await slack_client(vault, org, "signing-secret-k")
    conn = await connection(vault, org, platform_workspace_id="T5", platform_user_id="U5")
    await vault.keys.RotateDataKey(kpb.RotateDataKeyRequest(organization_id=org))
    await vault.keys.StartRewrap(kpb.StartRewrapRequest())
    worker = RewrapWorker(KeyAdminRepository(vault.db), components.key_manager)
    assert await worker.work_once()
    await vault.keys.RetireKeyVersion(
        kpb.RetireKeyVersionRequest(data_key=kpb.DataKeyRef(organization_id=org, version=1))
    )

    request = slack_request(
        "signing-secret-k", event_callback("T5", {"type": "app_uninstalled"}), time.time()
    )
    assert (await signals(vault).IngestProviderSignal(request)).connections_affected == 1
    assert (await status_of(vault, org, conn))[0] == cpb.CONNECTION_STATUS_REVOKED
