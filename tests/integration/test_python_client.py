"""The Python client (clients/python, ``singura_vault_client``) against a real vault.

Every test talks to the ``vault`` fixture (an in-process server on a random port) over a
real gRPC channel. The synchronous ``Vault`` blocks, and the server runs on this test's
event loop, so its scenarios run in a worker thread (``asyncio.to_thread``); ``AsyncVault``
runs on the loop itself. Retries are counted with client interceptors, the client's own
extension point, against a port where nothing listens: no sleeps, no timing. The last
tests regenerate the client's stubs (drift from protos/) and run examples/quickstart.py
word for word, as README's walk-through leaves a newcomer.
"""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import re
import socket
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import singura_vault_client
from singura_vault_client import (
    Aborted,
    AsyncVault,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    Secret,
    TlsConfig,
    Unauthenticated,
    Unavailable,
    Vault,
    VaultError,
    is_idempotent,
)
from singura_vault_client._messages import enum_value
from singura_vault_client.types import CredentialType, Organization

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.db.pool import Database
from singura_vault.server import VaultServer
from singura_vault.service.access import AccessService
from singura_vault.tls import TlsSettings
from tests.support.canaries import canary
from tests.support.certs import make_pki
from tests.support.vault import Vault as RunningVault

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "python"
QUICKSTART = CLIENT_DIR / "examples" / "quickstart.py"
# No retry waits worth the name: the count of attempts is what the retry tests assert.
FAST_RETRY = RetryPolicy(retries=3, backoff=0.001, max_backoff=0.001)


def _slug() -> str:
    return f"py-{uuid.uuid4().hex[:12]}"


def _new_org(vault: Vault) -> Organization:
    slug = _slug()
    return vault.organizations.create(
        name="Python client", slug=slug, domain=f"{slug}.example.com", plan="FREE"
    )


def _dead_address() -> str:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------
# Secret and the argument helpers (no I/O)


def test_secret_hides_its_value_everywhere_but_reveal() -> None:
    """repr, str and format show Secret('***'); reveal() returns the text."""
    secret = Secret("xoxb-hidden")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert f"{secret} {secret!r} {secret:>40}" == "Secret('***') Secret('***') Secret('***')"
    assert "xoxb-hidden" not in repr([secret, {"k": secret}])
    assert secret.reveal() == "xoxb-hidden"


def test_secret_refuses_pickling_hashing_and_plain_string_equality() -> None:
    """A Secret cannot be pickled, hashed or compared with a str; Secrets compare by value."""
    secret = Secret("s3cr3t")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        hash(secret)
    assert secret != "s3cr3t"
    assert secret == Secret("s3cr3t")
    assert secret != Secret("other")
    assert copy.deepcopy(secret) is secret
    with pytest.raises(AttributeError):
        secret._value = "changed"  # type: ignore[misc]


def test_an_enum_is_given_by_short_name_full_name_or_number() -> None:
    """ "ACCESS_TOKEN", "CREDENTIAL_TYPE_ACCESS_TOKEN" and 1 are the same; others are refused."""
    expected = CredentialType.CREDENTIAL_TYPE_ACCESS_TOKEN
    for given in ("ACCESS_TOKEN", "access_token", "CREDENTIAL_TYPE_ACCESS_TOKEN", 1, expected):
        assert enum_value(CredentialType, given, field="type") == expected
    with pytest.raises(ValueError, match=r"type: 'TOKEN' is not a CredentialType \(.*ACCESS_TOKEN"):
        enum_value(CredentialType, "TOKEN", field="type")
    with pytest.raises(ValueError, match="99 is not a CredentialType"):
        enum_value(CredentialType, 99, field="type")
    with pytest.raises(TypeError):
        enum_value(CredentialType, True, field="type")


def test_only_reads_and_keyed_creates_are_idempotent() -> None:
    """Reads always; a create or store only with a request_id; nothing else."""
    prefix = "/singura.vault.v1."
    assert is_idempotent(prefix + "CredentialService/RevealCredential")
    assert is_idempotent(prefix + "AuditService/ExportAuditEvents")
    assert is_idempotent(prefix + "CredentialService/StoreCredential", "a-request-id")
    assert not is_idempotent(prefix + "CredentialService/StoreCredential")
    assert not is_idempotent(prefix + "AccessService/CreateApiKey")
    assert not is_idempotent(prefix + "OAuthService/CompleteAuthorization")


def test_the_api_key_is_never_in_a_repr_or_a_refusal() -> None:
    """The client's repr and its refusal of a malformed key do not show the key."""
    vault = Vault("127.0.0.1:1", api_key="svk_visible_never")
    try:
        assert "svk_visible_never" not in repr(vault)
    finally:
        vault.close()
    with pytest.raises(ValueError, match="api_key") as raised:
        Vault("127.0.0.1:1", api_key="svk_with space")
    assert "svk_with space" not in str(raised.value)


# ---------------------------------------------------------------------------------------
# Vault (sync) against a real vault


def _sync_round_trip(address: str, api_key: str, token: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        assert vault.organizations.get(organization_id=org.id).slug == org.slug
        conn = vault.connections.create(
            organization_id=org.id,
            platform="PLATFORM_SLACK",
            platform_user_id="U1",
            display_name="Slack",
        )
        stored = vault.credentials.store(
            organization_id=org.id, connection_id=conn.id, type="ACCESS_TOKEN", value=token
        )
        assert stored.version == 1

        revealed = vault.credentials.reveal(
            organization_id=org.id,
            connection_id=conn.id,
            type=CredentialType.Value("CREDENTIAL_TYPE_ACCESS_TOKEN"),
        )
        assert revealed.value.reveal() == token
        assert repr(revealed.value) == "Secret('***')"
        assert token not in repr(revealed)
        assert revealed.credential.id == stored.id

        missing = str(uuid.uuid4())
        results = vault.credentials.batch_reveal(
            organization_id=org.id,
            items=[
                {"connection_id": conn.id, "type": "ACCESS_TOKEN"},
                {"connection_id": missing, "type": "REFRESH_TOKEN"},
            ],
        )
        assert [r.code for r in results] == [grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND]
        assert results[0].value is not None
        assert results[0].value.reveal() == token
        assert results[1].value is None
        assert results[1].credential is None
        assert token not in repr(results)

        # Two more versions: three in all, listed two a page.
        for n in (2, 3):
            vault.credentials.store(
                organization_id=org.id, connection_id=conn.id, type=1, value=f"{token}-{n}"
            )
        first = vault.credentials.list(organization_id=org.id, connection_id=conn.id, page_size=2)
        assert [c.version for c in first.items] == [3, 2]
        assert first.next_page_token
        second = vault.credentials.list(
            organization_id=org.id,
            connection_id=conn.id,
            page_size=2,
            page_token=first.next_page_token,
        )
        assert [c.version for c in second.items] == [1]
        assert second.next_page_token == ""
        versions = vault.credentials.versions(
            organization_id=org.id, connection_id=conn.id, type="ACCESS_TOKEN"
        )
        assert [c.version for c in versions.items] == [3, 2, 1]
        assert vault.credentials.get(organization_id=org.id, credential_id=stored.id).version == 1

        actions = [event.action for event in vault.audit.export(organization_id=org.id)]
        assert actions[:2] == ["organization.created", "connection.created"]
        assert actions.count("credential.stored") == 3
        assert actions.count("credential.revealed") == 2  # reveal + the batch's one found


async def test_sync_client_stores_reveals_lists_and_exports(vault: RunningVault) -> None:
    """Vault: create, store, reveal (a Secret), batch_reveal, paged list, versions, export."""
    await asyncio.to_thread(_sync_round_trip, vault.address, vault.admin_key, canary("py"))


def _scope_drift_filter(address: str, api_key: str) -> tuple[int, int]:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        vault.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )
        with pytest.raises(ValueError, match="scope_drift: 'SIDEWAYS' is not a ScopeDrift"):
            vault.connections.list(organization_id=org.id, scope_drift="SIDEWAYS")
        everything = vault.connections.list(organization_id=org.id)
        drifted = vault.connections.list(organization_id=org.id, scope_drift="EXTRA")
    return len(everything.items), len(drifted.items)


async def test_the_connection_list_takes_the_scope_drift_filter(vault: RunningVault) -> None:
    """connections.list passes scope_drift by name (an unknown name is refused before
    any call); a connection made by hand requested nothing, so it never drifts."""
    listed = await asyncio.to_thread(_scope_drift_filter, vault.address, vault.admin_key)
    assert listed == (1, 0)


def _sync_errors(address: str, api_key: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        with pytest.raises(InvalidArgument) as invalid:
            vault.organizations.create(
                name="Bad", slug="Not A Slug!", domain="bad.example.com", plan="FREE"
            )
        error = invalid.value
        assert error.code is grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_ARGUMENT"
        assert error.domain == "singura.vault"
        assert [v.field for v in error.field_violations] == ["organization.slug"]
        assert error.request_id
        assert error.method == "/singura.vault.v1.OrganizationService/CreateOrganization"
        assert "INVALID_ARGUMENT" in str(error)
        assert error.request_id in str(error)

        with pytest.raises(NotFound) as missing:
            vault.organizations.get(organization_id=str(uuid.uuid4()))
        assert missing.value.reason == "NOT_FOUND"
        assert isinstance(missing.value, VaultError)

    with Vault(address, api_key="svk_wrong_key") as stranger, pytest.raises(Unauthenticated):
        stranger.organizations.list()


def _delete_and_undelete(address: str, api_key: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        conn = vault.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )
        assert vault.connections.delete(organization_id=org.id, connection_id=conn.id) is None
        assert vault.connections.list(organization_id=org.id).items == []
        (shown,) = vault.connections.list(organization_id=org.id, show_deleted=True).items
        assert shown.HasField("purge_time")
        with pytest.raises(FailedPrecondition) as refused:
            vault.connections.delete(organization_id=org.id, connection_id=conn.id)
        assert refused.value.reason == "CONNECTION_DELETED"
        restored = vault.connections.undelete(organization_id=org.id, connection_id=conn.id)
        assert not restored.HasField("delete_time")
        vault.connections.delete(organization_id=org.id, connection_id=conn.id, force=True)
        with pytest.raises(NotFound):
            vault.connections.undelete(organization_id=org.id, connection_id=conn.id)


async def test_connections_are_deleted_recoverably_and_undeleted(vault: RunningVault) -> None:
    """connections.delete keeps the connection recoverable (listed with show_deleted),
    undelete restores it, and force deletes it for good."""
    await asyncio.to_thread(_delete_and_undelete, vault.address, vault.admin_key)


async def test_sync_client_raises_typed_errors_with_details(vault: RunningVault) -> None:
    """InvalidArgument carries reason, domain, field violations and the request id;
    NOT_FOUND and a bad key come back as NotFound and Unauthenticated."""
    await asyncio.to_thread(_sync_errors, vault.address, vault.admin_key)


@dataclass
class _Attempts(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    """Counts every attempt of every unary call; optionally fails the first attempt of a
    method with UNAVAILABLE after the server answered (a response lost on the way)."""

    lose_first_response_of: str | None = None
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lost: list[Any] = field(default_factory=list)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        self.calls.append((client_call_details.method, request))
        outcome = continuation(client_call_details, request)
        if client_call_details.method == self.lose_first_response_of and not self.lost:
            self.lost.append(outcome.result())
            raise _LostResponse()
        return outcome


class _LostResponse(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """UNAVAILABLE as grpc reports a connection lost before the response arrived."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection lost (injected by the test)"

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False


def _retries_unavailable_reads_only(address: str) -> tuple[int, int]:
    counter = _Attempts()
    with Vault(address, api_key="svk_any", retry=FAST_RETRY, interceptors=[counter]) as vault:
        with pytest.raises(Unavailable) as read:
            vault.organizations.get(organization_id=str(uuid.uuid4()))
        assert read.value.code is grpc.StatusCode.UNAVAILABLE
        reads = len(counter.calls)
        counter.calls.clear()
        with pytest.raises(Unavailable):
            vault.access.create_api_key(name="never twice")
        return reads, len(counter.calls)


async def test_sync_client_retries_unavailable_only_for_idempotent_calls() -> None:
    """With nothing listening, a read is tried 1 + retries times, CreateApiKey once."""
    reads, creates = await asyncio.to_thread(_retries_unavailable_reads_only, _dead_address())
    assert reads == 1 + FAST_RETRY.retries
    assert creates == 1


def _store_after_a_lost_response(address: str, api_key: str, token: str) -> None:
    with Vault(address, api_key=api_key) as admin:
        org = _new_org(admin)
        conn = admin.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )
    store = "/singura.vault.v1.CredentialService/StoreCredential"
    lossy = _Attempts(lose_first_response_of=store)
    with Vault(address, api_key=api_key, retry=FAST_RETRY, interceptors=[lossy]) as vault:
        credential = vault.credentials.store(
            organization_id=org.id, connection_id=conn.id, type="ACCESS_TOKEN", value=token
        )
        attempts = [request for method, request in lossy.calls if method == store]
        assert len(attempts) == 2, "the store was not retried after UNAVAILABLE"
        # The client made one request_id and sent it with both attempts...
        assert attempts[0].request_id
        assert attempts[0].request_id == attempts[1].request_id
        # ...so the vault answered the retry with what the first attempt stored.
        assert credential.id == lossy.lost[0].credential.id
        versions = vault.credentials.versions(
            organization_id=org.id, connection_id=conn.id, type="ACCESS_TOKEN"
        )
        assert [c.version for c in versions.items] == [1]


async def test_a_store_retried_after_a_lost_response_is_stored_once(vault: RunningVault) -> None:
    """The first attempt stores, its answer is lost (UNAVAILABLE); the retry carries the
    same generated request_id and gets the same credential back: one version, not two."""
    await asyncio.to_thread(_store_after_a_lost_response, vault.address, vault.admin_key, canary())


def _check_and_set_store(address: str, api_key: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        conn = vault.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )

        def store(expected: int) -> Any:
            return vault.credentials.store(
                organization_id=org.id,
                connection_id=conn.id,
                type="API_KEY",
                value=canary(),
                expected_version=expected,
            )

        assert store(0).version == 1
        with pytest.raises(Aborted) as stale:
            store(0)
        assert stale.value.reason == "CREDENTIAL_VERSION_MISMATCH"
        assert stale.value.metadata["current_version"] == "1"
        assert store(1).version == 2


async def test_a_check_and_set_store_lands_only_on_the_expected_version(
    vault: RunningVault,
) -> None:
    """expected_version=0 stores the first version; a second store expecting 0 is Aborted
    with the current version in its metadata; expecting 1 stores version 2."""
    await asyncio.to_thread(_check_and_set_store, vault.address, vault.admin_key)


def _events_listed_and_watched(address: str, api_key: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        conn = vault.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )

        def store() -> Any:
            return vault.credentials.store(
                organization_id=org.id, connection_id=conn.id, type="API_KEY", value=canary()
            )

        first = store()
        page = vault.events.list(organization_id=org.id)
        assert [e.type for e in page.events] == ["connection.created", "credential.stored"]
        assert [e.cursor for e in page.events] == [1, 2]
        assert page.events[1].credential_id == first.id
        assert (page.next_after, page.more) == (2, False)
        stored_only = vault.events.list(organization_id=org.id, types=["credential.stored"])
        assert [e.cursor for e in stored_only.events] == [2]

        # Replay after cursor 1, then a live event; leaving the loop ends the stream.
        watched = vault.events.watch(organization_id=org.id, after=1)
        replayed = next(watched)
        assert (replayed.cursor, replayed.type) == (2, "credential.stored")
        second = store()
        live = next(watched)
        assert (live.cursor, live.type, live.credential_id) == (3, "credential.stored", second.id)
        watched.close()


async def test_events_are_listed_and_watched(vault: RunningVault) -> None:
    """vault.events.list pages and filters; vault.events.watch replays after a cursor,
    then yields each new event as it commits."""
    await asyncio.to_thread(_events_listed_and_watched, vault.address, vault.admin_key)


def _explicit_request_id_is_idempotent(address: str, api_key: str) -> None:
    with Vault(address, api_key=api_key) as vault:
        org = _new_org(vault)
        conn = vault.connections.create(
            organization_id=org.id, platform="SLACK", platform_user_id="U1", display_name="S"
        )
        request_id = str(uuid.uuid4())
        first, again = (
            vault.credentials.store(
                organization_id=org.id,
                connection_id=conn.id,
                type="API_KEY",
                value="same-value",
                request_id=request_id,
            )
            for _ in range(2)
        )
        assert first.id == again.id
        listed = vault.credentials.list(organization_id=org.id, connection_id=conn.id)
        assert len(listed.items) == 1


async def test_a_store_repeated_with_the_same_request_id_stores_once(vault: RunningVault) -> None:
    """Two stores with the caller's request_id return the same credential, one version."""
    await asyncio.to_thread(_explicit_request_id_is_idempotent, vault.address, vault.admin_key)


def _mutual_tls(address: str, api_key: str, tls: TlsConfig) -> str:
    with Vault(address, api_key=api_key, tls=tls) as vault:
        return _new_org(vault).id


async def test_sync_client_speaks_mutual_tls(
    vault: RunningVault,
    db: Database,
    key_manager: keys.KeyManager,
    access_service: AccessService,
    tmp_path: Path,
) -> None:
    """TlsConfig with the CA, a client certificate and a server name override reaches a
    vault that requires mutual TLS; without the client certificate it is refused."""
    pki = make_pki(tmp_path / "pki")
    server = VaultServer(
        Components(db, key_manager=key_manager, access=access_service), health_interval_s=0.2
    )
    port = await server.start(
        "127.0.0.1:0", tls=TlsSettings(pki.server_cert, pki.server_key, pki.ca_cert)
    )
    try:
        tls = TlsConfig(
            root_certificates=pki.ca_cert,
            certificate_chain=pki.client_cert,
            private_key=pki.client_key,
            server_name_override="localhost",
        )
        assert pki.client_key.read_text() not in repr(tls)
        org_id = await asyncio.to_thread(_mutual_tls, f"127.0.0.1:{port}", vault.admin_key, tls)
        assert org_id
        no_client_cert = TlsConfig(root_certificates=pki.ca_cert.read_bytes())
        with pytest.raises(Unavailable):
            await asyncio.to_thread(
                _mutual_tls, f"127.0.0.1:{port}", vault.admin_key, no_client_cert
            )
    finally:
        await server.stop(0)


# ---------------------------------------------------------------------------------------
# AsyncVault


async def test_async_client_stores_reveals_lists_and_exports(vault: RunningVault) -> None:
    """AsyncVault: the same API as coroutines, and export as an async iterator."""
    token = canary("py-async")
    async with AsyncVault(vault.address, api_key=vault.admin_key) as client:
        slug = _slug()
        org = await client.organizations.create(
            name="Async", slug=slug, domain=f"{slug}.example.com", plan="PLAN_STARTER"
        )
        conn = await client.connections.create(
            organization_id=org.id, platform=4, platform_user_id="octo", display_name="GitHub"
        )
        await client.credentials.store(
            organization_id=org.id, connection_id=conn.id, type="PRIVATE_KEY", value=token
        )
        revealed = await client.credentials.reveal(
            organization_id=org.id, connection_id=conn.id, type="PRIVATE_KEY"
        )
        assert revealed.value.reveal() == token
        assert str(revealed.value) == "Secret('***')"
        results = await client.credentials.batch_reveal(
            organization_id=org.id, items=[{"connection_id": conn.id, "type": "PRIVATE_KEY"}]
        )
        assert results[0].ok
        assert results[0].value == Secret(token)
        page = await client.connections.list(organization_id=org.id, platform="GITHUB")
        assert [c.id for c in page.items] == [conn.id]
        listed = [o.id async for o in client.organizations.list_all(page_size=1)]
        assert org.id in listed

        created = await client.access.create_api_key(
            organization_id=org.id, roles=["READER"], name="dashboard"
        )
        assert created.secret.reveal().startswith("svk_")
        assert created.secret.reveal() not in repr(created)

        actions = [event.action async for event in client.audit.export(organization_id=org.id)]
        assert "credential.revealed" in actions
        verified = await client.audit.verify(organization_id=org.id)
        assert verified.ok

        with pytest.raises(InvalidArgument) as invalid:
            await client.organizations.create(
                name="Bad", slug="-bad-", domain="bad.example.com", plan="FREE"
            )
        assert [v.field for v in invalid.value.field_violations] == ["organization.slug"]
        with pytest.raises(NotFound):
            await client.connections.get(organization_id=org.id, connection_id=str(uuid.uuid4()))
    async with AsyncVault(vault.address, api_key="svk_wrong") as stranger:
        with pytest.raises(Unauthenticated) as refused:
            await stranger.organizations.get(organization_id=org.id)
        assert refused.value.request_id


async def test_async_client_starts_and_completes_an_authorization(vault: RunningVault) -> None:
    """oauth.set_client, start_authorization (URL and state), and complete_authorization
    with the provider's error: FailedPrecondition OAUTH_AUTHORIZATION_DENIED."""
    async with AsyncVault(vault.address, api_key=vault.admin_key) as client:
        slug = _slug()
        org = await client.organizations.create(
            name="OAuth", slug=slug, domain=f"{slug}.example.com", plan="FREE"
        )
        redirect = "http://127.0.0.1:8080/callback"
        registered = await client.oauth.set_client(
            organization_id=org.id,
            platform="SLACK",
            client_id="client-1",
            client_secret=Secret(canary("client-secret")),
            redirect_uris=[redirect],
        )
        assert registered.client_secret == ""
        started = await client.oauth.start_authorization(
            organization_id=org.id, platform="SLACK", redirect_uri=redirect, scopes=["users:read"]
        )
        assert started.state
        assert started.state in started.authorization_url
        with pytest.raises(FailedPrecondition) as denied:
            await client.oauth.complete_authorization(
                organization_id=org.id, state=started.state, error="access_denied"
            )
        assert denied.value.reason == "OAUTH_AUTHORIZATION_DENIED"


class _AsyncAttempts(grpc.aio.UnaryUnaryClientInterceptor):
    """Counts every attempt of every unary call."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method  # grpc.aio hands it over as bytes
        self.methods.append(method.decode() if isinstance(method, bytes) else method)
        return await continuation(client_call_details, request)


async def test_async_client_retries_unavailable_only_for_idempotent_calls() -> None:
    """AsyncVault: a reveal is tried 1 + retries times; a RefreshConnection once."""
    counter = _AsyncAttempts()
    async with AsyncVault(
        _dead_address(), api_key="svk_any", retry=FAST_RETRY, interceptors=[counter]
    ) as client:
        with pytest.raises(Unavailable):
            await client.credentials.reveal(
                organization_id=str(uuid.uuid4()), connection_id=str(uuid.uuid4()), type=1
            )
        assert len(counter.methods) == 1 + FAST_RETRY.retries
        counter.methods.clear()
        with pytest.raises(Unavailable):
            await client.oauth.refresh_connection(
                organization_id=str(uuid.uuid4()), connection_id=str(uuid.uuid4())
            )
        assert counter.methods == ["/singura.vault.v1.OAuthService/RefreshConnection"]


# ---------------------------------------------------------------------------------------
# Generated code and the README's example


def test_client_generated_code_matches_the_protos() -> None:
    """clients/python/generate.py --check: the client's _proto/ is what protos/ generates."""
    result = subprocess.run(
        [sys.executable, str(CLIENT_DIR / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        "clients/python/src/singura_vault_client/_proto is out of date with protos/; run "
        f"`python clients/python/generate.py`.\n{result.stdout}{result.stderr}"
    )


def test_the_client_version_follows_the_server_contract() -> None:
    """The client's version (pyproject and __version__) is the server's, whose protos/ it
    was generated from."""
    server = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    client = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]["version"]
    assert client == server
    assert singura_vault_client.__version__ == client


def test_the_client_never_imports_the_server_package() -> None:
    """No module of the client (generated or not) imports singura_vault."""
    offenders = [
        path.relative_to(CLIENT_DIR).as_posix()
        for path in (CLIENT_DIR / "src").rglob("*.py*")
        if re.search(r"^\s*(from|import)\s+singura_vault[\s.]", path.read_text(), re.M)
    ]
    assert offenders == []


README = CLIENT_DIR / "README.md"
# The README's way to run the example, from the root of a clone after README.md's walk-through.
README_COMMAND = (
    'SINGURA_API_KEY="$(singura-vault keys admin-key)" python clients/python/examples/quickstart.py'
)


def _readme_output() -> list[str]:
    """The lines of the output block README.md shows after the quickstart's command."""
    text = README.read_text()
    assert f"```sh\n{README_COMMAND}\n```" in text, "README no longer runs the quickstart so"
    after = text.split(README_COMMAND, 1)[1]
    block = re.search(r"```text\n(.*?)```", after, flags=re.DOTALL)
    assert block is not None, "README shows no output block after the quickstart's command"
    return block.group(1).splitlines()


_CREATED = re.compile(r"^created organization (acme-py-[0-9a-f]{8}) \(([0-9a-f-]{36})\)$")


async def test_quickstart_runs_verbatim(vault: RunningVault) -> None:
    """examples/quickstart.py, as README.md runs it: it prints what the README shows and
    never the token it stored."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINGURA_")}
    env.update(SINGURA_ADDRESS=vault.address, SINGURA_API_KEY=vault.admin_key)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(QUICKSTART),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    output = stdout.decode() + stderr.decode()
    assert process.returncode == 0, output
    lines = stdout.decode().splitlines()
    assert _CREATED.match(lines[0]), output
    printed = _readme_output()
    assert _CREATED.match(printed[0]), "README's output block starts with another line"
    assert lines[1:] == printed[1:], output
    assert "5 credential.revealed" in lines, output
    assert "xoxb-not-a-real-token" not in output
    assert vault.admin_key not in output
