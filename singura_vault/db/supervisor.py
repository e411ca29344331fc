"""Keeps the embedded PostgreSQL running: restarts it, with backoff, when it dies.

In embedded mode the vault owns its database server, so nobody else would notice
that the postmaster was killed (the OOM killer, an operator's ``kill -9``) and start
it again. The supervisor checks every second that the postmaster of the data
directory is alive. When it is not, it tells the health monitor at once (health
turns NOT_SERVING, so orchestrators route elsewhere), logs
``embedded_postgres_died``, and starts the server again -- crash recovery replays
the WAL, so every committed transaction survives -- retrying after 1, 2, 4 ... up
to 30 seconds while starting fails. The pool reconnects by itself; calls made in
the meantime answer UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.logs import get_logger

log = get_logger(__name__)


class EmbeddedSupervisor:
    def __init__(
        self,
        server: EmbeddedPostgres,
        on_down: Callable[[], None],
        *,
        check_interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._server = server
        self._on_down = on_down
        self._check_interval_s = check_interval_s
        self._max_backoff_s = max_backoff_s
        self.restarts = 0

    async def run_forever(self) -> None:
        """Watch and restart until cancelled (vault shutdown)."""
        while True:
            await asyncio.sleep(self._check_interval_s)
            if not await asyncio.to_thread(self._server.is_running):
                await self._restart()

    async def _restart(self) -> None:
        log.error("embedded_postgres_died", data_dir=str(self._server.base_dir))
        self._on_down()
        backoff = 1.0
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self._server.start)
            except Exception as exc:  # keep trying: the vault is useless without it
                log.error(
                    "embedded_postgres_restart_failed",
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=str(exc),
                    retry_in_s=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            self.restarts += 1
            log.warning("embedded_postgres_restarted", attempt=attempt, restarts=self.restarts)
            self._on_down()  # probe again now: health back to SERVING without waiting
            return
