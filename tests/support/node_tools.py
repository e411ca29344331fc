"""Running the Node.js clients from the tests: finding node and npm, installing a
package's locked dependencies once per lock file, and running commands without
blocking the event loop a vault fixture serves on.

Node and npm are required: a machine without them fails these tests, never skips.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import pytest

NPM_TIMEOUT_S = 300
# Written into node_modules after a successful `npm ci`: the lock file it installed.
STAMP_NAME = ".singura-installed-lock"


def tool(name: str, what: str) -> str:
    """node or npm from PATH; fails the test naming what needs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not on PATH: this test {what} and needs Node.js 20+ with npm "
            "(Debian: apt-get install nodejs npm)"
        )
    return path


async def run(
    *args: str, cwd: Path, limit_s: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run a command without blocking the event loop the vault fixture serves on."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{' '.join(args)} did not finish within {limit_s:.0f} s")
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def _lock_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((package / name).read_bytes())
    return digest.hexdigest()


async def ensure_node_modules(npm: str, package: Path) -> None:
    """`npm ci` only when node_modules is missing or was installed from another lock.

    --ignore-scripts: no dependency of ours needs an install script, and a test run
    should execute none."""
    stamp = package / "node_modules" / STAMP_NAME
    wanted = _lock_digest(package)
    if stamp.is_file() and stamp.read_text().strip() == wanted:
        return
    code, stdout, stderr = await run(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        cwd=package,
        limit_s=NPM_TIMEOUT_S,
    )
    assert code == 0, f"npm ci failed in {package} (exit {code}):\n{stdout}\n{stderr}"
    stamp.write_text(wanted + "\n")
