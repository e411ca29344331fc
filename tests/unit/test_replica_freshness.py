"""The arithmetic behind replica reads and multi-host URLs, without servers: when a
replica counts as current, what a consistency token looks like, and how every host
of a libpq-style URL is named in messages."""

from __future__ import annotations

import re
from contextvars import copy_context
from pathlib import Path

import pytest

from singura_vault.api.replica_reads import REPLICA_READS, reads_from_replica
from singura_vault.context import RequestContext, bind_request, format_lsn, parse_lsn
from singura_vault.db.reachability import endpoint, hosts_of
from singura_vault.db.replica import Freshness, ReadRouter


def test_a_replica_is_current_as_of_the_newest_primary_sample_it_has_replayed() -> None:
    """A replica is current as of the newest primary sample its replay has passed, and serves reads
    only while that is within the lag bound."""
    freshness = Freshness(max_lag_s=1.0)
    assert freshness.staleness_s(now=0.0) is None  # nothing known yet: not current
    assert not freshness.serves(None, now=0.0)
    freshness.primary_at(10.0, 100)
    freshness.primary_at(10.5, 200)
    freshness.primary_at(11.0, 300)
    freshness.replica_replayed(250)  # past the 10.5 sample, not the 11.0 one
    assert freshness.current_as_of == 10.5
    assert freshness.serves(None, now=11.4)  # 0.9 s stale
    assert not freshness.serves(None, now=11.6)  # 1.1 s stale: the primary answers
    # A consistency token beyond what the replica replayed skips it, however fresh.
    assert freshness.serves(250, now=11.0)
    assert not freshness.serves(251, now=11.0)


def test_an_idle_primary_keeps_a_caught_up_replica_current() -> None:
    """No new WAL: each sample is already replayed, so the replica stays current."""
    freshness = Freshness(max_lag_s=0.5)
    for tick in range(10):
        freshness.primary_at(float(tick), 500)
        freshness.replica_replayed(500)
    assert freshness.current_as_of == 9.0
    assert freshness.serves(None, now=9.2)


def test_a_replica_that_stops_replaying_falls_out_of_the_bound() -> None:
    """A replica that stops replaying while the primary moves on stops serving reads once the bound
    passes."""
    freshness = Freshness(max_lag_s=1.0)
    freshness.primary_at(0.0, 100)
    freshness.replica_replayed(100)
    for tick in range(1, 5):  # the primary moves on, the replica does not
        freshness.primary_at(float(tick), 100 + tick)
        freshness.replica_replayed(100)
    assert freshness.current_as_of == 0.0
    assert not freshness.serves(None, now=4.0)


def test_only_declared_rpcs_read_from_a_replica_and_only_statements_that_record_nothing() -> None:
    """The one decision: api/replica_reads.py names the RPC, the read router lets through
    its statements that do not write; any other RPC, and any write, reads the primary."""
    assert reads_from_replica("/singura.vault.v1.CredentialService/GetCredential")
    assert not reads_from_replica("/singura.vault.v1.CredentialService/RevealCredential")
    assert not reads_from_replica("/singura.vault.v1.CredentialService/StoreCredential")

    def routes(replica_ok: bool, writes: bool) -> bool:
        bind_request(RequestContext(request_id="r", actor="k", replica_ok=replica_ok))
        return ReadRouter.routes(writes)

    # Each in a context of its own, so no request context is left behind.
    assert copy_context().run(routes, True, False)
    assert not copy_context().run(routes, True, True)
    assert not copy_context().run(routes, False, False)


def test_the_operators_guide_lists_exactly_the_replica_reads() -> None:
    """docs/high-availability.md's "What may go there" names the RPCs of
    api/replica_reads.py, no more and no fewer."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "high-availability.md").read_text()
    section = text.split("**What may go there:**", 1)[1].split("**What never goes there:**")[0]
    listed = set(re.findall(r"`([A-Z][A-Za-z]+)`", section))
    assert listed == {method.rsplit("/", 1)[1] for method in REPLICA_READS}


@pytest.mark.parametrize(
    ("lsn", "text"), [(0, "0/0"), (0x3000060, "0/3000060"), (0x16_B374D848, "16/B374D848")]
)
def test_consistency_tokens_are_postgresql_lsns(lsn: int, text: str) -> None:
    """Consistency tokens are PostgreSQL LSNs in their X/X text form, read in either case."""
    assert format_lsn(lsn) == text
    assert parse_lsn(text) == lsn
    assert parse_lsn(text.lower()) == lsn


@pytest.mark.parametrize("bad", ["", "yesterday", "0/", "/1", "1/2/3", "G/1", "123456789/0"])
def test_anything_else_is_not_a_token(bad: str) -> None:
    """Text that is not an LSN is not read as a consistency token."""
    assert parse_lsn(bad) is None


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (
            "postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write",
            "h1:5432, h2:5433",
        ),
        ("postgresql://u@db.example/db", "db.example:5432"),
        ("postgresql://u@[::1]:6432,h2/db", "[::1]:6432, h2:5432"),
        (
            "postgresql://u@/db?host=/run/a,/run/b&port=5432,5433",
            "/run/a (Unix socket, port 5432), /run/b (Unix socket, port 5433)",
        ),
        ("postgresql:///db", "localhost:5432"),
    ],
)
def test_every_host_of_a_url_is_named_and_no_password(url: str, named: str) -> None:
    """Every host of a multi-host URL is named with its port in messages, and the password never
    is."""
    assert endpoint(url) == named
    assert "pw" not in endpoint(url)
    assert all(host and port.isdigit() for host, port in hosts_of(url))
