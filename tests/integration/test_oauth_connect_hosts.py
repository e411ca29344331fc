"""The connect flow (issue #23) across vault processes: a state started on one
`singura-vault serve` completes on another on the same database, a retry on the first
is answered from the database without a second exchange, two completions of one state
on two processes make one exchange, and the other process's log carries none of the
state, code or tokens.

The in-process `vault` fixture is one process; `serve_process_handle` starts the
other (SINGURA_ENV unset: development, so the loopback provider's plain http is
accepted there as here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import httpx
import pytest

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from tests.support import canaries
from tests.support.auth import bearer
from tests.support.oauth_connect import Setup, connect_setup
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.vault import Stubs, Vault
from tests.support.vault_process import serve_process_handle


@pytest.fixture(params=["slack", "google"])
async def either(
    request: pytest.FixtureRequest,
    vault: Vault,
    provider: FakeOAuthProvider,
    browser: httpx.AsyncClient,
) -> AsyncIterator[Setup]:
    """Slack (no PKCE, identity in the answer) and Google (PKCE, an id_token)."""
    async for setup in connect_setup(vault, provider, browser, request.param):
        yield setup


@pytest.fixture
async def owner(owner_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(owner_dsn)
    yield conn
    await conn.close()


def _completion(setup: Setup, back: dict[str, str]) -> pb.CompleteAuthorizationRequest:
    return pb.CompleteAuthorizationRequest(
        organization_id=setup.org, state=back["state"], code=back["code"]
    )


async def _secret_values(setup: Setup, connection_id: str) -> list[str]:
    """The connection's access and refresh tokens, read back through the first vault."""
    values = []
    for type_ in (crpb.CREDENTIAL_TYPE_ACCESS_TOKEN, crpb.CREDENTIAL_TYPE_REFRESH_TOKEN):
        revealed = await setup.vault.credentials.RevealCredential(
            crpb.RevealCredentialRequest(
                organization_id=setup.org,
                connection_id=connection_id,
                type=type_,
            )
        )
        values.append(revealed.value)
    return values


async def test_a_state_started_on_one_process_completes_on_another(
    either: Setup,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """StartAuthorization on the in-process vault, CompleteAuthorization on a second
    `serve` process: the second exchanges the code (with the PKCE verifier the first
    sealed, for Google) and stores the tokens; the first then serves the token and
    answers a retry from the database without calling the provider; the second
    process's log holds neither the state, the code, nor a token."""
    setup = either
    started = await setup.start(display_name="Started on one, completed on another")
    back = await setup.consent(started)
    calls = setup.provider.token_calls
    log: list[str] = []
    other = serve_process_handle(setup.vault, service_dsn, auth_secret, root_key, log=log)
    async with other as (address, _):
        channel = grpc.aio.insecure_channel(address, interceptors=bearer(setup.vault.admin_key))
        try:
            done = await Stubs.on(channel).oauth.CompleteAuthorization(_completion(setup, back))
        finally:
            await channel.close()
    assert setup.provider.token_calls == calls + 1  # the second process exchanged the code
    assert done.connection.status == cpb.CONNECTION_STATUS_ACTIVE
    assert done.connection.display_name == "Started on one, completed on another"
    conn_id = done.connection.id

    # The first process sees what the second stored, and knows the state is spent.
    token = await setup.vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=setup.org, connection_id=conn_id)
    )
    assert setup.provider.is_access_token_valid(token.access_token)
    assert not token.refreshed
    again = await setup.vault.oauth.CompleteAuthorization(_completion(setup, back))
    assert again.connection.id == conn_id
    assert setup.provider.token_calls == calls + 1

    # The canary check: the second process logged the completion, and nothing secret.
    text = "".join(log)
    assert '"vault_serving"' in text
    assert "CompleteAuthorization" in text, "the second process logged no completion"
    secrets = [started.state, back["code"], *await _secret_values(setup, conn_id)]
    leaked = [i for i, value in enumerate(secrets) if value in text]
    assert not leaked, f"secret values #{leaked} appeared in the second process's log"
    assert not [c for c in canaries.issued() if c in text]


async def test_two_processes_completing_one_state_make_one_exchange(
    slack: Setup,
    owner: asyncpg.Connection,
    service_dsn: str,
    auth_secret: bytes,
    root_key: str,
) -> None:
    """The in-process vault's completion is held at the provider's token endpoint; the
    same state presented to a second process waits on the state's row lock (in
    PostgreSQL, not in either process's memory), then gets the same connection; the
    token endpoint is called once."""
    started = await slack.start()
    back = await slack.consent(started)
    calls = slack.provider.token_calls
    other = serve_process_handle(slack.vault, service_dsn, auth_secret, root_key)
    async with other as (address, _):
        channel = grpc.aio.insecure_channel(address, interceptors=bearer(slack.vault.admin_key))
        try:
            hold = slack.provider.hold_next(on="token")
            first = asyncio.ensure_future(
                slack.vault.oauth.CompleteAuthorization(_completion(slack, back))
            )
            assert await hold.wait_reached_async()
            second = asyncio.ensure_future(
                Stubs.on(channel).oauth.CompleteAuthorization(_completion(slack, back))
            )
            # Released only once the second process waits on the row lock.
            waiting = 0
            for _ in range(3000):
                # pg_locks shows every role's waits (pg_stat_activity hides other roles').
                waiting = await owner.fetchval(
                    "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted"
                )
                if waiting:
                    break
                await asyncio.sleep(0.01)  # polling PostgreSQL's lock table, bounded
            assert waiting == 1
            hold.release()
            one, two = await asyncio.gather(first, second)
        finally:
            await channel.close()
    assert one.connection.id == two.connection.id
    assert slack.provider.token_calls == calls + 1
