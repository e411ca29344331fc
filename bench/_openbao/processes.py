"""Subprocess plumbing shared by the two servers under test: a free loopback port,
polling until a server is ready, and stopping it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(what: str, condition: Callable[[], bool], alive: Callable[[], bool]) -> None:
    """Poll ``condition`` until true; fail if the process dies or START_TIMEOUT_S passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        if not alive():
            raise RuntimeError(f"{what}: the process exited while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT_S:g} s")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
