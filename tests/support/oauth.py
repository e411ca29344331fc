"""A connection linked to the loopback OAuth provider (client registered, tokens
stored), the calls on it, and a refresh worker as a vault process runs one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from singura_vault.db.pool import Database
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.providers import EgressSettings, TokenEndpointClient
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.service.oauth_refresh import (
    TokenRefresher,
)
from singura_vault.service.oauth_worker import RefreshWorker
from singura_vault.service.sealing import SealingService
from tests.support.credentials import ACCESS
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.tenants import tenant
from tests.support.vault import Stubs, Vault

REFRESH = crpb.CREDENTIAL_TYPE_REFRESH_TOKEN

CLIENT_ID = "vault-test-client"

# `serve` with the background refresh on, polling often.
WORKER_ON = {"SINGURA_REFRESH_WORKER": "on", "SINGURA_REFRESH_INTERVAL": "100ms"}


@dataclass
class Linked:
    """An organization and a connection whose tokens came from the fake provider."""

    org: str
    conn: str
    access_token: str
    refresh_token: str
    client_secret: str
    client_id: str


def past(seconds: int = 60) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC) - timedelta(seconds=seconds))
    return stamp


async def set_client(
    vault: Stubs,
    provider: FakeOAuthProvider,
    org: str,
    secret: str,
    client_id: str = CLIENT_ID,
    **fields: object,
) -> pb.OAuthClient:
    client = pb.OAuthClient(
        organization_id=org,
        platform=cpb.PLATFORM_SLACK if "platform" not in fields else fields.pop("platform"),  # type: ignore[arg-type]  # an enum value from the caller
        client_id=client_id,
        client_secret=secret,
        token_url=provider.token_url,
        # Slack's dialect: auth.revoke answers {"ok": true}.
        revocation_url=provider.slack_revocation_url,
        **fields,  # type: ignore[arg-type]  # OAuthClient fields from the caller
    )
    return (await vault.oauth.SetOAuthClient(pb.SetOAuthClientRequest(client=client))).client


async def link(
    vault: Vault,
    provider: FakeOAuthProvider,
    *,
    rotate: bool = True,
    expired: bool = True,
    expires_in: int = 3600,
) -> Linked:
    """A connection holding an access token (expired unless said otherwise) and a
    refresh token the provider issued, with the organization's client registered.
    expires_in: the lifetime of the access tokens the provider issues on refresh."""
    org, conn = await tenant(vault)
    secret = f"canary-client-secret-{uuid.uuid4().hex}"
    client_id = f"{CLIENT_ID}-{uuid.uuid4().hex[:8]}"  # one per organization
    provider.register_client(client_id, secret)
    await set_client(vault, provider, org, secret, client_id)
    access_token, refresh_token = provider.issue_grant(
        client_id, expires_in=expires_in, rotate=rotate
    )
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=ACCESS,
            value=access_token,
            expire_time=past() if expired else future,
        )
    )
    await vault.credentials.StoreCredential(
        crpb.StoreCredentialRequest(
            organization_id=org, connection_id=conn, type=REFRESH, value=refresh_token
        )
    )
    return Linked(org, conn, access_token, refresh_token, secret, client_id)


async def get_token(vault: Stubs, linked: Linked) -> pb.GetAccessTokenResponse:
    return await vault.oauth.GetAccessToken(
        pb.GetAccessTokenRequest(organization_id=linked.org, connection_id=linked.conn)
    )


async def connection(vault: Stubs, linked: Linked) -> cpb.Connection:
    return (
        await vault.connections.GetConnection(
            cpb.GetConnectionRequest(organization_id=linked.org, connection_id=linked.conn)
        )
    ).connection


def refresh_worker(
    db: Database, sealing: SealingService
) -> tuple[RefreshWorker, TokenEndpointClient]:
    """A refresh worker as a vault process has it (its own refresher and HTTP client)."""
    endpoint = TokenEndpointClient(EgressSettings())
    repository = OAuthRepository(db)
    refresher = TokenRefresher(repository, sealing, endpoint)
    worker = RefreshWorker(repository, refresher, keepalive=timedelta(days=3), interval_s=3600)
    return worker, endpoint


async def access_version(vault: Stubs, linked: Linked) -> int:
    versions = (
        await vault.credentials.ListCredentialVersions(
            crpb.ListCredentialVersionsRequest(
                organization_id=linked.org, connection_id=linked.conn, type=ACCESS, page_size=1
            )
        )
    ).credentials
    return versions[0].version
