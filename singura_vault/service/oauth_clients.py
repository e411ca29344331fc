"""OAuth client use cases: register, read and remove an organization's OAuth client
for a platform. The client secret is sealed by the sealing gateway and never leaves
it again except towards the platform's token endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from uuid import uuid4

from singura_vault.domain.connections import Platform
from singura_vault.domain.oauth import ClientAuthMethod, OAuthClientRecord, OAuthClientSettings
from singura_vault.errors import InvalidArgument
from singura_vault.local import is_loopback
from singura_vault.providers import OAuthClientConfig, UnsafeEndpoint, check_endpoint_url
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.service import validation
from singura_vault.service.authz import READ, WRITE, Authorizer
from singura_vault.service.sealing import SealingService

MAX_SECRET_BYTES = 4096
MAX_SCOPES = 100
MAX_REDIRECT_URIS = 20
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class OAuthClientInput:
    """The client-supplied fields of SetOAuthClient."""

    organization_id: str = ""
    platform: Platform | None = None
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    token_url: str = ""
    revocation_url: str = ""
    scopes: Sequence[str] = ()
    auth_method: ClientAuthMethod | None = None
    redirect_uris: Sequence[str] = ()
    authorization_url: str = ""
    # Slack's signing secret (provider signals, docs/events.md); empty: none.
    signing_secret: str = field(default="", repr=False)


def check_redirect_uri(field_path: str, value: str, *, allow_loopback_http: bool) -> str:
    """An absolute https URL without a fragment, or http to a loopback host where
    allow_loopback_http (outside production); returned unchanged: redirect URIs are
    matched as exact strings, as the providers match them."""
    if not value:
        raise InvalidArgument(field_path, "is empty")
    if len(value) > MAX_URL_LENGTH:
        raise InvalidArgument(field_path, f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise InvalidArgument(field_path, "is not a valid URL") from None
    if parts.fragment or "#" in value:
        raise InvalidArgument(field_path, "must not have a fragment (RFC 6749 3.1.2)")
    if not host:
        raise InvalidArgument(field_path, "must be an absolute URL with a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument(field_path, "must not carry user information")
    if parts.scheme == "https":
        return value
    if parts.scheme == "http" and is_loopback(host):
        if allow_loopback_http:
            return value
        raise InvalidArgument(
            field_path, "must be https in production (http only to loopback outside it)"
        )
    raise InvalidArgument(
        field_path, "must be an https URL (http only to a loopback host outside production)"
    )


class OAuthClientService:
    def __init__(
        self,
        repository: OAuthRepository,
        sealing: SealingService,
        *,
        allow_loopback_http: bool,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._allow_loopback_http = allow_loopback_http
        self._authz = authorizer or Authorizer()

    async def set(self, data: OAuthClientInput) -> OAuthClientRecord:
        org_id = validation.parse_uuid("client.organization_id", data.organization_id)
        self._authz.require(org_id, WRITE, "set OAuth clients")
        platform = _platform("client.platform", data.platform)
        client_id = validation.text(
            "client.client_id", data.client_id, min_length=1, max_length=512
        )
        if not data.client_secret:
            raise InvalidArgument("client.client_secret", "is required")
        if len(data.client_secret.encode("utf-8")) > MAX_SECRET_BYTES:
            raise InvalidArgument(
                "client.client_secret", f"is longer than the limit of {MAX_SECRET_BYTES} bytes"
            )
        settings = OAuthClientSettings(
            organization_id=org_id,
            platform=platform,
            client_id=client_id,
            token_url=self._url("client.token_url", data.token_url),
            revocation_url=self._url("client.revocation_url", data.revocation_url),
            scopes=validation.string_list(
                "client.scopes", data.scopes, max_items=MAX_SCOPES, max_length=255
            ),
            auth_method=data.auth_method or ClientAuthMethod.CLIENT_SECRET_POST,
            redirect_uris=self._redirect_uris(data.redirect_uris),
            authorization_url=self._url("client.authorization_url", data.authorization_url),
        )
        if data.signing_secret:
            if platform is not Platform.SLACK:
                raise InvalidArgument(
                    "client.signing_secret",
                    "is for Slack clients only (Google's signals are verified against "
                    "Google's published keys, with no shared secret)",
                )
            if len(data.signing_secret.encode("utf-8")) > MAX_SECRET_BYTES:
                raise InvalidArgument(
                    "client.signing_secret",
                    f"is longer than the limit of {MAX_SECRET_BYTES} bytes",
                )
        row_id = uuid4()
        secret, signing = await self._sealing.seal_client_secret(
            org_id, row_id, data.client_secret, data.signing_secret
        )
        return await self._repository.set_client(settings, row_id, secret, signing)

    async def get(self, organization_id: str, platform: Platform | None) -> OAuthClientRecord:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read OAuth clients")
        return await self._repository.get_client(org_id, _platform("platform", platform))

    async def delete(self, organization_id: str, platform: Platform | None) -> None:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "delete OAuth clients")
        await self._repository.delete_client(org_id, _platform("platform", platform))

    def _redirect_uris(self, values: Sequence[str]) -> tuple[str, ...]:
        if len(values) > MAX_REDIRECT_URIS:
            raise InvalidArgument(
                "client.redirect_uris", f"has more than {MAX_REDIRECT_URIS} entries"
            )
        checked: list[str] = []
        for index, value in enumerate(values):
            field_path = f"client.redirect_uris[{index}]"
            uri = check_redirect_uri(
                field_path, value, allow_loopback_http=self._allow_loopback_http
            )
            if uri in checked:
                raise InvalidArgument(field_path, "repeats an earlier entry")
            checked.append(uri)
        return tuple(checked)

    def _url(self, field_path: str, value: str) -> str:
        if not value:
            return ""
        if len(value) > MAX_URL_LENGTH:
            raise InvalidArgument(field_path, f"is longer than {MAX_URL_LENGTH} characters")
        try:
            return check_endpoint_url(value, allow_loopback_http=self._allow_loopback_http)
        except UnsafeEndpoint as exc:
            raise InvalidArgument(field_path, str(exc)) from None


def _platform(field_path: str, platform: Platform | None) -> Platform:
    if platform is None:
        raise InvalidArgument(field_path, "is required", example=Platform.SLACK)
    return platform


async def client_config(sealing: SealingService, client: OAuthClientRecord) -> OAuthClientConfig:
    """What the token endpoint client needs of a stored OAuth client, secret opened."""
    settings = client.settings
    return OAuthClientConfig(
        platform=settings.platform,
        client_id=settings.client_id,
        client_secret=await sealing.open_client_secret(client),
        token_url=settings.token_url,
        revocation_url=settings.revocation_url,
        scopes=settings.scopes,
        auth_method=settings.auth_method,
    )
