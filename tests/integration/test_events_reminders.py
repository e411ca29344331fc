"""Expiry reminders: credential.expiring at each SINGURA_EXPIRY_REMINDERS threshold and
credential.expired, once per credential version, over a clock the test moves (no
sleeps), across two runs and two jobs of two "processes" (pools) on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf import json_format, timestamp_pb2

from singura_vault import keys
from singura_vault.composition import Components
from singura_vault.config import DEFAULT_EXPIRY_REMINDERS, PoolSettings
from singura_vault.config.environment import load_settings, parse_expiry_reminders
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as kpb
from singura_vault.service.access import AccessService
from tests.support.canaries import canary
from tests.support.events import all_events, events_stub
from tests.support.tenants import tenant
from tests.support.vault import Vault, start_vault, stop_vault

API_KEY = kpb.CREDENTIAL_TYPE_API_KEY
ACCESS = kpb.CREDENTIAL_TYPE_ACCESS_TOKEN


class Clock:
    """The reminder jobs' now: starts at the real time, moved only by the test."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC)
        self.now = self.start

    def __call__(self) -> datetime:
        return self.now

    def at(self, **offset: float) -> None:
        self.now = self.start + timedelta(**offset)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def vault(
    db: Database, key_manager: keys.KeyManager, access_service: AccessService, clock: Clock
) -> AsyncIterator[Vault]:
    running = await start_vault(
        Components(db, key_manager=key_manager, access=access_service, clock=clock)
    )
    yield running
    await stop_vault(running)


@pytest.fixture
async def second_job(service_dsn: str, clock: Clock) -> AsyncIterator[Components]:
    """The reminder job of a second vault process: its own pool, the same database."""
    pool = await Database.connect(service_dsn, PoolSettings(min_size=1, max_size=2))
    yield Components(pool, clock=clock)
    await pool.close()


def _expiring_in(clock: Clock, **delta: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(clock.start + timedelta(**delta))
    return stamp


async def stored(
    vault: Vault, clock: Clock, org: str, conn: str, type_: int, **expires_in: float
) -> str:
    response = await vault.credentials.StoreCredential(
        kpb.StoreCredentialRequest(
            organization_id=org,
            connection_id=conn,
            type=type_,  # type: ignore[arg-type]  # an enum value
            value=canary("expiring"),
            expire_time=_expiring_in(clock, **expires_in),
        )
    )
    return response.credential.id


async def notices(vault: Vault, org: str) -> list[tuple[str, str, Any]]:
    """(type, credential id, threshold or None) of every reminder event, in order."""
    events = await all_events(
        events_stub(vault), org, types=["credential.expiring", "credential.expired"]
    )
    return [
        (e.type, e.credential_id, json_format.MessageToDict(e.data).get("threshold"))
        for e in events
    ]


async def run_both(vault: Vault, second: Components) -> None:
    """Both processes' jobs at once, then each once more: what is due is sent once."""
    components = vault.server.components
    await asyncio.gather(components.expiry_reminders.run_once(), second.expiry_reminders.run_once())
    await components.expiry_reminders.run_once()
    await second.expiry_reminders.run_once()


async def test_each_threshold_once_then_expired_once(
    vault: Vault, clock: Clock, second_job: Components
) -> None:
    """An API key stored for 40 days gets the 30d, 7d and 1d reminders as the clock
    passes each, then credential.expired -- each exactly once, though two jobs of two
    processes run at every step and again after it."""
    org, conn = await tenant(vault)
    key = await stored(vault, clock, org, conn, API_KEY, days=40)
    steps = [
        ({"days": 5}, []),
        ({"days": 10, "hours": 1}, [("credential.expiring", key, "30d")]),
        ({"days": 20}, []),
        ({"days": 33, "hours": 1}, [("credential.expiring", key, "7d")]),
        ({"days": 39, "hours": 1}, [("credential.expiring", key, "1d")]),
        ({"days": 40, "seconds": 1}, [("credential.expired", key, None)]),
        ({"days": 90}, []),
    ]
    expected: list[tuple[str, str, Any]] = []
    for offset, new in steps:
        clock.at(**offset)
        await run_both(vault, second_job)
        expected += new
        assert await notices(vault, org) == expected, offset
    (expired,) = await all_events(events_stub(vault), org, types=["credential.expired"])
    body = json_format.MessageToDict(expired.data)
    assert (body["credential_type"], body["version"]) == ("api_key", 1)
    assert expired.connection_id == conn


async def test_a_job_that_was_down_sends_only_the_most_urgent_reminder(
    vault: Vault, clock: Clock, second_job: Components
) -> None:
    """Past 30d and 7d at once (the jobs were down), only 7d is sent, and 30d never
    after; a version shorter-lived than a threshold never gets that reminder (an hour
    long access token: no "1d"), but is reported expired."""
    org, conn = await tenant(vault)
    key = await stored(vault, clock, org, conn, API_KEY, days=40)
    token = await stored(vault, clock, org, conn, ACCESS, hours=1)
    clock.at(days=34)
    await run_both(vault, second_job)
    assert await notices(vault, org) == [
        ("credential.expired", token, None),
        ("credential.expiring", key, "7d"),
    ]
    clock.at(days=34, hours=1)
    await run_both(vault, second_job)
    assert len(await notices(vault, org)) == 2


async def test_only_the_current_version_is_reminded(
    vault: Vault, clock: Clock, second_job: Components
) -> None:
    """A version superseded by a newer one gets no reminder (the newer one does, on its
    own schedule), and a new version's thresholds start afresh."""
    org, conn = await tenant(vault)
    await stored(vault, clock, org, conn, API_KEY, days=40)
    newer = await stored(vault, clock, org, conn, API_KEY, days=60)
    clock.at(days=11)
    await run_both(vault, second_job)
    assert await notices(vault, org) == []
    clock.at(days=31)
    await run_both(vault, second_job)
    assert await notices(vault, org) == [("credential.expiring", newer, "30d")]


async def test_reminders_are_confined_to_their_organization(
    vault: Vault, clock: Clock, second_job: Components
) -> None:
    """Each organization sees its own credentials' reminders only."""
    org_a, conn_a = await tenant(vault)
    org_b, conn_b = await tenant(vault)
    key_a = await stored(vault, clock, org_a, conn_a, API_KEY, days=10)
    key_b = await stored(vault, clock, org_b, conn_b, API_KEY, days=10)
    clock.at(days=9, hours=1)
    await run_both(vault, second_job)
    assert await notices(vault, org_a) == [("credential.expiring", key_a, "1d")]
    assert await notices(vault, org_b) == [("credential.expiring", key_b, "1d")]
    # An admin key sees both, once numbered by the sequencer.
    await vault.server.components.event_sequencer.run_once()
    admin = await all_events(events_stub(vault), "", types=["credential.expiring"])
    assert sorted(e.credential_id for e in admin) == sorted([key_a, key_b])
    assert all(e.position > 0 for e in admin)


def test_expiry_reminders_setting_is_parsed_or_refused_with_a_reason() -> None:
    """SINGURA_EXPIRY_REMINDERS: thresholds largest first (default 30d,7d,1d, "none" for
    no reminder); a bad value is a ConfigError naming the variable and the fix."""
    assert load_settings({}).expiry_reminders == DEFAULT_EXPIRY_REMINDERS
    assert parse_expiry_reminders("1d, 2w,90m") == (
        ("2w", 14 * 86400.0),
        ("1d", 86400.0),
        ("90m", 5400.0),
    )
    assert parse_expiry_reminders("none") == ()
    for bad, fragment in (
        ("7 days", "whole number and a unit"),
        ("-1d", "whole number and a unit"),
        ("0d", "more than 0"),
        ("400d", "at most 366d"),
        ("1d,24h", "repeats '1d'"),
    ):
        with pytest.raises(ConfigError) as refused:
            load_settings({"SINGURA_EXPIRY_REMINDERS": bad})
        assert "SINGURA_EXPIRY_REMINDERS" in str(refused.value)
        assert fragment in str(refused.value)
