"""The floor server (:mod:`.floor_server`) as a subprocess of the benchmark, started
and stopped like the vault: ``vs_openbao.py --floor-server`` on a free loopback port,
with its own embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

import _harness as h

from .processes import stop_process


class FloorProcess:
    """``vs_openbao.py --floor-server``; a JSON line on its stdout says where it serves."""

    def __init__(self, script: str) -> None:
        # A new session: Ctrl-C in the terminal reaches this script, which stops it.
        self.process = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
            [sys.executable, script, "--floor-server"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            ready = self._wait_serving()
        except BaseException:
            stop_process(self.process)
            raise
        self.port: int = ready["port"]
        self._postmaster_pid: int | None = ready["postmaster_pid"]

    def _wait_serving(self) -> dict[str, Any]:
        # Before its JSON line, the embedded PostgreSQL's log lines (plain text) pass by.
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(raw)
                if isinstance(message, dict) and message.get("event") == "floor_serving":
                    return message
        raise RuntimeError("floor server: the process exited while starting")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return h.processes_cpu_seconds([self.process.pid, self._postmaster_pid])

    def db_cpu_seconds(self) -> float:
        return h.postmaster_cpu_seconds(self._postmaster_pid)

    def rss_mib(self) -> float:
        return h.status_kib("VmRSS", str(self.process.pid)) / 1024

    def stop(self) -> None:
        stop_process(self.process)
