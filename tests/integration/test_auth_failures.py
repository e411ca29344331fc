"""Authentication failures: one message for the client, the cause for the operator."""

from __future__ import annotations

import asyncpg
import grpc
import structlog
from structlog.testing import capture_logs

from singura_vault import metrics
from singura_vault.errors import AUTH_FAILURE_CAUSES
from singura_vault.proto.singura.vault.v1 import access_pb2 as apb
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.service.access import INVALID_KEY_MESSAGE
from tests.support.auth import new_key_text
from tests.support.status import expect_status
from tests.support.vault import Vault


def _failures(cause: str) -> float:
    value = metrics.REGISTRY.get_sample_value("singura_auth_failures_total", {"cause": cause})
    assert value is not None, f"no series for cause={cause}"
    return value


async def _admin_key(vault: Vault) -> str:
    created = await vault.access.CreateApiKey(apb.CreateApiKeyRequest(name="auth-failures"))
    return created.secret


async def test_each_cause_is_logged_and_counted_while_the_client_reads_one_message(
    vault: Vault, owner_dsn: str
) -> None:
    """Missing, not-Bearer, malformed, unknown, revoked and expired keys all get the same
    UNAUTHENTICATED message and reason; rpc_failed names the cause (and the key's public
    id once it parsed), singura_auth_failures_total counts it, and no secret is logged."""
    revoked, expired = await _admin_key(vault), await _admin_key(vault)
    await vault.access.RevokeApiKey(apb.RevokeApiKeyRequest(key_id=revoked[4:20]))
    owner = await asyncpg.connect(owner_dsn)
    try:
        # No sleeping until expiry: move the expiry into the past, as time would.
        await owner.execute(
            "UPDATE singura.api_keys SET expires_at = now() - interval '1 second' "
            "WHERE key_id = $1",
            expired[4:20],
        )
    finally:
        await owner.close()
    unknown = new_key_text()
    authorization: dict[str, str | None] = {
        "missing": None,
        "not_bearer": f"Basic {unknown}",
        "malformed": "Bearer svk_short",
        "unknown": f"Bearer {unknown}",
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}",
    }
    assert set(authorization) == set(AUTH_FAILURE_CAUSES)
    anonymous = vault.as_key(None)
    before = {cause: _failures(cause) for cause in AUTH_FAILURE_CAUSES}
    messages: dict[str, str] = {}
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        for cause, value in authorization.items():
            metadata = () if value is None else (("authorization", value),)
            messages[cause] = await expect_status(
                anonymous.organizations.ListOrganizations(
                    opb.ListOrganizationsRequest(), metadata=metadata
                ),
                grpc.StatusCode.UNAUTHENTICATED,
            )
    assert set(messages.values()) == {INVALID_KEY_MESSAGE}
    failed = [e for e in events if e["event"] == "rpc_failed"]
    assert [e.get("auth_failure") for e in failed] == list(authorization)
    by_cause = {e["auth_failure"]: e for e in failed}
    assert by_cause["revoked"]["key_id"] == revoked[4:20]
    assert by_cause["expired"]["key_id"] == expired[4:20]
    assert by_cause["unknown"]["key_id"] == unknown[4:20]
    assert "key_id" not in by_cause["malformed"]
    logged = repr(events)
    for secret in (revoked, expired, unknown, revoked[21:], unknown[21:]):
        assert secret not in logged
    after = {cause: _failures(cause) for cause in AUTH_FAILURE_CAUSES}
    assert {cause: after[cause] - before[cause] for cause in AUTH_FAILURE_CAUSES} == dict.fromkeys(
        AUTH_FAILURE_CAUSES, 1.0
    )


def test_every_cause_is_a_series_before_it_happens() -> None:
    """All six causes are exported from the start, so a first failure is a rate, not a
    new series that alerts miss."""
    for cause in AUTH_FAILURE_CAUSES:
        assert _failures(cause) >= 0
    assert metrics.REGISTRY.get_sample_value("singura_auth_failures_total", {"cause": "x"}) is None
