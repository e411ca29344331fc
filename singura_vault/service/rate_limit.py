"""Per-key rate limits shared by every vault process, without a database write per call.

The bucket of each key lives in PostgreSQL (``api_keys.bucket_tokens``): ``rate``
tokens a second, at most ``burst`` saved up. A process does not charge it per call;
it leases a small batch of tokens (``singura.api_key_lease``, one short statement)
and spends them locally, leasing again when they run out. Concurrent calls of one
key in one process share a single lease request.

Accounting stays exact -- every admitted call spent a token the shared bucket gave
out -- so across N processes the calls admitted in any window never exceed
``burst + rate x window`` by more than the tokens leased just before it and not yet
spent: at most ``min(N x L, rate x LEASE_LIFETIME_S)``, with L the lease size
(``ceil(max(rate, burst) / 20)``, between 1 and 100). Unspent tokens expire after
``LEASE_LIFETIME_S``, so one process cannot sit on tokens another needs for long.

A refused lease comes with the time until the bucket holds a token again; until then
the process refuses that key's calls itself, with the remaining delay, instead of
asking again: a client that keeps calling past its limit costs the database one
statement per refill interval, not one per call. (Refusing locally never admits a
call the bucket would not have, so the bound above is unchanged.)
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Final

from singura_vault.errors import ResourceExhausted
from singura_vault.repositories.api_keys import ApiKeyRepository

LEASE_LIFETIME_S: Final = 1.0
MAX_LEASE: Final = 100


def lease_size(rate: float, burst: float) -> int:
    return max(1, min(MAX_LEASE, math.ceil(max(rate, burst) / 20), int(burst)))


@dataclass
class _Allowance:
    tokens: int = 0
    expires: float = 0.0
    refused_until: float = 0.0
    """Monotonic time before which the shared bucket has no token for this key."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeasedBuckets:
    def __init__(self, repository: ApiKeyRepository, rate: float, burst: float) -> None:
        self._repository = repository
        self._rate = rate
        self._burst = burst
        self._lease = lease_size(rate, burst)
        self._allowances: dict[str, _Allowance] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    async def spend(self, key_id: str) -> None:
        """Admit one call of ``key_id``, or raise ResourceExhausted with a retry delay."""
        allowance = self._allowances.setdefault(key_id, _Allowance())
        if self._take(allowance):
            return
        self._refuse_while_empty(key_id, allowance)
        async with allowance.lock:  # one lease request per key at a time
            if self._take(allowance):
                return  # another call leased while we waited
            self._refuse_while_empty(key_id, allowance)  # another call was refused
            granted, retry_after_ms = await self._repository.lease_tokens(
                key_id, self._rate, self._burst, self._lease
            )
            if granted < 1:
                allowance.refused_until = time.monotonic() + retry_after_ms / 1000
                raise self._exhausted(key_id, retry_after_ms)
            allowance.tokens = granted - 1
            allowance.expires = time.monotonic() + LEASE_LIFETIME_S
        if len(self._allowances) > 100_000:  # keys come and go: keep the map bounded
            self._allowances = {k: a for k, a in self._allowances.items() if a.tokens > 0}

    def _refuse_while_empty(self, key_id: str, allowance: _Allowance) -> None:
        left_s = allowance.refused_until - time.monotonic()
        if left_s > 0:
            raise self._exhausted(key_id, max(1, math.ceil(left_s * 1000)))

    def _exhausted(self, key_id: str, retry_after_ms: int) -> ResourceExhausted:
        return ResourceExhausted(
            f"API key {key_id} exceeded its rate limit of {self._rate:g} requests "
            f"per second; retry after {retry_after_ms} ms",
            retry_after_ms=retry_after_ms,
            reason="RATE_LIMITED",
        )

    @staticmethod
    def _take(allowance: _Allowance) -> bool:
        if allowance.tokens > 0 and time.monotonic() < allowance.expires:
            allowance.tokens -= 1
            return True
        return False
