"""The asyncpg pool and the two ways a request may use it.

Every request runs in one transaction whose tenant is set with
``set_config(..., true)``: transaction-scoped, so a pooled connection can never
carry one request's organization into the next. Because nothing is ever set at
session level, the pool's reset on release is a no-op (asyncpg still rolls back
an unfinished transaction first), which saves a round trip per request.

The pool's neighbours each do one job for it: db/scope.py (which tenant a statement
enters), db/sessions.py (what each connection is opened with), db/replica.py (read
routing: the replica, its freshness, consistency tokens), db/listen.py (LISTEN),
db/checks.py (the login role and server settings), db/errors.py (driver errors),
db/acquire.py (taking a pooled connection, and what a lost or demoted server makes of it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final
from uuid import UUID

import asyncpg

from singura_vault import metrics
from singura_vault.config import Pooler, PoolSettings
from singura_vault.context import current_request
from singura_vault.db.acquire import acquire
from singura_vault.db.checks import ServiceRole, read_service_role, refuse_unsafe_service_role
from singura_vault.db.errors import (
    ConstraintErrors,
    map_driver_errors,
)
from singura_vault.db.listen import Listener
from singura_vault.db.replica import ReadRouter, WalFunction
from singura_vault.db.scope import RequestScope, scope_setting
from singura_vault.db.sessions import connection_initializer, no_reset
from singura_vault.errors import ConfigError, InvariantBroken, Unavailable
from singura_vault.logs import get_logger

log = get_logger(__name__)

# A fixed statement per WalFunction: no name is ever formatted into SQL.
_WAL_POSITION_SQL: Final[dict[str, str]] = {
    "pg_current_wal_lsn": "SELECT pg_current_wal_lsn()",
    "pg_last_wal_replay_lsn": "SELECT pg_last_wal_replay_lsn()",
}


class Database:
    """The vault's connection pool. Repositories are its only users."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        acquire_timeout_s: float,
        dsn: str = "",
        *,
        listen_dsn: str | None = None,
        pooler: Pooler = "none",
    ) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s
        # LISTEN needs a session of its own on PostgreSQL: behind a transaction pooler
        # only a direct URL will do (None then: listen() refuses rather than listen
        # through the pooler and miss every notification).
        self._listen_dsn = listen_dsn or (dsn if pooler == "none" else None)
        self._listener: Listener | None = None
        self._unavailable_listeners: list[Callable[[], None]] = []
        self._commit_listeners: list[Callable[[], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        # Read routing, only while a replica is attached (db/replica.py).
        self._reads: ReadRouter | None = None

    def attach_replica(self, replica: Database, max_lag_s: float) -> None:
        """Serve reads that tolerate staleness from ``replica`` while it is current
        within ``max_lag_s`` (db/replica.ReadRouter); needs a running event loop."""
        self._reads = ReadRouter(self, replica, max_lag_s)

    @property
    def replica_staleness_s(self) -> float | None:
        """How far behind the replica may be; None without one, or when not current."""
        return None if self._reads is None else self._reads.staleness_s

    def on_unavailable(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever a request finds the database unreachable (the health
        monitor then probes at once instead of at its next interval)."""
        self._unavailable_listeners.append(listener)

    def on_write_committed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each committed transaction that was not read-only
        (the audit sequencer then chains the events it recorded)."""
        self._commit_listeners.append(listener)

    def on_change_committed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each committed write that may have changed tenant
        data, so emitted events (migration 024): every write but a statement that only
        appends audit events (``audit_only``), which no event trigger fires on. A reveal
        is such a statement, so the event sequencer, the webhook worker and the watches
        are not woken by reveals."""
        self._change_listeners.append(listener)

    @classmethod
    async def connect(
        cls, dsn: str, settings: PoolSettings, *, listen_dsn: str | None = None
    ) -> Database:
        """Open the pool; raises Unavailable if PostgreSQL cannot be reached.
        ``listen_dsn``: where :meth:`listen` connects (DATABASE_LISTEN_URL), by default
        ``dsn`` unless ``settings.pooler`` declares a transaction pooler on it.

        Behind a transaction pooler (DATABASE_POOLER=pgbouncer-transaction) each
        statement outside a transaction may run on another server connection, so:
        no statement cache (a named prepared statement lives on one server connection;
        with the cache off asyncpg describes a query with Parse/Describe/Flush, which
        keeps the server linked, and Parses it again in the Bind/Execute/Sync packet
        that runs it: both halves reach the same server, tests/integration/test_pgbouncer.py), and
        no session settings at connect (PgBouncer refuses startup parameters it does
        not know; they are the login role's defaults there instead, which
        db/checks.check_server_settings verifies at start)."""
        pooled = settings.pooler != "none"
        # PgBouncer passes application_name on (it tracks it per client).
        session = {"application_name": "singura-vault"}
        if not pooled:
            session |= settings.session_settings()
        with map_driver_errors():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.min_size,
                max_size=settings.max_size,
                timeout=settings.connect_timeout_ms / 1000,
                max_inactive_connection_lifetime=settings.idle_timeout_ms / 1000,
                reset=no_reset,
                init=connection_initializer(settings),
                # asyncpg's default (100) when nothing is pooled in between.
                statement_cache_size=0 if pooled else 100,
                server_settings=session,
            )
        metrics.watch_pool(pool.get_size, pool.get_idle_size)
        return cls(
            pool,
            settings.connect_timeout_ms / 1000,
            dsn,
            listen_dsn=listen_dsn,
            pooler=settings.pooler,
        )

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the pool once every connection is back; after timeout_s, close the
        ones still out (a task that never returned its connection must not keep the
        process from exiting). An attached replica is closed too."""
        if self._reads is not None:
            await self._reads.close(timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                await self._pool.close()
        except TimeoutError:
            log.warning(
                "db_pool_close_timeout",
                timeout_s=timeout_s,
                size=self._pool.get_size(),
                idle=self._pool.get_idle_size(),
            )
            self._pool.terminate()

    @asynccontextmanager
    async def tenant(
        self, organization_id: UUID, *, read_only: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A transaction that row-level security confines to one organization.
        ``read_only`` opens it READ ONLY (a read that tried to write would fail).

        For an organization key the fence is the key's own organization, whatever
        organization the request named: a service-layer bug that forgot to check
        still reaches nothing outside the caller's tenant.
        """
        setting, value = scope_setting(organization_id)
        async with self._transaction(setting, value, read_only) as conn:
            yield conn

    @asynccontextmanager
    async def admin(self, *, read_only: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A transaction in admin scope: it may list and create organizations, no more.

        Tenant tables ignore admin scope entirely (see migrations/001); to touch
        an organization's data, use :meth:`tenant`. An organization key never
        gets admin scope: its transaction is confined to its own organization.
        """
        setting, value = scope_setting(None)
        async with self._transaction(setting, value, read_only) as conn:
            yield conn

    async def fetch_scoped(
        self,
        organization_id: UUID | None,
        sql: str,
        *args: object,
        writes: bool = False,
        audit_only: bool = False,
        constraint_messages: ConstraintErrors | None = None,
    ) -> list[asyncpg.Record]:
        """Run one scoped SQL function (migration 013) in one round trip: its first four
        parameters get the request's scope -- ``organization_id``'s tenant, or admin scope
        for None, fenced to an organization key's own tenant as :meth:`tenant` and
        :meth:`admin` are -- then ``args``. The statement is its own transaction (no
        BEGIN or COMMIT round trips); ``writes`` says it records something, so the
        commit listeners run (``audit_only``: it records audit events and nothing else,
        so the change listeners do not). With a replica attached, the read router decides whether
        a statement may go there (db/replica.ReadRouter.routes), and it does if the
        replica is current and has replayed the caller's consistency token.
        ``constraint_messages`` as for map_driver_errors."""
        reads = self._reads
        if reads is not None and reads.routes(writes):
            from_replica = await reads.read(organization_id, sql, args)
            if from_replica is not None:
                return from_replica
        setting, value = scope_setting(organization_id)
        request = current_request()
        try:
            with map_driver_errors(constraint_messages):
                async with self._acquire() as conn:
                    rows = await conn.fetch(
                        sql, setting, value, request.actor, request.request_id, *args
                    )
        except Unavailable:
            self._tell_unavailable()
            raise
        if writes:
            await self._committed(changed=not audit_only)
        return rows

    @property
    def coalesces(self) -> bool:
        """Whether calls may share statements (db/coalesce.py). Not with a replica
        attached: a coalesced statement runs outside its callers' contexts, so it could
        neither choose the replica for one of them nor hand each write's consistency
        token back to its caller; those calls keep one statement each."""
        return self._reads is None

    def request_scope(self, organization_id: UUID | None) -> RequestScope:
        """The scope the current request runs ``organization_id``'s work under, fenced
        to an organization key's own tenant as :meth:`fetch_scoped` is: captured in the
        caller's context, for a statement that runs in a coalesced batch."""
        setting, value = scope_setting(organization_id)
        request = current_request()
        return RequestScope(setting, value, request.actor, request.request_id)

    async def fetch_batch(
        self,
        sql: str,
        scopes: Sequence[RequestScope],
        *columns: Sequence[object],
        writes: bool = False,
        audit_only: bool = False,
        constraint_messages: ConstraintErrors | None = None,
    ) -> list[asyncpg.Record]:
        """Run one batch function (migration 022) over the items of several requests,
        in one round trip and one transaction: its first four parameters are the
        items' scopes, column by column, then ``columns`` (one list per parameter,
        one element per item). The function enters each item's scope for that item's
        rows; its rows name their item in ``ord`` (1-based). ``writes`` and
        ``audit_only`` as for :meth:`fetch_scoped`."""
        try:
            with map_driver_errors(constraint_messages):
                async with self._acquire() as conn:
                    rows: list[asyncpg.Record] = await conn.fetch(
                        sql,
                        [scope.setting for scope in scopes],
                        [scope.value for scope in scopes],
                        [scope.actor for scope in scopes],
                        [scope.request_id for scope in scopes],
                        *(list(column) for column in columns),
                    )
        except Unavailable:
            self._tell_unavailable()
            raise
        if writes:
            await self._committed(changed=not audit_only)
        return rows

    async def listen(
        self,
        channel: str,
        on_notify: Callable[[str], None],
        on_state: Callable[[bool], None],
    ) -> None:
        """LISTEN on ``channel`` until cancelled, over the process's one listening
        connection (db/listen.py), shared by every channel.

        ``on_notify(payload)`` runs for each notification; ``on_state(True)`` once the
        subscription is live, ``on_state(False)`` as soon as it is lost (notifications
        may then be missed). It goes to DATABASE_LISTEN_URL when set: a LISTEN must
        hold its session, which a transaction pooler does not keep.
        """
        if self._listen_dsn is None:
            raise ConfigError(
                "LISTEN cannot go through a transaction pooler: set DATABASE_LISTEN_URL to "
                "a direct connection to PostgreSQL"
            )
        if self._listener is None:
            self._listener = Listener(self._listen_dsn, self._acquire_timeout_s)
        await self._listener.listen(channel, on_notify, on_state)

    async def fetch_unscoped(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """One statement outside any tenant: only for SECURITY DEFINER functions
        that are their own narrow door (singura.api_key_lookup,
        singura.oauth_refresh_claim). Tables stay invisible to it under row-level
        security."""
        try:
            with map_driver_errors():
                async with self._acquire() as conn:
                    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                    return rows
        except Unavailable:
            self._tell_unavailable()
            raise

    async def fetchrow_unscoped(self, sql: str, *args: object) -> asyncpg.Record | None:
        """The first row of fetch_unscoped, if any."""
        rows = await self.fetch_unscoped(sql, *args)
        return rows[0] if rows else None

    async def wal_position(self, function: WalFunction) -> int | None:
        """``pg_current_wal_lsn`` (a primary) or ``pg_last_wal_replay_lsn`` (a standby;
        None on a server that is not one)."""
        sql = _WAL_POSITION_SQL.get(function)
        if sql is None:
            raise InvariantBroken(f"wal_position: unknown function {function!r}")
        with map_driver_errors():
            async with self._acquire() as conn:
                position = await conn.fetchval(sql)
        return None if position is None else int(position)

    async def ping(self) -> None:
        """One round trip; raises Unavailable when PostgreSQL does not answer."""
        with map_driver_errors():
            async with self._acquire() as conn:
                await conn.fetchval("SELECT 1", timeout=self._acquire_timeout_s)

    async def service_role(self) -> ServiceRole:
        """Report the runtime login role's powers (used to refuse an unsafe role)."""
        with map_driver_errors():
            async with self._acquire() as conn:
                return await read_service_role(conn)

    async def ensure_safe_service_role(self, variable: str = "DATABASE_URL") -> None:
        """Refuse to serve as a role that row-level security would not bind
        (db/checks.py); ``variable`` names the setting the pool was opened from."""
        refuse_unsafe_service_role(await self.service_role(), variable)

    def _acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return acquire(self._pool, self._acquire_timeout_s)

    @asynccontextmanager
    async def _transaction(
        self, setting: str, value: str, read_only: bool
    ) -> AsyncIterator[asyncpg.Connection]:
        try:
            with map_driver_errors():
                async with self._acquire() as conn, conn.transaction(readonly=read_only):
                    # One round trip sets the scope and, for the audit triggers, who
                    # acts and under which request id (all transaction-scoped).
                    request = current_request()
                    await conn.execute(
                        "SELECT set_config($1, $2, true), "
                        "set_config('singura.actor', $3, true), "
                        "set_config('singura.request_id', $4, true)",
                        setting,
                        value,
                        request.actor,
                        request.request_id,
                    )
                    yield conn
        except Unavailable:
            self._tell_unavailable()
            raise
        if not read_only:
            await self._committed()

    async def _committed(self, *, changed: bool = True) -> None:
        for listener in self._commit_listeners:
            listener()
        if changed:
            for listener in self._change_listeners:
                listener()
        if self._reads is not None:  # the consistency token: only with a replica
            await self._reads.committed()

    def _tell_unavailable(self) -> None:
        for listener in self._unavailable_listeners:
            listener()
