"""The OS identity the embedded server runs as when the vault runs as root.

PostgreSQL refuses to run as root, so as root the vault creates (once) a system user
without a home or a shell, and starts the server's tools as that user with setpriv.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import structlog

from singura_vault.db.embedded_errors import EmbeddedPostgresError, tool_output

_log = structlog.get_logger("singura_vault.db.embedded")


@dataclass(frozen=True)
class ServerUser:
    """The OS identity the server runs as when we are root."""

    name: str
    uid: int
    gid: int


def setpriv() -> str:
    """util-linux's setpriv, which runs a command as another user (root mode only)."""
    path = shutil.which("setpriv") or (
        "/usr/bin/setpriv" if Path("/usr/bin/setpriv").exists() else None
    )
    if path is None:
        raise EmbeddedPostgresError(
            "running the embedded PostgreSQL as root needs setpriv (Debian/Ubuntu package "
            "util-linux); install it, run the vault as a non-root user, or set DATABASE_URL"
        )
    return path


def create_os_user(name: str) -> None:
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if useradd is None:
        raise EmbeddedPostgresError(
            f"PostgreSQL cannot run as root and useradd is missing, so the OS user {name} "
            "cannot be created; create it, run the vault as a non-root user, or set "
            "DATABASE_URL to use an external PostgreSQL"
        )
    result = subprocess.run(  # noqa: S603 - useradd, fixed arguments, no shell
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    # 9: the user was created meanwhile by another starter.
    if result.returncode not in (0, 9):
        raise EmbeddedPostgresError(
            f"could not create the OS user {name} for the embedded PostgreSQL server "
            f"(useradd exit {result.returncode}): {tool_output(result)}"
        )
    _log.info("embedded_postgres_os_user_created", os_user=name)


def may_search(st: os.stat_result, user: ServerUser) -> bool:
    # The kernel's order: owner bits if the owner, else group bits if in the group, else
    # other bits. The server runs with no supplementary groups (extra_groups=[]).
    mode = st.st_mode
    if st.st_uid == user.uid:
        return bool(mode & stat.S_IXUSR)
    if st.st_gid == user.gid:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)
