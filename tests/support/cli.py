"""The `singura-vault` command line as tests run it: the command, a free port, an
environment in a data directory of its own, and `serve` as a process read until it
serves (its JSON log lines parsed as events)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "singura_vault"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def cli_environment(data_dir: Path) -> dict[str, str]:
    """This process's environment without DATABASE_* and SINGURA_* variables, plus
    ``data_dir`` and a free port: an embedded vault of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SINGURA_"))}
    env.update(
        SINGURA_DATA_DIR=str(data_dir),
        SINGURA_LISTEN=f"127.0.0.1:{free_port()}",
        SINGURA_HEALTH_INTERVAL="0.2",
        SINGURA_SHUTDOWN_GRACE="5",
    )
    return env


def parse(line: str) -> dict[str, object]:
    """A log line as an event; anything that is not JSON is kept as raw text."""
    try:
        event: dict[str, object] = json.loads(line)
    except json.JSONDecodeError:
        return {"event": "non_json_line", "text": line}
    return event


# Generous: a start on a loaded CI machine takes a few seconds.
START_TIMEOUT_S = 120.0


class Serving:
    """A `singura-vault serve` process, started and read until it says it serves."""

    def __init__(self, env: dict[str, str]) -> None:
        # Its own process group, so that a start that never says it serves is killed
        # with its workers (which hold the log open too): the test then fails with the
        # log instead of waiting for a line that will not come.
        self.process = subprocess.Popen(
            [*CLI, "serve"], env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.events: list[dict[str, object]] = []
        assert self.process.stderr is not None
        watchdog = threading.Timer(START_TIMEOUT_S, self._kill_all)
        watchdog.start()
        try:
            for line in self.process.stderr:
                event = parse(line)
                self.events.append(event)
                if event.get("event") == "vault_serving":
                    return
        finally:
            watchdog.cancel()
        pytest.fail(
            f"serve exited, or was killed after {START_TIMEOUT_S:g} s, before serving: "
            f"{self.events}"
        )

    def _kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        self.read_log_to_end()
        return self.process.wait(timeout=60)

    def read_log_to_end(self) -> None:
        """Read the rest of the log, until the process closes it."""
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.events.append(parse(line))


def wait_for_event(vault: Serving, name: str, deadline_s: float) -> dict[str, object]:
    """The first logged event called ``name``, once the log reader has seen it."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        for event in list(vault.events):
            if event.get("event") == name:
                return event
        time.sleep(0.02)  # polling the log for an event, not synchronising on time
    raise AssertionError(f"no {name} event within {deadline_s} s")
