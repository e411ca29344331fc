"""Authentication and API-key administration.

Keys look like ``svk_<key_id>_<secret>``: a 16-character public id that finds
the row, and 256 random bits. Only HMAC-SHA256(SINGURA_AUTH_SECRET, key_id:secret)
is stored. Why a keyed fast hash and not bcrypt/argon2: those slow down guessing
of *low-entropy* passwords; a 256-bit random secret cannot be guessed at any
speed, so a slow hash would only add tens of milliseconds to every RPC. The key
(the auth secret, kept outside the database) means a database dump alone cannot
even confirm whether a key found elsewhere is valid.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from singura_vault.config import Settings
from singura_vault.context import Principal, Role
from singura_vault.domain.api_keys import ApiKey, NewApiKey
from singura_vault.domain.paging import PageCursor
from singura_vault.errors import (
    AUTH_FAILURE_CAUSES,
    ConfigError,
    FieldChecks,
    InvalidArgument,
    Unauthenticated,
)
from singura_vault.local import DEVELOPMENT_AUTH_SECRET_FILE
from singura_vault.logs import get_logger
from singura_vault.private_files import (
    read_private_file,
    replace_private_file,
    write_new_private_file,
)
from singura_vault.repositories.api_keys import ApiKeyRepository
from singura_vault.service import pagination, validation
from singura_vault.service.api_key_cache import DEFAULT_TTL_S, ApiKeyCache
from singura_vault.service.authz import Authorizer
from singura_vault.service.page_tokens import PageTokenSealer
from singura_vault.service.rate_limit import LeasedBuckets

log = get_logger(__name__)

KEY_PREFIX = "svk_"
_KEY_PATTERN = re.compile(r"^svk_([a-z0-9]{16})_([A-Za-z0-9_-]{43})$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
# Deliberately one message for every kind of bad key: no oracle for which part was wrong.
INVALID_KEY_MESSAGE = (
    "missing, malformed, unknown, revoked or expired API key; send "
    "'authorization: Bearer svk_...' metadata with a valid key"
)
ADMIN_KEY_FILE = "admin-api-key"


def _new_key_parts() -> tuple[str, str, str]:
    """(key id, secret, the full key): a 16-character public id and 256 random bits."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
    secret = secrets.token_urlsafe(32)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def new_key_text() -> str:
    """A new key, registered nowhere: what SINGURA_BOOTSTRAP_ADMIN_KEY takes (``serve``
    registers it as an admin key at start; `singura-vault keys generate-admin-key`)."""
    return _new_key_parts()[2]


@dataclass(frozen=True)
class RateLimit:
    """Per-key token bucket: rate tokens per second, at most burst saved up (0 = off)."""

    rate: float
    burst: float


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    # The full svk_ key: returned once, never stored, logged or shown by repr.
    secret: str = field(repr=False)


# A base64 secret and a newline; anything much larger is not one.
_MAX_SECRET_FILE_BYTES = 1024


def load_auth_secret(settings: Settings) -> bytes:
    """The HMAC key for API-key digests: SINGURA_AUTH_SECRET, or a generated
    development file in the data dir (embedded, non-production only)."""
    if settings.auth_secret is not None and settings.auth_secret_file is not None:
        raise ConfigError("SINGURA_AUTH_SECRET and SINGURA_AUTH_SECRET_FILE are both set; set one")
    if settings.auth_secret is not None:
        return _decode_secret(settings.auth_secret)
    if settings.auth_secret_file is not None:
        path = settings.auth_secret_file
        data = read_private_file(path, f"SINGURA_AUTH_SECRET_FILE {path}", _MAX_SECRET_FILE_BYTES)
        return _decode_secret(data.decode("ascii", errors="replace").strip())
    if settings.production or not settings.embedded:
        raise ConfigError(
            "SINGURA_AUTH_SECRET (or SINGURA_AUTH_SECRET_FILE) is required with an "
            "external DATABASE_URL or in production (every vault process must share it); "
            "generate one with `singura-vault keys generate`"
        )
    path = settings.data_dir / DEVELOPMENT_AUTH_SECRET_FILE
    if not path.exists():
        write_new_private_file(
            path,
            (base64.b64encode(secrets.token_bytes(32)).decode() + "\n").encode("ascii"),
            f"development auth secret {path} appeared while the vault was creating it",
        )
        log.warning("development_auth_secret_created", path=str(path))
    data = read_private_file(path, f"development auth secret {path}", _MAX_SECRET_FILE_BYTES)
    return _decode_secret(data.decode("ascii", errors="replace").strip())


def _decode_secret(value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "SINGURA_AUTH_SECRET must be 32 random bytes, base64-encoded (44 characters); "
            "generate one with `singura-vault keys generate`"
        )
    return raw


class AccessService:
    """Turns bearer tokens into principals; creates, lists and revokes API keys."""

    def __init__(
        self,
        repository: ApiKeyRepository,
        auth_secret: bytes,
        rate_limit: RateLimit,
        authorizer: Authorizer | None = None,
        *,
        cache_ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self._repository = repository
        self._auth_secret = auth_secret
        self._authz = authorizer or Authorizer()
        self.page_tokens = PageTokenSealer(auth_secret)
        self._cache = ApiKeyCache(cache_ttl_s)
        self._buckets = LeasedBuckets(repository, rate_limit.rate, rate_limit.burst)

    async def watch_key_changes(self) -> None:
        """Keep the key cache in step with the database until cancelled (every vault
        process runs this: a revocation anywhere reaches its cache when it commits)."""
        await self._repository.listen_for_changes(self._cache.forget, self._on_listen_state)

    @property
    def key_cache_live(self) -> bool:
        """Whether verified keys are being cached (change notifications are flowing)."""
        return self._cache.live

    def _on_listen_state(self, live: bool) -> None:
        if live != self._cache.live:
            log.info("api_key_cache_live" if live else "api_key_cache_bypassed")
        self._cache.set_live(live)

    def _digest(self, key_id: str, secret: str) -> bytes:
        return hmac.new(self._auth_secret, f"{key_id}:{secret}".encode(), hashlib.sha256).digest()

    def _new_key(self) -> tuple[str, str, bytes]:
        key_id, secret, full_key = _new_key_parts()
        return key_id, full_key, self._digest(key_id, secret)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``authorization`` header value; Unauthenticated otherwise.

        The client always reads INVALID_KEY_MESSAGE; the error's ``cause`` tells the
        operator which check failed (the interceptor logs and counts it)."""
        if not authorization:
            raise Unauthenticated(INVALID_KEY_MESSAGE, cause="missing")
        if not authorization.startswith("Bearer "):
            raise Unauthenticated(INVALID_KEY_MESSAGE, cause="not_bearer")
        match = _KEY_PATTERN.fullmatch(authorization.removeprefix("Bearer ").strip())
        if match is None:
            raise Unauthenticated(INVALID_KEY_MESSAGE, cause="malformed")
        key_id, secret = match[1], match[2]
        digest = self._digest(key_id, secret)
        cached = self._cache.get(key_id, digest)
        if cached is not None:
            organization_id, roles = cached.organization_id, cached.roles
        else:
            looked_up_at = time.monotonic()
            found = await self._repository.lookup(key_id, digest)
            if found.status != "ok":
                # api_key_lookup's status: unknown (no such id, or a wrong secret),
                # revoked or expired; anything else counts as unknown (bounded labels).
                cause = found.status if found.status in AUTH_FAILURE_CAUSES else "unknown"
                raise Unauthenticated(INVALID_KEY_MESSAGE, cause=cause, key_id=key_id)
            organization_id, roles = found.organization_id, found.roles
            self._cache.put(
                key_id,
                digest,
                organization_id,
                roles,
                found.expires_at,
                looked_up_at=looked_up_at,
            )
        if self._buckets.enabled:
            await self._buckets.spend(key_id)
        return Principal(
            key_id=key_id,
            organization_id=organization_id,
            roles=frozenset(Role(r) for r in roles),
        )

    async def create(
        self,
        organization_id: str,
        roles: Sequence[Role],
        name: str,
        expires_at: datetime | None,
    ) -> CreatedApiKey:
        creator = self._authz.require_admin("create API keys")
        # Every invalid field in one answer, not one per round trip.
        checks = FieldChecks()
        with checks.field():
            org_id = validation.parse_optional_uuid("organization_id", organization_id)
            if org_id is None and roles:
                raise InvalidArgument(
                    "roles", "must be empty for an admin key (no organization_id)"
                )
            if org_id is not None and not roles:
                raise InvalidArgument("roles", "an organization key needs at least one role")
        with checks.field():
            if expires_at is not None and expires_at <= datetime.now(UTC):
                raise InvalidArgument("expire_time", "must be in the future")
        with checks.field():
            key_name = validation.text("name", name, min_length=0, max_length=200)
        checks.raise_if_any()
        key_id, full_key, digest = self._new_key()
        api_key = await self._repository.insert(
            NewApiKey(
                key_id=key_id,
                secret_digest=digest,
                organization_id=org_id,
                roles=tuple(sorted({r.value for r in roles})),
                name=key_name,
                created_by=creator.key_id,
                expires_at=expires_at,
            )
        )
        log.info(
            "api_key_created", key_id=key_id, scope="admin" if org_id is None else "organization"
        )
        return CreatedApiKey(api_key, full_key)

    async def list(
        self, organization_id: str, page_size: int, page_token: str
    ) -> tuple[tuple[ApiKey, ...], str]:
        self._authz.require_admin("list API keys")
        org_id = validation.parse_optional_uuid("organization_id", organization_id)
        size = pagination.page_size(page_size)
        filters = ("api_keys", str(org_id or ""))
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.list(org_id, after, size + 1)
        return pagination.next_page(rows, size, filters, lambda k: PageCursor(k.created_at, k.id))

    async def revoke(self, key_id: str) -> ApiKey:
        self._authz.require_admin("revoke API keys")
        if not re.fullmatch(r"[a-z0-9]{16}", key_id):
            raise InvalidArgument(
                "key_id", "must be the 16-character id from the key (svk_<id>_...)"
            )
        api_key = await self._repository.revoke(key_id)
        log.info("api_key_revoked", key_id=key_id)
        return api_key

    async def record_denied(self, principal: Principal | None, method: str, code: str) -> None:
        await self._repository.record_denied(
            principal.organization_id if principal else None,
            principal.key_id if principal else None,
            method,
            code,
        )

    async def bootstrap_admin_key(self, data_dir: Path, explicit_key: str | None) -> None:
        """Make sure an admin key exists on first start (docs/operations.md).

        With SINGURA_BOOTSTRAP_ADMIN_KEY, that key is registered if its id is new.
        Otherwise, if no live admin key exists, one is generated and written to
        <data dir>/admin-api-key (mode 0600); only the path is logged.
        """
        if explicit_key is not None:
            match = _KEY_PATTERN.fullmatch(explicit_key.strip())
            if match is None:
                raise ConfigError(
                    "SINGURA_BOOTSTRAP_ADMIN_KEY must look like svk_<16 lowercase letters or "
                    "digits>_<43 URL-safe base64 characters>; leave it unset to have the "
                    "vault generate one"
                )
            key_id, secret = match[1], match[2]
            inserted = await self._repository.bootstrap_admin(
                self._admin_key(key_id, self._digest(key_id, secret)), only_if_none=False
            )
            if inserted:
                log.info("bootstrap_admin_key_registered", key_id=key_id)
            return
        key_id, full_key, digest = self._new_key()
        path = data_dir / ADMIN_KEY_FILE
        if not await self._repository.bootstrap_admin(
            self._admin_key(key_id, digest), only_if_none=True
        ):
            return
        await asyncio.to_thread(replace_private_file, path, (full_key + "\n").encode("ascii"))
        log.warning("bootstrap_admin_key_created", key_id=key_id, path=str(path))

    @staticmethod
    def _admin_key(key_id: str, digest: bytes) -> NewApiKey:
        return NewApiKey(
            key_id=key_id,
            secret_digest=digest,
            organization_id=None,
            roles=(),
            name="bootstrap admin key",
            created_by="bootstrap",
            expires_at=None,
        )
