"""OAuth client use cases: register, read and remove an organization's OAuth client
for a platform. The client secret is sealed by the credential path and never leaves
it again except towards the platform's token endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import uuid4

from singura_vault.domain import ClientAuthMethod, OAuthClientRecord, OAuthClientSettings, Platform
from singura_vault.errors import InvalidArgument
from singura_vault.providers import UnsafeEndpoint, check_endpoint_url
from singura_vault.repositories.oauth import OAuthRepository
from singura_vault.service import validation
from singura_vault.service.authz import READ, WRITE, Authorizer
from singura_vault.service.credentials import CredentialService

MAX_SECRET_BYTES = 4096
MAX_SCOPES = 100


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


class OAuthClientService:
    def __init__(
        self,
        repository: OAuthRepository,
        credentials: CredentialService,
        *,
        allow_loopback_http: bool,
        authorizer: Authorizer | None = None,
    ) -> None:
        self._repository = repository
        self._credentials = credentials
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
        )
        row_id = uuid4()
        secret = await self._credentials.seal_client_secret(org_id, row_id, data.client_secret)
        return await self._repository.set_client(settings, row_id, secret)

    async def get(self, organization_id: str, platform: Platform | None) -> OAuthClientRecord:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read OAuth clients")
        return await self._repository.get_client(org_id, _platform("platform", platform))

    async def delete(self, organization_id: str, platform: Platform | None) -> None:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "delete OAuth clients")
        await self._repository.delete_client(org_id, _platform("platform", platform))

    def _url(self, field_path: str, value: str) -> str:
        if not value:
            return ""
        if len(value) > 2048:
            raise InvalidArgument(field_path, "is longer than 2048 characters")
        try:
            return check_endpoint_url(value, allow_loopback_http=self._allow_loopback_http)
        except UnsafeEndpoint as exc:
            raise InvalidArgument(field_path, str(exc)) from None


def _platform(field_path: str, platform: Platform | None) -> Platform:
    if platform is None:
        raise InvalidArgument(field_path, "is required", example=Platform.SLACK)
    return platform
