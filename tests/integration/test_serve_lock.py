"""One `serve` per data directory: a second one refuses before it touches anything,
and the first vault and its embedded PostgreSQL go on undisturbed (issue #25, item 1);
a data directory the embedded server could not use is refused before a key file is
written into it (item 14)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from singura_vault.db.embedded import EmbeddedPostgres
from singura_vault.db.serve_lock import Holder, ServeLock, serving
from singura_vault.errors import ConfigError
from tests.support.cli import Serving, free_port, run

EXIT_CONFIG = 2
KEY_FILES = ("keyring.json", "auth-secret", "audit-signing-key", "admin-api-key")


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    return int(answer.status)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_serve_on_a_served_data_dir_refuses_and_leaves_the_first_alone(
    cli_env: dict[str, str], workers: str
) -> None:
    """The second serve exits 2 naming the pid and address of the one serving; the
    first one's PostgreSQL is the same process afterwards and the first vault still
    serves (it used to log embedded_postgres_died and answer NOT_SERVING)."""
    data_dir = Path(cli_env["SINGURA_DATA_DIR"])
    address = cli_env["SINGURA_LISTEN"]
    first = Serving({**cli_env, "SINGURA_WORKERS": workers})
    try:
        postmaster = EmbeddedPostgres(data_dir).postmaster_pid()
        assert postmaster is not None

        second = run(["serve"], {**cli_env, "SINGURA_LISTEN": f"127.0.0.1:{free_port()}"})

        assert second.returncode == EXIT_CONFIG, second.stderr
        assert f"SINGURA_DATA_DIR={data_dir} is already served" in second.stderr
        assert f"pid {first.process.pid}" in second.stderr
        assert address in second.stderr
        assert "embedded_postgres" not in second.stderr  # it never touched the server
        assert EmbeddedPostgres(data_dir).postmaster_pid() == postmaster
        assert _health(address) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert first.terminate() == 0
    events = [e.get("event") for e in first.events]
    assert "embedded_postgres_died" not in events
    assert "embedded_postgres_stopped" in events  # the owner stops it, once
    assert EmbeddedPostgres(data_dir).postmaster_pid() is None


def test_the_lock_names_its_holder_and_is_free_after_release() -> None:
    """serving() reports the holder while the lock is held and nothing once released;
    a second acquire meanwhile is a ConfigError, not a wait."""
    data_dir = Path(tempfile.mkdtemp(prefix="sv-lock-"))
    assert serving(data_dir) is None  # no file yet: nobody serves, and none is made
    assert not (data_dir / "serve.lock").exists()
    lock = ServeLock.acquire(data_dir, "127.0.0.1:0")
    try:
        lock.record("127.0.0.1:50123")
        assert serving(data_dir) == Holder(os.getpid(), "127.0.0.1:50123")
        with pytest.raises(ConfigError, match=r"pid \d+, listening on 127\.0\.0\.1:50123"):
            ServeLock.acquire(data_dir, "127.0.0.1:0")
    finally:
        lock.release()
    assert serving(data_dir) is None
    ServeLock.acquire(data_dir, "127.0.0.1:0").release()


@pytest.mark.skipif(os.geteuid() != 0, reason="only as root does the server run as another OS user")
def test_an_untraversable_parent_is_refused_before_any_key_file_is_written(
    cli_env: dict[str, str],
) -> None:
    """As root, a data directory under a 0700 parent cannot be reached by the embedded
    server's user: serve exits 2 saying so, and has written no key file there (it used to
    write the keyring, auth secret and signing key first)."""
    parent = Path(cli_env["SINGURA_DATA_DIR"])
    parent.chmod(0o700)
    data_dir = parent / "vault"
    refused = run(["serve"], {**cli_env, "SINGURA_DATA_DIR": str(data_dir)})
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert "cannot reach" in refused.stderr
    assert "traversable" in refused.stderr
    written = [name for name in KEY_FILES if (data_dir / name).exists()]
    assert written == []
