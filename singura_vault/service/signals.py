"""IngestProviderSignal: provider revocation signals, verified and acted on.

A platform's backend forwards, unchanged, a request a provider sent it: a Slack Events
API call or a Google RISC security event token. This use case finds which OAuth
clients the signal may come from, has providers/signals.py verify it (signature,
freshness), and takes it: the claim of its ids (a replay is refused, in any vault
process) and the connections it moves, in one transaction (repositories/signals.py).
docs/events.md, "Provider signals", has the table of what each signal does.

Which OAuth client signed a Slack request: Slack's envelope names its app (api_app_id)
and workspace (team_id) but no OAuth client id, so the vault tries the signing secret
of each Slack client that has one -- every organization's for an admin key, its own
for an organization key with the signals role -- and every client whose secret
verifies the signature names an organization the signal concerns (one Slack app
registered in several organizations concerns all of them). At most MAX_CANDIDATES
clients are tried; more is refused (FAILED_PRECONDITION) rather than silently cut.

Never logged, never in an error: a signing secret, a signature, the token, the body.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from singura_vault import metrics
from singura_vault.context import Role
from singura_vault.domain.connections import ConnectionStatus, Platform
from singura_vault.errors import ErrorCode, FailedPrecondition, InvalidArgument, VaultError
from singura_vault.errors import Unavailable as UnavailableError
from singura_vault.logs import get_logger
from singura_vault.providers.signals import (
    SLACK_TOLERANCE_S,
    JwksCache,
    JwksUnavailable,
    RiscSettings,
    SignalRejected,
    json_object,
    slack_signature_matches,
    slack_timestamp,
    verify_security_event_token,
)
from singura_vault.repositories.signals import (
    Revocation,
    SignalClaim,
    SignalClient,
    SignalReplayed,
    SignalRepository,
)
from singura_vault.service.authz import Authorizer, missing_role
from singura_vault.service.sealing import SealingService

log = get_logger(__name__)

SIGNALS = (Role.SIGNALS,)
# Clients tried per signal; beyond this an operator forwards with organization keys.
MAX_CANDIDATES = 100
MAX_BODY_BYTES = 64 * 1024
MAX_HEADERS = 100
# A Slack event_id is remembered this long (Slack retries a delivery for about an hour).
SLACK_EVENT_ID_TTL_S = 2 * 3600
# Slack's request signature and timestamp: remembered past the window in which the
# timestamp is accepted at all.
SLACK_SIGNATURE_TTL_S = 2 * SLACK_TOLERANCE_S

RISC = "https://schemas.openid.net/secevent/risc/event-type/"
OAUTH_EVENTS = "https://schemas.openid.net/secevent/oauth/event-type/"
# What each RISC event does to the subject's Google connections (docs/events.md).
RISC_ACTIONS: Mapping[str, ConnectionStatus | None] = {
    RISC + "tokens-revoked": ConnectionStatus.REVOKED,
    OAUTH_EVENTS + "tokens-revoked": ConnectionStatus.REVOKED,
    RISC + "account-disabled": ConnectionStatus.REVOKED,
    RISC + "sessions-revoked": ConnectionStatus.ERROR,
    # Taken (and replay-protected) but acting on nothing.
    RISC + "account-enabled": None,
    RISC + "account-credential-change-required": None,
    RISC + "verification": None,
}


class SignalRefused(VaultError):  # noqa: N818 -- named as the other refusals (Unauthenticated)
    """UNAUTHENTICATED: the signal is unsigned, badly signed, stale or replayed."""

    code = ErrorCode.UNAUTHENTICATED
    reason = "SIGNAL_SIGNATURE_INVALID"


@dataclass(frozen=True)
class SignalResult:
    kind: str
    organization_ids: tuple[UUID, ...]
    connections_affected: int
    status: ConnectionStatus | None = None
    challenge: str = ""


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


class SignalService:
    def __init__(
        self,
        repository: SignalRepository,
        sealing: SealingService,
        jwks: JwksCache,
        risc: RiscSettings,
        authorizer: Authorizer | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._sealing = sealing
        self._jwks = jwks
        self._risc = risc
        self._authz = authorizer or Authorizer()
        self._clock = clock

    async def ingest(
        self, platform: Platform | None, headers: Mapping[str, str], body: bytes
    ) -> SignalResult:
        principal = self._authz.principal()
        if not principal.is_admin and not principal.roles.intersection(SIGNALS):
            raise missing_role(SIGNALS, "forward provider signals")
        label = platform.value if platform is not None else "unspecified"
        try:
            result = await self._ingest(platform, headers, body)
        except SignalRejected as exc:
            metrics.PROVIDER_SIGNALS.labels(label, exc.outcome).inc()
            log.info("provider_signal_refused", platform=label, outcome=exc.outcome)
            if exc.outcome == "malformed":
                raise InvalidArgument("body", exc.message, reason="SIGNAL_MALFORMED") from None
            reason = {"stale": "SIGNAL_STALE", "replayed": "SIGNAL_REPLAYED"}.get(exc.outcome)
            raise SignalRefused(exc.message, reason=reason) from None
        except InvalidArgument:
            metrics.PROVIDER_SIGNALS.labels(label, "unsupported").inc()
            raise
        except JwksUnavailable as exc:
            metrics.PROVIDER_SIGNALS.labels(label, "unavailable").inc()
            raise UnavailableError(
                f"{exc}; the signal was not taken, have it sent again",
                reason="PROVIDER_UNAVAILABLE",
            ) from None
        metrics.PROVIDER_SIGNALS.labels(label, "taken").inc()
        log.info(
            "provider_signal_taken",
            platform=label,
            kind=result.kind[:100],
            organizations=len(result.organization_ids),
            connections_affected=result.connections_affected,
        )
        return result

    async def _ingest(
        self, platform: Platform | None, headers: Mapping[str, str], body: bytes
    ) -> SignalResult:
        if len(body) > MAX_BODY_BYTES:
            raise InvalidArgument(
                "body", f"is larger than {MAX_BODY_BYTES} bytes", reason="SIGNAL_MALFORMED"
            )
        if len(headers) > MAX_HEADERS:
            raise InvalidArgument(
                "headers", f"has more than {MAX_HEADERS} entries", reason="SIGNAL_MALFORMED"
            )
        if platform is Platform.SLACK:
            return await self._slack(headers, body)
        if platform is Platform.GOOGLE_WORKSPACE:
            return await self._risc_token(body)
        raise InvalidArgument(
            "platform",
            "signals are taken from PLATFORM_SLACK (Events API) and PLATFORM_GOOGLE_WORKSPACE "
            "(RISC) only",
            reason="SIGNAL_PLATFORM_UNSUPPORTED",
            example=Platform.SLACK,
        )

    async def _candidates(self, platform: Platform) -> list[SignalClient]:
        clients = await self._repository.clients(platform, MAX_CANDIDATES + 1)
        if len(clients) > MAX_CANDIDATES:
            raise FailedPrecondition(
                f"more than {MAX_CANDIDATES} {platform.value} OAuth clients could have sent "
                "this signal; forward it with an organization key that has the signals role "
                "(docs/events.md, 'Provider signals')"
            )
        return clients

    # -- Slack --------------------------------------------------------------------------

    async def _slack(self, headers: Mapping[str, str], body: bytes) -> SignalResult:
        signature = _header(headers, "X-Slack-Signature")
        raw_timestamp = _header(headers, "X-Slack-Request-Timestamp")
        if not signature or not raw_timestamp:
            raise SignalRejected(
                "bad_signature",
                "the Slack request has no X-Slack-Signature or X-Slack-Request-Timestamp "
                "header; forward the request's headers unchanged",
            )
        now = self._clock()
        timestamp = slack_timestamp(raw_timestamp, now)
        matched = await self._slack_signers(raw_timestamp, body, signature)
        if not matched:
            raise SignalRejected(
                "bad_signature",
                "the Slack request's signature matches the signing secret of no Slack OAuth "
                "client the key may use (set it with SetOAuthClient's signing_secret)",
            )
        envelope = json_object(body, "Slack request")
        kind = envelope.get("type")
        sent_at = datetime.fromtimestamp(timestamp, UTC)
        claims = [
            SignalClaim(
                "slack:sig:" + _digest(raw_timestamp, signature),
                datetime.fromtimestamp(timestamp + SLACK_SIGNATURE_TTL_S, UTC),
            )
        ]
        if kind == "url_verification":
            challenge = envelope.get("challenge")
            if not isinstance(challenge, str) or not challenge or len(challenge) > 1024:
                raise SignalRejected("malformed", "url_verification carries no challenge")
            await self._take(claims, [])
            return SignalResult("url_verification", tuple(matched), 0, challenge=challenge)
        if kind != "event_callback":
            raise SignalRejected(
                "malformed", "the Slack request is neither url_verification nor event_callback"
            )
        event = envelope.get("event")
        team = envelope.get("team_id")
        event_id = envelope.get("event_id")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise SignalRejected("malformed", "the Slack event_callback carries no event type")
        if not isinstance(team, str) or not team:
            raise SignalRejected("malformed", "the Slack event_callback carries no team_id")
        if isinstance(event_id, str) and event_id:
            app = envelope.get("api_app_id")
            claims.append(
                SignalClaim(
                    "slack:event:" + _digest(str(app), event_id),
                    datetime.fromtimestamp(timestamp + SLACK_EVENT_ID_TTL_S, UTC),
                )
            )
        event_type: str = event["type"]
        users: tuple[str, ...] | None
        if event_type == "app_uninstalled":
            users = None
        elif event_type == "tokens_revoked":
            users = _revoked_user_ids(event)
        else:
            await self._take(claims, [])
            return SignalResult(event_type[:100], tuple(matched), 0)
        data = {
            "signal": event_type,
            "signal_time": sent_at.isoformat(),
            "platform_workspace_id": team,
        }
        revocations = [
            Revocation(org, Platform.SLACK, team, users, ConnectionStatus.REVOKED.value, data)
            for org in matched
        ]
        moved = await self._take(claims, revocations)
        return SignalResult(event_type, tuple(matched), moved, status=ConnectionStatus.REVOKED)

    async def _slack_signers(self, timestamp: str, body: bytes, signature: str) -> list[UUID]:
        """The organizations whose Slack client's signing secret signed this request."""
        by_org: dict[UUID, list[SignalClient]] = {}
        for client in await self._candidates(Platform.SLACK):
            by_org.setdefault(client.organization_id, []).append(client)
        matched: list[UUID] = []
        for org, clients in by_org.items():
            opened = await self._sealing.open_signing_secrets(
                org, [(c.id, c.signing_secret) for c in clients if c.signing_secret is not None]
            )
            if any(slack_signature_matches(s, timestamp, body, signature) for _, s in opened):
                matched.append(org)
        return matched

    # -- Google RISC --------------------------------------------------------------------

    async def _risc_token(self, body: bytes) -> SignalResult:
        clients = await self._candidates(Platform.GOOGLE_WORKSPACE)
        audiences = sorted({c.client_id for c in clients})
        claims = await verify_security_event_token(
            body, self._jwks, issuer=self._risc.issuer, audiences=audiences, now=self._clock()
        )
        audience = claims["aud"]
        wanted = {audience} if isinstance(audience, str) else set(audience)
        orgs = sorted({c.organization_id for c in clients if c.client_id in wanted}, key=str)
        events: dict[str, Any] = claims["events"]
        # One token carries one event (RISC profile); take the first we know.
        kind = next((k for k in events if k in RISC_ACTIONS), next(iter(events)))
        status = RISC_ACTIONS.get(kind)
        iat = float(claims["iat"])
        take = [
            SignalClaim(
                "google_workspace:jti:" + _digest(str(claims["iss"]), str(claims["jti"])),
                datetime.fromtimestamp(iat + 86400 + 60, UTC),
            )
        ]
        if status is None:
            await self._take(take, [])
            return SignalResult(kind[:200], tuple(orgs), 0)
        detail = events[kind] if isinstance(events[kind], dict) else {}
        subject = detail.get("subject")
        sub = subject.get("sub") if isinstance(subject, dict) else None
        if not isinstance(sub, str) or not sub:
            raise SignalRejected("malformed", "the event's subject carries no sub")
        data: dict[str, Any] = {
            "signal": kind,
            "signal_time": datetime.fromtimestamp(iat, UTC).isoformat(),
        }
        if isinstance(detail.get("reason"), str):
            data["signal_reason"] = detail["reason"][:64]
        revocations = [
            Revocation(org, Platform.GOOGLE_WORKSPACE, None, (sub,), status.value, data)
            for org in orgs
        ]
        moved = await self._take(take, revocations)
        return SignalResult(kind, tuple(orgs), moved, status=status)

    async def _take(self, claims: list[SignalClaim], revocations: list[Revocation]) -> int:
        try:
            moved = await self._repository.take(claims, revocations)
        except SignalReplayed:
            raise SignalRejected(
                "replayed",
                "this signal was already taken (same signature and timestamp, event_id or "
                "jti); nothing was changed",
            ) from None
        return sum(len(ids) for ids in moved.values())


def _revoked_user_ids(event: dict[str, Any]) -> tuple[str, ...]:
    tokens = event.get("tokens")
    if not isinstance(tokens, dict):
        raise SignalRejected("malformed", "tokens_revoked carries no tokens object")
    users: list[str] = []
    for kind in ("oauth", "bot"):
        ids = tokens.get(kind, [])
        if not isinstance(ids, list) or not all(isinstance(u, str) for u in ids):
            raise SignalRejected("malformed", f"tokens_revoked's tokens.{kind} is not a list")
        users.extend(ids)
    return tuple(dict.fromkeys(users))
