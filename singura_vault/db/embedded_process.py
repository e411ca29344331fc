"""What the embedded server's processes are run with and read from: a minimal
environment, the postmaster's pid file, the tail of its log (db/embedded.py)."""

from __future__ import annotations

import os
from pathlib import Path

_LOG_TAIL_LINES = 30
_LOG_TAIL_BYTES = 8192


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def is_postmaster_of(pid: int, pgdata: Path) -> bool:
    """True when ``pid`` is a live (not zombie) process working in ``pgdata``."""
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            if state in ("Z", "X"):
                return False
            # The postmaster chdirs into its data directory; this guards against a
            # recycled pid after a crash.
            return Path(os.readlink(proc / "cwd")) == pgdata
        except (FileNotFoundError, PermissionError):
            return False  # gone, or another user's process: not our postmaster
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # ESRCH: gone; EPERM: another user's process
    return True


def guc_quote(value: str) -> str:
    # unix_socket_directories is a comma-separated list whose items may be double-quoted.
    return '"' + value.replace('"', '""') + '"'


def minimal_env(home: Path) -> dict[str, str]:
    # Nothing from the vault's environment: PGOPTIONS, PGHOST and friends would change
    # what the binaries do, and a secret in the environment has no business there.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "LC_ALL": "C",
        # initdb otherwise probes the host's zone, so the cluster's default would depend
        # on the machine it happened to be created on.
        "TZ": "UTC",
    }


def size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(path: Path, offset: int) -> str:
    """The end of what the server logged after ``offset``: only this start's messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(offset, path.stat().st_size - _LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    lines = text.splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(empty)"
