"""Prometheus metrics, served on SINGURA_METRICS_LISTEN (off by default).

Labels are bounded: gRPC method and status code names, query names, outcomes.
No label ever carries a secret, an organization id or any other unbounded value.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from singura_vault.errors import AUTH_FAILURE_CAUSES

# No `*_created` series beside every counter and histogram: dashboards do not use them
# and they double the series count.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

REGISTRY = CollectorRegistry(auto_describe=True)
# The standard process (CPU, memory, file descriptors) and Python (GC, platform) series.
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# RPC metrics in grpc-ecosystem's shape (go-grpc-prometheus, py-grpc-prometheus), so
# that their dashboards and alerts work unchanged.
_RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
RPC_STARTED = Counter(
    "grpc_server_started",
    "Total number of RPCs started on the server.",
    _RPC_LABELS,
    registry=REGISTRY,
)
RPC_HANDLED = Counter(
    "grpc_server_handled",
    "Total number of RPCs completed on the server, regardless of success or failure.",
    [*_RPC_LABELS, "grpc_code"],
    registry=REGISTRY,
)
RPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Histogram of response latency (seconds) of gRPC that had been application-level "
    "handled by the server.",
    _RPC_LABELS,
    registry=REGISTRY,
)
SLOW_QUERIES = Counter(
    "singura_db_slow_queries",
    "Statements slower than DB_SLOW_QUERY_MS, by query name.",
    ["query"],
    registry=REGISTRY,
)
CREDENTIAL_REVEALS = Counter(
    "singura_credential_reveals",
    "RevealCredential attempts, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
PROVIDER_SIGNALS = Counter(
    "singura_provider_signals",
    "Provider signals forwarded to IngestProviderSignal, by platform and outcome "
    "(taken, bad_signature, stale, replayed, malformed, unsupported, unavailable).",
    ["platform", "outcome"],
    registry=REGISTRY,
)
DATA_LOSS_EVENTS = Counter(
    "singura_data_loss_events",
    "Ciphertexts or data keys that failed their integrity check.",
    registry=REGISTRY,
)
REWRAPPED = Counter(
    "singura_rewrapped_credentials",
    "Credentials re-encrypted onto a newer data key by this process.",
    registry=REGISTRY,
)
POOL_WAITING = Gauge(
    "singura_db_pool_waiting", "Requests waiting for a pooled connection.", registry=REGISTRY
)
POOL_ACQUIRE = Histogram(
    "singura_db_pool_acquire_seconds",
    "Time to get a pooled connection.",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
    registry=REGISTRY,
)
DB_UNAVAILABLE = Counter(
    "singura_db_unavailable",
    "Database calls that failed because PostgreSQL was unreachable or the pool exhausted.",
    registry=REGISTRY,
)
REPLICA_READS = Counter(
    "singura_replica_reads",
    "Reads that tolerate staleness, by where they went (DATABASE_REPLICA_URL).",
    ["target"],
    registry=REGISTRY,
)
REPLICA_STALENESS = Gauge(
    "singura_replica_staleness_seconds",
    "How far behind the replica may be; -1 while it is not known to be current.",
    registry=REGISTRY,
)
AUDIT_APPENDED = Gauge(
    "singura_audit_chain_events",
    "Audit events ever appended to the hash chains (all vault processes; read from PostgreSQL).",
    registry=REGISTRY,
)
EVENTS_EMITTED = Counter(
    "singura_events_emitted",
    "Events emitted, by type, counted by the process whose sequencer numbered them: each "
    "event is numbered once, so the sum over processes is every event written "
    "(docs/events.md#metrics).",
    ["type"],
    registry=REGISTRY,
)
EVENTS_UNSEQUENCED_AGE = Gauge(
    "singura_events_unsequenced_oldest_seconds",
    "Age of the oldest committed event without a global position yet, as the last "
    "sequencer run of this process saw it (0 when none): the admin stream's lag.",
    registry=REGISTRY,
)
OAUTH_REFRESHES = Counter(
    "singura_oauth_refreshes",
    "Calls to OAuth token endpoints by this process, by platform and outcome "
    "(success, transient, invalid_grant, invalid_client, revoked).",
    ["platform", "outcome"],
    registry=REGISTRY,
)
OAUTH_REFRESH_SECONDS = Histogram(
    "singura_oauth_refresh_seconds",
    "Time an OAuth token endpoint took to answer a refresh.",
    ["platform"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
OAUTH_LOCK_WAIT = Histogram(
    "singura_oauth_refresh_lock_wait_seconds",
    "Time a refresh waited for another refresh of the same connection (any process).",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "singura_auth_failures",
    "Calls refused as UNAUTHENTICATED, by cause: missing (no authorization metadata), "
    "not_bearer, malformed (not svk_<id>_<secret>), unknown (no such key or a wrong "
    "secret), revoked, expired.",
    ["cause"],
    registry=REGISTRY,
)
# Every cause is a series from the start (0 until it happens), so that rate() and
# alerts see the first failure.
for _cause in AUTH_FAILURE_CAUSES:
    AUTH_FAILURES.labels(cause=_cause)
REQUESTS_TOO_LARGE = Counter(
    "singura_requests_too_large",
    "Requests refused with INVALID_ARGUMENT (REQUEST_TOO_LARGE) because their encoded "
    "size exceeded the vault's request limit.",
    registry=REGISTRY,
)
COALESCED_BATCH_SIZE = Histogram(
    "singura_db_batch_size",
    "Calls whose database work one coalesced statement served, by operation "
    "(reveal_read, audit_append, credential_get, store_plan, store_write, ...).",
    ["operation"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128),
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "singura_webhook_deliveries",
    "Webhook delivery attempts by this process, by outcome (delivered, http_error, gone, "
    "timeout, network_error, refused_address, secret_unavailable).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "singura_webhook_delivery_seconds",
    "Duration of webhook HTTP attempts (request sent to answer read, or failure).",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_OLDEST_UNDELIVERED = Gauge(
    "singura_webhook_oldest_undelivered_seconds",
    "Age of the oldest pending delivery of an enabled webhook endpoint, any organization "
    "(0 when none).",
    registry=REGISTRY,
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "singura_webhook_endpoints_disabled",
    "Webhook endpoints this process disabled, by reason (gone: a 410; failing: "
    "SINGURA_WEBHOOK_DISABLE_AFTER of failures).",
    ["reason"],
    registry=REGISTRY,
)
POOL_SIZE = Gauge("singura_db_pool_size", "Connections in the pool.", registry=REGISTRY)
POOL_IDLE = Gauge("singura_db_pool_idle", "Idle connections in the pool.", registry=REGISTRY)


def watch_pool(size: Callable[[], int], idle: Callable[[], int]) -> None:
    """Pool gauges read the pool at scrape time (no background task)."""
    POOL_SIZE.set_function(lambda: float(size()))
    POOL_IDLE.set_function(lambda: float(idle()))


def serve_metrics(listen: str) -> int:
    """Start the /metrics HTTP endpoint on host:port; returns the bound port."""
    host, _, port = listen.rpartition(":")
    server, _ = start_http_server(int(port), addr=host.strip("[]"), registry=REGISTRY)
    bound: int = server.server_port
    return bound


def auth_failed(cause: str) -> None:
    """Count an UNAUTHENTICATED refusal; a cause outside the known set is not a label."""
    if cause in AUTH_FAILURE_CAUSES:
        AUTH_FAILURES.labels(cause=cause).inc()


@lru_cache(maxsize=1024)
def _rpc_children(grpc_type: str, full_method: str) -> tuple[Any, Any, dict[str, Any]]:
    """The labelled series of one method, looked up once (a label lookup per call costs
    more than the increment)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    labels = (grpc_type, service, method)
    return RPC_STARTED.labels(*labels), RPC_HANDLING.labels(*labels), {}


def rpc_started(grpc_type: str, full_method: str) -> None:
    _rpc_children(grpc_type, full_method)[0].inc()


def rpc_handled(grpc_type: str, full_method: str, code: str, seconds: float) -> None:
    _, handling, handled = _rpc_children(grpc_type, full_method)
    child = handled.get(code)
    if child is None:
        service, _, method = full_method.lstrip("/").rpartition("/")
        child = handled[code] = RPC_HANDLED.labels(grpc_type, service, method, code)
    child.inc()
    handling.observe(seconds)
