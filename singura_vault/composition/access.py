"""API-key authentication as each caller builds it: the server from its settings, the
tests and benchmarks with a rate limit of their choice (none by default)."""

from __future__ import annotations

from singura_vault.config import Settings
from singura_vault.db.pool import Database
from singura_vault.repositories.api_keys import ApiKeyRepository
from singura_vault.service.access import AccessService, RateLimit
from singura_vault.service.api_key_cache import DEFAULT_TTL_S

# What SINGURA_RATE_LIMIT_RPS=0 configures.
NO_RATE_LIMIT = RateLimit(0, 1)


def build_access(
    db: Database,
    auth_secret: bytes,
    rate_limit: RateLimit = NO_RATE_LIMIT,
    *,
    cache_ttl_s: float = DEFAULT_TTL_S,
) -> AccessService:
    """API-key authentication over ``db``, by default without rate limiting."""
    return AccessService(ApiKeyRepository(db), auth_secret, rate_limit, cache_ttl_s=cache_ttl_s)


def build_access_from(db: Database, settings: Settings, auth_secret: bytes) -> AccessService:
    """Authentication as ``singura-vault serve`` configures it."""
    return build_access(
        db,
        auth_secret,
        RateLimit(settings.rate_limit_rps, settings.rate_limit_burst),
        cache_ttl_s=settings.auth_cache_ttl_s,
    )
