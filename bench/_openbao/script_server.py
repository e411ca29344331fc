"""The benchmark's own servers (the floor, :mod:`.floor_server`, and the echo,
:mod:`.echo_server`) as subprocesses, started and stopped like the vault:
``vs_openbao.py --floor-server`` or ``--echo-server`` on a free loopback port; the
floor with its own embedded PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

import _harness as h

from .pinning import pinned_argv
from .processes import stop_process


class ScriptServer:
    """``vs_openbao.py <flag>``; a JSON line ``{"event": <ready>, "port": ...,
    "postmaster_pid": ...}`` on its stdout says where it serves."""

    def __init__(
        self, script: str, flag: str, ready: str, cpus: frozenset[int] | None = None
    ) -> None:
        self.name = flag.removeprefix("--")
        # A new session: Ctrl-C in the terminal reaches this script, which stops it.
        self.process = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
            pinned_argv([sys.executable, script, flag], cpus),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            message = self._wait_serving(ready)
        except BaseException:
            stop_process(self.process)
            raise
        self.port: int = message["port"]
        self.postmaster_pid: int | None = message.get("postmaster_pid")

    def _wait_serving(self, ready: str) -> dict[str, Any]:
        # Before its JSON line, the embedded PostgreSQL's log lines (plain text) pass by.
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with contextlib.suppress(ValueError):
                message = json.loads(raw)
                if isinstance(message, dict) and message.get("event") == ready:
                    return message
        raise RuntimeError(f"{self.name}: the process exited while starting")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return h.processes_cpu_seconds([self.process.pid, self.postmaster_pid])

    def db_cpu_seconds(self) -> float:
        return h.postmaster_cpu_seconds(self.postmaster_pid)

    def rss_mib(self) -> float:
        return h.status_kib("VmRSS", str(self.process.pid)) / 1024

    def stop(self) -> None:
        stop_process(self.process)


def floor_process(script: str, cpus: frozenset[int] | None) -> ScriptServer:
    return ScriptServer(script, "--floor-server", "floor_serving", cpus)


def echo_process(script: str, cpus: frozenset[int] | None) -> ScriptServer:
    return ScriptServer(script, "--echo-server", "echo_serving", cpus)
