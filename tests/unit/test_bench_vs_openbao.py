"""The pure helpers of bench/vs_openbao.py: the batch-size histogram read from a
metrics text and diffed over a window, the open-loop schedule and its summary, the
targets' verdicts and --pin's CPU split. No timing is asserted: these are the
computations the benchmark's tables come from, on fixed inputs."""

from __future__ import annotations

import collections
import math
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# The benchmark's packages are imported as the scripts import them (bench/ first on
# sys.path, ``import _openbao``).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _openbao import batch_metrics, open_loop, pinning, targets, wait_events

BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)


def _exposition(observations: dict[str, list[float]]) -> str:
    """A metrics page as the vault serves it: the batch histogram plus another metric."""
    registry = CollectorRegistry()
    histogram = Histogram(
        "singura_db_batch_size", "x", ["operation"], buckets=BUCKETS, registry=registry
    )
    Counter("singura_other_total", "y", registry=registry).inc(5)
    for operation, values in observations.items():
        for value in values:
            histogram.labels(operation).observe(value)
    return generate_latest(registry).decode()


def test_parse_reads_each_operation_s_count_sum_and_cumulative_buckets() -> None:
    """Count, sum and cumulative buckets per operation; other metrics are ignored."""
    parsed = batch_metrics.parse(_exposition({"reveal_read": [1, 3, 9], "store_write": [2]}))
    assert set(parsed) == {"reveal_read", "store_write"}
    reveal = parsed["reveal_read"]
    assert (reveal.count, reveal.total) == (3, 13)
    buckets = dict(reveal.buckets)
    assert (buckets[1.0], buckets[2.0], buckets[3.0], buckets[8.0], buckets[12.0]) == (
        1,
        1,
        2,
        2,
        3,
    )
    assert buckets[math.inf] == 3


def test_window_keeps_only_what_happened_between_two_scrapes() -> None:
    """Before 1 batch of 1; after 1 of 1 + 3 of 16: the window has 3 batches of 16,
    p50 and p90 in the le=16 bucket; an operation with nothing new is left out."""
    before = batch_metrics.parse(_exposition({"reveal_read": [1], "credential_get": [2]}))
    after = batch_metrics.parse(
        _exposition({"reveal_read": [1, 16, 16, 16], "credential_get": [2]})
    )
    window = batch_metrics.window(before, after)
    assert set(window) == {"reveal_read"}
    reveal = window["reveal_read"]
    assert (reveal.count, reveal.total) == (3, 48)
    assert reveal.bucket_of(0.5) == 16
    assert reveal.bucket_of(0.9) == 16


def test_window_of_a_vault_without_the_metric_is_empty() -> None:
    """No histogram at all (a vault without coalescing): nothing, which the report
    prints as "no coalescing"."""
    registry = CollectorRegistry()
    Counter("singura_other_total", "y", registry=registry).inc()
    text = generate_latest(registry).decode()
    assert batch_metrics.window(batch_metrics.parse(text), batch_metrics.parse(text)) == {}


def test_bucket_of_picks_the_first_bucket_holding_the_quantile() -> None:
    """Batches of 1, 1, 1, 5, 40: p50 in le=1, p90 in le=48; empty is nan."""
    histogram = batch_metrics.parse(_exposition({"op": [1, 1, 1, 5, 40]}))["op"]
    assert histogram.bucket_of(0.5) == 1
    assert histogram.bucket_of(0.7) == 6
    assert histogram.bucket_of(0.9) == 48
    assert math.isnan(batch_metrics.Histogram((), 0, 0).bucket_of(0.5))


def test_combine_sums_the_workers_histograms() -> None:
    """Two workers' pages add up per operation."""
    one = batch_metrics.parse(_exposition({"op": [2, 2]}))
    two = batch_metrics.parse(_exposition({"op": [8], "other": [1]}))
    total = batch_metrics.combine([one, two])
    assert (total["op"].count, total["op"].total) == (3, 12)
    assert dict(total["op"].buckets)[2.0] == 2
    assert total["other"].count == 1


def test_due_until_issues_every_call_due_and_none_at_or_after_the_end() -> None:
    """At 100 calls/s from t=10: at t=10 call 0 is due; at t=10.0505 calls 0-5; a
    late wake-up catches up at once; nothing due at or after the end (t=11)."""
    assert open_loop.due_until(100.0, 10.0, 11.0, 0, 10.0) == 1
    assert open_loop.due_until(100.0, 10.0, 11.0, 1, 10.0505) == 6
    assert open_loop.due_until(100.0, 10.0, 11.0, 6, 10.5) == 51
    assert open_loop.due_until(100.0, 10.0, 11.0, 51, 12.0) == 100
    # Never goes back: a call already issued stays issued.
    assert open_loop.due_until(100.0, 10.0, 11.0, 60, 10.2) == 60


def test_summarize_measures_from_when_calls_were_due_and_counts_late_starts() -> None:
    """Latency runs from due (not from start); only calls due in the window count;
    a start more than 2 ms after due is late; errors count by status."""
    records = [
        open_loop.Record(due=0.5, started=0.5, ended=0.6, code="OK", items=1),  # warm-up
        open_loop.Record(due=1.0, started=1.0, ended=1.002, code="OK", items=1),
        open_loop.Record(due=1.1, started=1.105, ended=1.106, code="OK", items=1),  # late
        open_loop.Record(due=1.2, started=1.2015, ended=1.3, code="UNAVAILABLE", items=0),
        open_loop.Record(due=1.3, started=1.3, ended=1.303, code="OK", items=1),
        open_loop.Record(due=2.0, started=2.0, ended=2.001, code="OK", items=1),  # after
    ]
    summary = open_loop.summarize(records, 1.0, 2.0)
    assert (summary.due, summary.ok, summary.items, summary.late) == (4, 3, 3, 1)
    assert dict(summary.errors) == {"UNAVAILABLE": 1}
    assert summary.p50_s == pytest.approx(0.003)
    assert summary.p99_s == pytest.approx(0.006)


def test_targets_say_met_missed_or_not_measured() -> None:
    """Each target's ratio against its goal; a missing row is "not measured"; the
    open-loop target is a ceiling."""
    found = {
        t.text.split(" ")[0]: t
        for t in targets.evaluate(
            vault={"reveal": 1000.0, "get": 3000.0, "write": 900.0, "token": 950.0},
            bao={"write": 400.0},
            echo=5000.0,
            open_p99_ms={"reveal": 12.0, "get": 4.0},
        )
    }
    assert (found["RevealCredential"].measured, found["RevealCredential"].verdict) == (
        0.2,
        "missed",
    )
    assert found["GetCredential"].verdict == "met"  # 0.6 >= 0.5
    assert found["StoreCredential"].verdict == "met"  # 2.25 >= 2
    assert found["BatchRevealCredentials"].verdict == "not measured"
    assert found["GetAccessToken"].verdict == "met"  # 0.95 >= 0.9
    assert found["reveal:"].verdict == "missed"  # 12 ms > 10
    assert found["get:"].verdict == "met"


def test_pin_plan_puts_clients_on_the_lower_half_and_servers_on_the_rest() -> None:
    """2 CPUs: clients on 0, servers on 1; 3: clients on the first; 1 CPU refuses."""
    two = pinning.plan({0, 1})
    assert (two.clients, two.servers) == (frozenset({0}), frozenset({1}))
    three = pinning.plan({4, 5, 6})
    assert (three.clients, three.servers) == (frozenset({4}), frozenset({5, 6}))
    with pytest.raises(ValueError, match="at least 2"):
        pinning.plan({0})


def test_pin_check_names_threads_off_the_wanted_cpus() -> None:
    """A thread on another mask fails the check, naming where it runs."""
    ok = pinning.check("echo", collections.Counter({frozenset({1}): 8}), frozenset({1}))
    assert ok == "echo: 8 threads, all on CPU 1"
    stray = collections.Counter({frozenset({1}): 7, frozenset({0, 1}): 1})
    with pytest.raises(RuntimeError, match=r"1 on CPUs 0,1"):
        pinning.check("echo", stray, frozenset({1}))


def test_wait_sample_counts_busy_backends_by_what_they_wait_on() -> None:
    """Active backends count under their wait event or CPU, a backend holding a
    transaction under ClientRead; idle connections and idle background loops not at all."""
    rows = [
        ("client backend", "active", None, None),
        ("client backend", "active", "IO", "WalSync"),
        ("client backend", "active", "IO", "WalSync"),
        ("client backend", "idle in transaction", "Client", "ClientRead"),
        ("client backend", "idle", "Client", "ClientRead"),
        ("walwriter", None, "Activity", "WalWriterMain"),
        ("walwriter", None, "IO", "WalWrite"),
        (None, None, None, None),
    ]
    assert wait_events.count(rows) == collections.Counter(
        {
            "CPU": 1,
            "IO:WalSync": 2,
            "Client:ClientRead (in a transaction, waiting for the vault)": 1,
            "IO:WalWrite (walwriter)": 1,
        }
    )


def test_waits_mean_busy_backends_per_sample() -> None:
    """Two samples holding three busy backends between them average 1.5; none is 0."""
    waits = wait_events.Waits(2, collections.Counter({"CPU": 2, "IO:WalSync": 1}))
    other = wait_events.Waits()
    assert other.mean_busy() == 0.0
    other.add(waits)
    assert (other.samples, other.mean_busy()) == (2, 1.5)


def test_embedded_dsn_reads_port_and_socket_directory_from_postmaster_pid() -> None:
    """The superuser's socket DSN from postmaster.pid's lines 4 and 5; a file without
    them is refused."""
    text = "4242\n/data/postgres/data\n1733500000\n54321\n/data/postgres/run\n\n"
    assert wait_events.embedded_dsn(text) == (
        "postgresql://postgres@/postgres?host=/data/postgres/run&port=54321"
    )
    with pytest.raises(ValueError, match="port"):
        wait_events.embedded_dsn("4242\n/data\n")
