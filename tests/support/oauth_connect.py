"""The OAuth connect flow's parties: the app's callback endpoint on loopback and a
prepared setup (organization, registered client, browser) for one platform."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import oauth_pb2 as pb
from singura_vault.proto.singura.vault.v1 import oauth_pb2_grpc as pb_grpc
from tests.support.canaries import canary
from tests.support.oauth_provider import FakeOAuthProvider
from tests.support.tenants import new_org
from tests.support.vault import Vault


class AppCallback:
    """The app's redirect URI on loopback: it calls CompleteAuthorization with the state
    and code (or error) it receives, as a real app's callback handler does, and keeps
    what the vault answered."""

    def __init__(self, vault_address: str, key: str, organization_id: str) -> None:
        self.results: list[pb.CompleteAuthorizationResponse | grpc.RpcError] = []
        self._channel = grpc.insecure_channel(vault_address)
        self._stub = pb_grpc.OAuthServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {key}"),)
        self._organization_id = organization_id
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                status = callback.complete(query)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the request line carries the code: never printed

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.redirect_uri = f"http://{host!s}:{port}/oauth/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def complete(self, query: dict[str, str]) -> int:
        request = pb.CompleteAuthorizationRequest(
            organization_id=self._organization_id,
            state=query.get("state", ""),
            code=query.get("code", ""),
            error=query.get("error", ""),
            error_description=query.get("error_description", ""),
        )
        try:
            result = self._stub.CompleteAuthorization(request, metadata=self._metadata, timeout=60)
        except grpc.RpcError as error:
            self.results.append(error)
            return 400
        self.results.append(result)
        return 200

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._channel.close()


@dataclass
class Setup:
    vault: Vault
    provider: FakeOAuthProvider
    org: str
    client_id: str
    callback: AppCallback
    platform: int
    browser: httpx.AsyncClient
    extra: dict[str, Any] = field(default_factory=dict)

    async def start(self, **fields: Any) -> pb.StartAuthorizationResponse:
        request = pb.StartAuthorizationRequest(
            organization_id=self.org,
            platform=self.platform,  # type: ignore[arg-type]  # an enum value
            redirect_uri=self.callback.redirect_uri,
            **fields,
        )
        return await self.vault.oauth.StartAuthorization(request)

    async def consent(self, started: pb.StartAuthorizationResponse) -> dict[str, str]:
        """The browser at the provider: returns the redirect's query (code/state/error)
        without following it."""
        answer = await self.browser.get(started.authorization_url)
        assert answer.status_code == 302, answer.text
        location = answer.headers["location"]
        assert location.startswith(self.callback.redirect_uri)
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    async def connect(self, **fields: Any) -> pb.CompleteAuthorizationResponse:
        """The whole flow: start, consent, follow the redirect to the app's callback."""
        started = await self.start(**fields)
        answer = await self.browser.get(started.authorization_url)
        assert answer.status_code == 302
        landed = await self.browser.get(answer.headers["location"])
        result = self.callback.results[-1]
        assert landed.status_code == 200, result
        assert isinstance(result, pb.CompleteAuthorizationResponse)
        return result

    async def complete(
        self, query: dict[str, str], **fields: Any
    ) -> pb.CompleteAuthorizationResponse:
        return await self.vault.oauth.CompleteAuthorization(
            pb.CompleteAuthorizationRequest(
                organization_id=self.org,
                state=query.get("state", ""),
                code=query.get("code", ""),
                error=query.get("error", ""),
                **fields,
            )
        )


async def connect_setup(
    vault: Vault, provider: FakeOAuthProvider, browser: httpx.AsyncClient, platform: str
) -> AsyncIterator[Setup]:
    org = await new_org(vault)
    secret = canary("client-secret")
    client_id = f"connect-{uuid.uuid4().hex[:8]}"
    provider.register_client(client_id, secret)
    callback = AppCallback(vault.address, vault.admin_key, org)
    provider.register_redirect_uri(client_id, callback.redirect_uri)
    if platform == "slack":
        urls = {
            "platform": cpb.PLATFORM_SLACK,
            "token_url": provider.slack_token_url,
            "revocation_url": provider.slack_revocation_url,
            "authorization_url": provider.slack_authorization_url,
            "scopes": ["channels:read", "users:read"],
        }
    else:  # Google: PKCE, identity from the id_token
        urls = {
            "platform": cpb.PLATFORM_GOOGLE_WORKSPACE,
            "token_url": provider.google_token_url,
            "revocation_url": provider.revocation_url,
            "authorization_url": provider.google_authorization_url,
            "scopes": ["openid", "email"],
        }
    await vault.oauth.SetOAuthClient(
        pb.SetOAuthClientRequest(
            client=pb.OAuthClient(
                organization_id=org,
                client_id=client_id,
                client_secret=secret,
                redirect_uris=[callback.redirect_uri],
                **urls,  # type: ignore[arg-type]  # OAuthClient fields
            )
        )
    )
    try:
        yield Setup(vault, provider, org, client_id, callback, int(urls["platform"]), browser)  # type: ignore[call-overload]  # an enum value
    finally:
        callback.close()
