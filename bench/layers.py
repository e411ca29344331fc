"""Micro-benchmark: what each layer of a unary call costs in Python, in µs per call.

A bare grpc.aio echo serves a unary call in about 0.17 ms of CPU on this class of
machine (issue 26); everything the vault adds on top of that is paid in the layers
below, one call at a time. This script times each of them in isolation, in a loop on
one event loop (uvloop when installed, as ``serve`` runs), and prints a table, so
that the next change that makes one of them dearer shows up here before it shows up
as calls/s:

- the guarded request deserializer against protobuf's own ``FromString``;
- request validation (``api/request_checks.check_request``) on a small request
  (RevealCredentialRequest) and on a large one (CreateConnectionRequest with
  permissions and a metadata Struct);
- the interceptor's per-call set-up: request id, context and log binds, metrics,
  the server span when no exporter is set (and with a caller's ``traceparent``);
- the whole interceptor chain around a handler that does nothing, without and with
  authentication (an API key already in the key cache), minus the bare handler;
- the protobuf conversion of a Credential, the RevealCredentialResponse built as the
  servicer builds it, and the response's serialization;
- with PostgreSQL (the default; ``--no-database`` skips it): ``SELECT 1`` on a pooled
  asyncpg connection against the same round trip through ``Database.fetch_scoped``
  (scope, request context, error mapping and pool metrics around it). These two
  are round trips, so their wall time is mostly PostgreSQL's; the CPU column is
  this process's share.

Each row is the best of ``--repeat`` rounds of ``--iterations`` calls (µs per call,
wall and this process's CPU); the median round is beside it to show the noise. The
figures are for comparing two builds on the same machine in the same minute, not
targets: nothing asserts them.

    python bench/layers.py
    python bench/layers.py --iterations 20000 --repeat 7 --no-database
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import _harness as h
import grpc
import structlog
from opentelemetry import trace

from singura_vault import metrics
from singura_vault.api import call_metadata, interceptors, request_checks
from singura_vault.api.credentials import credential_to_proto, fill_credential
from singura_vault.config import PoolSettings
from singura_vault.context import RequestContext, bind_request
from singura_vault.db.pool import Database
from singura_vault.db.setup import bootstrap_embedded_roles
from singura_vault.domain.api_keys import KeyLookup
from singura_vault.domain.credentials import Credential, CredentialState, CredentialType
from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.service.access import AccessService, RateLimit

METHOD = "/singura.vault.v1.CredentialService/RevealCredential"
ORGANIZATION_ID = uuid.UUID("6f1c1d0e-4c47-4f0e-9a55-2f1f8c0c0a01")
KEY_ID = "benchlayerskey01"
KEY_TEXT = f"svk_{KEY_ID}_{'x' * 43}"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


# -- what the layers are fed ----------------------------------------------------------------


def _reveal_request() -> crpb.RevealCredentialRequest:
    return crpb.RevealCredentialRequest(
        organization_id=str(ORGANIZATION_ID),
        connection_id=str(uuid.uuid4()),
        type=crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
    )


def _large_request() -> cpb.CreateConnectionRequest:
    request = cpb.CreateConnectionRequest(request_id=str(uuid.uuid4()))
    connection = request.connection
    connection.organization_id = str(ORGANIZATION_ID)
    connection.platform = cpb.PLATFORM_SLACK
    connection.platform_user_id = "U0123456"
    connection.platform_workspace_id = "T0123456"
    connection.display_name = "Bench workspace"
    connection.permissions_granted.extend(f"scope:{i}" for i in range(50))
    connection.metadata.update(
        {"team": {"id": "T0123456", "domains": ["a", "b", "c"]}, "seats": 42, "tags": ["x"] * 10}
    )
    return request


def _credential() -> Credential:
    now = datetime.now(UTC)
    return Credential(
        id=uuid.uuid4(),
        organization_id=ORGANIZATION_ID,
        connection_id=uuid.uuid4(),
        type=CredentialType.ACCESS_TOKEN,
        version=3,
        state=CredentialState.ACTIVE,
        key_version=1,
        fingerprint="sha256:" + "ab" * 16,
        created_at=now,
        expires_at=now + timedelta(hours=1),
        state_changed_at=None,
    )


class _Context:
    """Just enough of a grpc.aio ServicerContext for the interceptor's success path."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: object) -> None:
        pass

    async def abort(self, code: object, details: str = "", trailing_metadata: object = ()) -> None:
        raise RuntimeError(f"the benchmark's call failed: {code} {details}")


class _Details(NamedTuple):
    """grpc.HandlerCallDetails as the server hands it to interceptors."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class _KnownKey:
    """An ApiKeyRepository that knows one key (only reached once: the cache holds it)."""

    async def lookup(self, key_id: str, digest: bytes) -> KeyLookup:
        return KeyLookup("ok", ORGANIZATION_ID, ("reader", "revealer"), None)


async def _noop(request: Any, context: Any) -> crpb.RevealCredentialResponse:
    return _RESPONSE


_RESPONSE = crpb.RevealCredentialResponse(credential=credential_to_proto(_credential()), value="v")


def _chain(access: AccessService | None) -> Callable[[Any, Any], Awaitable[Any]]:
    """The vault's interceptor wrapped around _noop, as the server would call it."""
    handler = grpc.unary_unary_rpc_method_handler(
        _noop,
        request_deserializer=crpb.RevealCredentialRequest.FromString,
        response_serializer=crpb.RevealCredentialResponse.SerializeToString,
    )

    async def continuation(details: Any) -> Any:
        return handler

    interceptor = interceptors.VaultInterceptor(access)
    details: Any = _Details(METHOD, ())
    loop = asyncio.get_event_loop()
    result = loop.run_until_complete(interceptor.intercept_service(continuation, details))
    return cast(Callable[[Any, Any], Awaitable[Any]], result.unary_unary)


# -- timing ---------------------------------------------------------------------------------


class Timings:
    def __init__(self, iterations: int, repeat: int) -> None:
        self.iterations = iterations
        self.repeat = repeat
        self.rows: list[tuple[str, float, float, float, str]] = []

    def record(self, name: str, rounds: list[tuple[float, float]], n: int, note: str) -> None:
        walls = sorted(w / n * 1e6 for w, _ in rounds)
        cpus = sorted(c / n * 1e6 for _, c in rounds)
        self.rows.append((name, walls[0], statistics.median(walls), cpus[0], note))

    def sync(self, name: str, fn: Callable[[], object], note: str = "", n: int = 0) -> None:
        n = n or self.iterations
        rounds = []
        for _ in range(self.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                fn()
            rounds.append((time.perf_counter() - wall, time.process_time() - cpu))
        self.record(name, rounds, n, note)

    def run_async(
        self, name: str, fn: Callable[[], Awaitable[object]], note: str = "", n: int = 0
    ) -> None:
        n = n or self.iterations

        async def loop() -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                await fn()
            return time.perf_counter() - wall, time.process_time() - cpu

        rounds = [asyncio.get_event_loop().run_until_complete(loop()) for _ in range(self.repeat)]
        self.record(name, rounds, n, note)

    def subtract(self, name: str, whole: str, part: str, note: str = "") -> None:
        """A derived row: ``whole`` minus ``part`` (best and median alike)."""
        rows = {row[0]: row for row in self.rows}
        a, b = rows[whole], rows[part]
        self.rows.append((name, a[1] - b[1], a[2] - b[2], a[3] - b[3], note))


@contextmanager
def _in_call() -> Iterator[None]:
    """Run the body as if inside a call (the binds it makes are undone after)."""
    structlog.contextvars.clear_contextvars()
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        bind_request(RequestContext(request_id="", actor="system"))


def _per_call_layers(t: Timings) -> None:
    request = _reveal_request()
    encoded = request.SerializeToString()
    guarded = request_checks.guarded(crpb.RevealCredentialRequest.FromString)
    assert guarded is not None
    t.sync(
        "deserialize: protobuf FromString", lambda: crpb.RevealCredentialRequest.FromString(encoded)
    )
    t.sync("deserialize: guarded (size check, no raise)", lambda: guarded(encoded))
    t.sync("request_checks: RevealCredentialRequest", lambda: request_checks.check_request(request))
    large = _large_request()
    t.sync(
        "request_checks: CreateConnectionRequest",
        lambda: request_checks.check_request(large),
        "50 permissions, a 3-level metadata Struct",
        n=max(1, t.iterations // 10),
    )
    # A stand-in for grpc's ServicerContext (typed as Any: it has only what is used).
    context: Any = _Context((("authorization", f"Bearer {KEY_TEXT}"),))
    traced: Any = _Context((("authorization", f"Bearer {KEY_TEXT}"), ("traceparent", TRACEPARENT)))
    t.sync("metadata to dict", lambda: call_metadata.metadata_of(context))
    t.sync("request id (fresh uuid4)", lambda: call_metadata.request_id_of({}))

    def log_binds() -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(rpc_method=METHOD, request_id="r")
        structlog.contextvars.bind_contextvars(key_id=KEY_ID)

    def request_binds() -> None:
        bind_request(RequestContext(request_id="r", actor="anonymous"))
        bind_request(RequestContext(request_id="r", actor=KEY_ID))

    with _in_call():
        t.sync("context: structlog clear + binds", log_binds, "rpc_method, request_id, key_id")
        t.sync("context: bind_request x2", request_binds, "anonymous, then the principal")

    def metric_calls() -> None:
        metrics.rpc_started(interceptors.UNARY, METHOD)
        metrics.rpc_handled(interceptors.UNARY, METHOD, "OK", 0.001)

    t.sync("metrics: rpc_started + rpc_handled", metric_calls)
    noop_tracer = trace.NoOpTracer()
    plain, with_parent = call_metadata.metadata_of(context), call_metadata.metadata_of(traced)

    def span_noop() -> None:
        span = interceptors._server_span(noop_tracer, METHOD, plain, "r")
        span.end()

    def span_parent() -> None:
        span = interceptors._server_span(noop_tracer, METHOD, with_parent, "r")
        span.end()

    t.sync("tracing: span, no exporter", span_noop)
    t.sync("tracing: span, no exporter, traceparent", span_parent, "W3C context extracted")
    with _in_call():
        t.sync(
            "interceptor: _Call set-up",
            lambda: interceptors._Call(METHOD, context, interceptors.UNARY, noop_tracer),
            "request id, binds, metrics start, span",
        )
    credential = _credential()
    t.sync("_convert: credential_to_proto", lambda: credential_to_proto(credential))

    def reveal_response() -> crpb.RevealCredentialResponse:
        response = crpb.RevealCredentialResponse(value="xoxb-value")
        fill_credential(response.credential, credential)
        return response

    t.sync("response: RevealCredentialResponse built", reveal_response, "as the servicer does")
    t.sync("response: SerializeToString", _RESPONSE.SerializeToString)


def _chain_layers(t: Timings) -> None:
    request = _reveal_request()
    anonymous = _Context(())
    keyed = _Context((("authorization", f"Bearer {KEY_TEXT}"),))
    access = AccessService(_KnownKey(), os.urandom(32), RateLimit(0, 1))  # type: ignore[arg-type]
    bare, open_chain, authed_chain = _noop, _chain(None), _chain(access)
    loop = asyncio.get_event_loop()
    with _in_call():
        loop.run_until_complete(authed_chain(request, keyed))  # puts the key in the cache
        t.run_async("handler: no-op, bare", lambda: bare(request, anonymous))
        t.run_async("interceptor chain: no auth", lambda: open_chain(request, anonymous))
        t.run_async("interceptor chain: cached key", lambda: authed_chain(request, keyed))
        t.run_async("authenticate: cached key", lambda: access.authenticate(f"Bearer {KEY_TEXT}"))
    t.subtract(
        "= interceptor overhead, no auth", "interceptor chain: no auth", "handler: no-op, bare"
    )
    t.subtract(
        "= interceptor overhead, cached key",
        "interceptor chain: cached key",
        "handler: no-op, bare",
    )


async def _database_layers(t: Timings, pg: h.Postgres) -> str:
    """SELECT 1 on a pooled connection, bare and through Database.fetch_scoped."""
    await bootstrap_embedded_roles(pg.superuser_dsn)
    db = await Database.connect(pg.service_dsn, PoolSettings(min_size=2, max_size=4))
    try:
        version = await h.postgres_version(pg)
        pool = db._pool  # the benchmark compares the bare driver with the wrapper

        # fetch_scoped passes the scope (setting, value, actor, request id) as the first
        # four parameters; the bare call sends the same four, so only the wrapper differs.
        scoped_sql = "SELECT 1 WHERE $1::text IS NOT NULL AND $2::text IS NOT NULL "
        scoped_sql += "AND $3::text IS NOT NULL AND $4::text IS NOT NULL"
        scope = ("singura.organization_id", str(ORGANIZATION_ID), KEY_ID, "r")

        async def bare() -> None:
            async with pool.acquire() as conn:
                await conn.fetch(scoped_sql, *scope)

        async def scoped() -> None:
            await db.fetch_scoped(ORGANIZATION_ID, scoped_sql)

        n = max(1, t.iterations // 10)
        bind_request(RequestContext(request_id="r", actor=KEY_ID))
        with _in_call():
            await bare()  # prepare both statements first
            await scoped()
            # Rounds of the two alternate, so that a change in the machine's load
            # between them weighs on both alike.
            rows = {
                "db: SELECT 1, bare asyncpg pool": bare,
                "db: same, Database.fetch_scoped": scoped,
            }
            rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
            for _ in range(t.repeat):
                for name, fn in rows.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(n):
                        await fn()
                    rounds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            for name, measured in rounds.items():
                t.record(name, measured, n, "a round trip: CPU column is ours")
        t.subtract(
            "= fetch_scoped overhead",
            "db: same, Database.fetch_scoped",
            "db: SELECT 1, bare asyncpg pool",
        )
        return version
    finally:
        await db.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="µs per call of each Python layer of a unary vault call "
        "(a regression check, not a target).",
    )
    parser.add_argument(
        "--iterations", type=int, default=10_000, help="calls per round (default 10000)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds; best is shown (default 5)")
    parser.add_argument(
        "--no-database",
        action="store_true",
        help="skip the PostgreSQL rows (no embedded server is started)",
    )
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.iterations < 10 or args.repeat < 1:
        raise SystemExit("--iterations must be at least 10 and --repeat at least 1")
    h.quiet_server_logs(os.devnull)
    try:
        import uvloop

        asyncio.set_event_loop(uvloop.new_event_loop())
    except ImportError:
        asyncio.set_event_loop(asyncio.new_event_loop())
    t = Timings(args.iterations, args.repeat)
    _per_call_layers(t)
    _chain_layers(t)
    version = "not started"
    if not args.no_database:
        with h.embedded_postgres() as pg:
            version = asyncio.get_event_loop().run_until_complete(_database_layers(t, pg))
    print(h.machine_summary(version))
    print(
        f"{args.repeat} rounds of {args.iterations} calls per row (database rows: "
        f"{max(1, args.iterations // 10)}); best round, median round; figures are noisy "
        "on a shared machine: compare builds in the same minute"
    )
    print()
    print(
        h.table(
            ["layer", "µs/call best", "µs/call median", "CPU µs/call best", "note"],
            [list(row) for row in t.rows],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
