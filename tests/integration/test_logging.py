"""Logs are events with request context, and secrets never reach them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from singura_vault.composition import Components
from singura_vault.logs import REDACTED, configure_logging, redact_secrets
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from tests.support.messages import org_message
from tests.support.vault import Vault, start_vault, stop_vault


class RecordingStream(io.StringIO):
    """A text stream that keeps each write() call apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_each_event_is_one_write_so_workers_sharing_stderr_never_merge_lines() -> None:
    """An event and its newline reach the stream in one write(), for structlog's events
    and the standard library's alike: `serve --workers N` runs processes that share one
    stderr, and print()'s separate newline let two workers' lines merge into one."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = RecordingStream()
    try:
        configure_logging("info", "json", stream=stream, cache_loggers=False)
        structlog.get_logger("test").info("vault_serving", port=50051, worker=1)
        logging.getLogger("asyncpg").warning("a library's record")
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
    assert len(stream.writes) == 2, stream.writes
    assert all(w.endswith("\n") and w.count("\n") == 1 for w in stream.writes), stream.writes
    events = [json.loads(w)["event"] for w in stream.writes]
    assert events == ["vault_serving", "a library's record"]


def test_redaction_blanks_secret_fields_and_url_passwords() -> None:
    """Fields named like secrets are blanked, and passwords inside database URLs too."""
    event = redact_secrets(
        None,
        "info",
        {
            "event": "something_happened",
            "access_token": "xoxb-123",
            "api_key": "svk_abc",
            "authorization": "Bearer abc",
            "detail": "connect postgresql://vault:hunter2@db:5432/x failed",
            "organization_id": "4b9c",
        },
    )
    assert event["access_token"] == REDACTED
    assert event["api_key"] == REDACTED
    assert event["authorization"] == REDACTED
    assert "hunter2" not in event["detail"]
    assert "postgresql://vault:" in event["detail"]
    assert event["organization_id"] == "4b9c"
    assert event["event"] == "something_happened"


def test_redaction_keys_on_secret_bearing_fields_not_on_words() -> None:
    """What a field *is* decides: the version of an access token and whether the refresh
    token rotated are kept (oauth_token_refreshed logs both), every secret-bearing name
    is blanked, however it is spelled and however deep it sits."""
    secret_fields = [
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "client_secret",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "authorization",
        "Authorization",
        "code_verifier",
        "authorization_code",
        "state",
        "password",
        "db_password",
        "value",
        "plaintext",
        "private_key",
        "encryption_key",
        "service_dsn",
        "accessToken",
        "next_page_token",
    ]
    kept_fields = {
        "access_token_version": 3,
        "refresh_token_rotated": True,
        "key_id": "abcd1234abcd1234",
        "token_url": "https://slack.com/api/oauth.v2.access",
        "expires_in": 3600,
        "state_changed_at": "2025-01-01T00:00:00Z",
        "code": "UNAUTHENTICATED",
        "auth_failure": "revoked",
        "transit_key": "singura-root",
        "secret_count": 2,
        "rotates_refresh_token_id": "r-1",
    }
    event = redact_secrets(
        None,
        "info",
        {
            "event": "oauth_token_refreshed",
            **{name: f"secret-{i}" for i, name in enumerate(secret_fields)},
            **kept_fields,
            "request": {"client_secret": "nested-secret", "platform": "slack"},
        },
    )
    assert {name: event[name] for name in secret_fields} == dict.fromkeys(secret_fields, REDACTED)
    assert {name: event[name] for name in kept_fields} == kept_fields
    assert event["request"] == {"client_secret": REDACTED, "platform": "slack"}
    assert event["event"] == "oauth_token_refreshed"


@pytest.fixture
async def logging_vault(
    components: Components,
) -> AsyncIterator[Vault]:
    """A vault with SINGURA_ACCESS_LOG=all: a line for every call."""
    running = await start_vault(components, access_log="all")
    yield running
    await stop_vault(running)


async def test_each_rpc_logs_one_event_with_its_request_id(logging_vault: Vault) -> None:
    """With SINGURA_ACCESS_LOG=all, a call's x-request-id is echoed in trailers and
    carried by its log events."""
    vault = logging_vault
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        call = vault.organizations.CreateOrganization(
            opb.CreateOrganizationRequest(organization=org_message()),
            metadata=(("x-request-id", "req-42"),),
        )
        org = (await call).organization
        trailers = dict(await call.trailing_metadata() or ())
        await vault.organizations.GetOrganization(
            opb.GetOrganizationRequest(organization_id=org.id),
            metadata=(("x-request-id", "req-43"),),
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await vault.organizations.GetOrganization(
                opb.GetOrganizationRequest(organization_id="not-a-uuid")
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers["x-request-id"] == "req-42"
    completed = [e for e in events if e["event"] == "rpc_completed"]
    assert [e["request_id"] for e in completed] == ["req-42", "req-43"]
    assert completed[0]["rpc_method"] == "/singura.vault.v1.OrganizationService/CreateOrganization"
    assert "organization_id" not in completed[0]  # admin scope: no tenant yet
    assert completed[1]["organization_id"] == org.id
    failed = [e for e in events if e["event"] == "rpc_failed"]
    assert [e["code"] for e in failed] == ["INVALID_ARGUMENT"]
    assert failed[0]["request_id"] not in ("", "req-42")


async def test_slow_queries_are_logged_by_name_without_arguments(service_dsn: str) -> None:
    """With DB_SLOW_QUERY_MS=0 every statement is slow: each is logged as db_slow_query
    with its query name and duration, never its parameters."""
    import uuid

    from singura_vault.config import PoolSettings
    from singura_vault.db.pool import Database
    from singura_vault.repositories.organizations import OrganizationRepository

    db = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=1, slow_query_ms=0))
    missing = uuid.uuid4()
    try:
        with (
            capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events,
            pytest.raises(Exception, match="not found"),
        ):
            await OrganizationRepository(db).get(missing)
    finally:
        await db.close()
    slow = [e for e in events if e["event"] == "db_slow_query"]
    assert "organization_get_scoped" in [e["query"] for e in slow]
    assert all(isinstance(e["duration_ms"], float) for e in slow)
    allowed = {"event", "log_level", "query", "duration_ms", "failed", "organization_id"}
    assert all(set(e) <= allowed for e in slow), slow  # no arguments, no SQL text


async def test_the_default_access_log_keeps_failures_only(vault: Vault) -> None:
    """By default (SINGURA_ACCESS_LOG=errors) a successful call writes no line and a
    failed one writes rpc_failed."""
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as events:
        await vault.organizations.ListOrganizations(opb.ListOrganizationsRequest())
        with pytest.raises(grpc.aio.AioRpcError):
            await vault.organizations.GetOrganization(
                opb.GetOrganizationRequest(organization_id="not-a-uuid")
            )
    names = [e["event"] for e in events]
    assert "rpc_completed" not in names
    assert names.count("rpc_failed") == 1
