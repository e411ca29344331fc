"""The vault under test as a user starts it: ``python -m singura_vault serve`` as a
subprocess with a new data directory (embedded PostgreSQL) and every other setting at
its default unless overridden; its Prometheus metrics on a free loopback port
(``SINGURA_METRICS_LISTEN``), which the benchmark scrapes for the coalesced batch sizes."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import _harness as h

from .pinning import pinned_argv
from .processes import STOP_TIMEOUT_S, free_port, stop_process, wait_for
from .wait_events import embedded_dsn


class VaultProcess:
    """``python -m singura_vault serve`` on a free port, with a new data directory,
    on ``cpus`` (with the PostgreSQL it starts) when given."""

    def __init__(
        self, data_dir: Path, extra_env: list[str], cpus: frozenset[int] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SINGURA_")
            and k not in ("DATABASE_URL", "DATABASE_OWNER_URL", "ENCRYPTION_KEY")
        }
        env.update(
            SINGURA_DATA_DIR=str(data_dir),
            SINGURA_LISTEN=f"127.0.0.1:{self.port}",
            SINGURA_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        )
        for item in extra_env:
            name, value = item.split("=", 1)
            env[name] = value
        # Worker i of `serve --workers N` serves its metrics on the port + i.
        host, _, port = env["SINGURA_METRICS_LISTEN"].rpartition(":")
        workers = int(env.get("SINGURA_WORKERS") or 1)
        self.metrics_urls = [
            f"http://{host or '127.0.0.1'}:{int(port) + i}/metrics" for i in range(workers)
        ]
        self._serving = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        # A new session: Ctrl-C in the terminal reaches this script, which stops the vault.
        self.process = subprocess.Popen(  # noqa: S603 - this Python, fixed arguments
            pinned_argv([sys.executable, "-m", "singura_vault", "serve"], cpus),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        self._drain = threading.Thread(
            target=self._read_log, args=(self.process.stderr,), name="vault-log", daemon=True
        )
        self._drain.start()

    def _read_log(self, stream: IO[bytes]) -> None:
        # Drains the vault's log for as long as it runs (a full pipe would stall it).
        for raw in stream:
            if self._serving.is_set():
                continue
            line = raw.decode("utf-8", "replace").rstrip()
            self._tail.append(line)
            with contextlib.suppress(ValueError):
                if json.loads(line).get("event") == "vault_serving":
                    self._serving.set()

    def wait_serving(self) -> None:
        try:
            wait_for("singura-vault", self._serving.is_set, lambda: self.process.poll() is None)
        except RuntimeError:
            # The vault logs no secrets (it names the key file, never the key).
            print("\n".join(self._tail), file=sys.stderr)
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin_key(self) -> str:
        return (self.data_dir / "admin-api-key").read_text(encoding="utf-8").strip()

    def postmaster_pid(self) -> int | None:
        try:
            text = (self.data_dir / "postgres" / "postmaster.pid").read_text()
            return int(text.split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def postgres_dsn(self) -> str:
        """The embedded PostgreSQL's superuser over its socket (this script runs as the
        vault's OS user or root, who may reach it)."""
        return embedded_dsn((self.data_dir / "postgres" / "postmaster.pid").read_text())

    def cpu_seconds(self) -> float:
        return h.processes_cpu_seconds([self.process.pid, self.postmaster_pid()])

    def db_cpu_seconds(self) -> float:
        return h.postmaster_cpu_seconds(self.postmaster_pid())

    def stop(self) -> None:
        stop_process(self.process)
        self._drain.join(STOP_TIMEOUT_S)
