"""When an access token is due for a refresh: its lifetime, how long it stays valid, and
the margin before expiry at which it is refreshed (capped, so that a provider whose
tokens live shorter than the margin is not refreshed on every call).

Pure functions of credentials and times; the refresher, GetAccessToken and the
connect flow share them so that all three agree on when a token is fresh.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from singura_vault.domain.connections import ExpirySource, Platform
from singura_vault.domain.credentials import Credential
from singura_vault.providers import CATALOGUE

# A caller's min_valid_for (or SINGURA_REFRESH_MARGIN) longer than the provider's
# tokens live can never be met: every token would be due as soon as it was issued,
# and every call would refresh and rotate the refresh token. So the margin is capped
# at this fraction of the token's own lifetime. One half: a token is handed out while
# at least half its life remains, and is refreshed once when half of it is spent, so
# the provider sees at most two refreshes per token lifetime, however often callers
# ask. (A smaller fraction would hand out tokens closer to expiry; a larger one, up to
# 1, would bring back the refresh on every call.)
MAX_MARGIN_FRACTION = 0.5


def token_lifetime(expires_in: int | None, platform: Platform) -> tuple[int | None, ExpirySource]:
    """The access token's lifetime in seconds, and where it came from: the answer's
    expires_in, else the catalogue's documented lifetime (Salesforce sends none), else
    none known. Without the fallback a token of such a provider would look valid
    forever, and the vault would refresh it only on keep-alive (Nango #6775)."""
    if expires_in:
        return expires_in, ExpirySource.PROVIDER
    default = CATALOGUE[platform].default_expires_in_s
    if default:
        return default, ExpirySource.CATALOGUE
    return None, ExpirySource.NONE


def valid_for(credential: Credential, now: datetime) -> timedelta | None:
    """How much longer a token is valid; None if its expiry is unknown (never stale)."""
    if credential.expires_at is None:
        return None
    return credential.expires_at - now


def effective_margin(credential: Credential, window: timedelta) -> timedelta:
    """window, capped at MAX_MARGIN_FRACTION of the token's lifetime: from when its
    version was stored (for a refresh: issued) to its expiry."""
    if credential.expires_at is None:
        return window
    lifetime = max(credential.expires_at - credential.created_at, timedelta(0))
    return min(window, lifetime * MAX_MARGIN_FRACTION)


def is_fresh(credential: Credential, now: datetime, window: timedelta) -> bool:
    """True unless the token expires within window (capped: effective_margin)."""
    remaining = valid_for(credential, now)
    return remaining is None or remaining > effective_margin(credential, window)
