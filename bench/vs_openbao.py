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

Beside them, in the same runs: an **echo** server (a bare grpc.aio generic handler,
bytes in and out: the limit of one unary call on this stack) loaded by the same
client, and with ``--floor`` the floor server (the vault's contract, one statement
per call). ``--pin`` (the default with 2 or more usable CPUs) puts every server with
its PostgreSQL on one CPU set and every client on the other, so each row is calls/s
per server core. After the closed-loop runs, each vault row is measured **open-loop**
at 25%, 50% and 75% of its own peak (calls on a fixed schedule; latency from when each
was due). The vault serves its metrics on a loopback port; the histogram of calls per
coalesced database statement (``singura_db_batch_size``) is scraped around each of its
windows. The report ends with issue #26's targets, met or missed.

The audited OpenBao read uses a file audit device declared in the server's config
(OpenBao 2.x refuses ``bao audit enable`` over the API): the script adds the stanza
and sends SIGHUP before that measurement, removes it after, and polls
``sys/audit`` each time. ``BatchRevealCredentials`` is measured only if the
generated stub has it (per credential: items revealed per second); otherwise its
row reads "n/a (not implemented)".

    python bench/vs_openbao.py
    python bench/vs_openbao.py --runs 1 --seconds 2 --warmup 0.5
    python bench/vs_openbao.py --floor --no-pin --open-loop none
    python bench/vs_openbao.py --ops reveal,audited --vault-env SINGURA_RATE_LIMIT_RPS=0

This file is the entry point and the run order (setup, then vault and OpenBao
alternating per pair and run); the servers, the client side, the measurement and the
report are in the package ``_openbao`` next to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import _harness as h
import _openbao as ob


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
        default=",".join(ob.PAIRS),
        help=f"comma-separated rows, in order, from {', '.join(ob.PAIRS)} (default all)",
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
        help=f"credentials per {ob.BATCH_RPC} call (default 100, the RPC's maximum)",
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
        "--floor",
        action="store_true",
        help="also measure the stack's floor: a bare grpc.aio + asyncpg server with the "
        "vault's contract, one statement per call, no auth, RLS, interceptor or chain "
        "(see _openbao/floor_server.py), in the same runs",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="servers (each with its PostgreSQL) on one CPU set, load clients and this "
        "driver on the other (the upper and lower half of the usable CPUs; with 2: "
        "servers on CPU 1, clients on CPU 0), so each row is calls/s per server core "
        "(default: on with 2 or more usable CPUs)",
    )
    parser.add_argument(
        "--open-loop",
        default="25,50,75",
        metavar="PERCENTS",
        help="after the closed-loop runs, measure each vault row open-loop at these "
        "percentages of its own closed-loop peak (calls started on a fixed schedule, "
        "latency from when each was due); 'none' to skip (default 25,50,75)",
    )
    parser.add_argument(
        "--bao", default=None, help="the bao binary (default: next to python, then PATH)"
    )
    return parser


def _check(args: argparse.Namespace) -> list[ob.Pair]:
    keys = [k.strip() for k in args.ops.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ob.PAIRS]
    if not keys or unknown:
        raise SystemExit(f"--ops: choose from {', '.join(ob.PAIRS)}; got {args.ops!r}")
    if args.concurrency < 1 or args.runs < 1 or not 1 <= args.batch_size <= 100:
        raise SystemExit("--concurrency and --runs must be at least 1, --batch-size 1..100")
    if args.seconds <= 0 or args.warmup < 0:
        raise SystemExit("--seconds must be positive and --warmup not negative")
    for item in args.vault_env:
        if "=" not in item or not item.split("=", 1)[0]:
            raise SystemExit(f"--vault-env: expected NAME=VALUE, got {item!r}")
    args.open_loop_fractions = _percents(args.open_loop)
    return [ob.PAIRS[k] for k in keys]


def _percents(text: str) -> list[float]:
    if text.strip().lower() in ("none", "off", ""):
        return []
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v <= 100 for v in values):
        raise SystemExit(f"--open-loop: percentages in (0, 100] or 'none'; got {text!r}")
    return sorted(v / 100 for v in set(values))


class _Runs:
    """The measurements of one invocation, in order: per run the echo, then each pair
    (vault, OpenBao, the floor); then the vault's open-loop rows."""

    def __init__(self, args: argparse.Namespace, setup: ob.Setup) -> None:
        self.args = args
        self.setup = setup
        self.echo: list[ob.Sample] = []
        self.measured = 0
        self.clients = ob.Probes(client_cpus=setup.plan.clients if setup.plan else None)
        urls = setup.vault.metrics_urls
        self.waits = ob.WaitSampler(setup.vault.postgres_dsn())
        self.vault_probes = ob.Probes(
            lambda: ob.batch_metrics.scrape(urls), self.clients.client_cpus, self.waits
        )

    async def prepare(self) -> None:
        """The data set in every server, the client configs, and a first scrape of the
        vault's metrics (so that a vault without them fails here, not mid-run)."""
        args, vault, floor = self.args, self.setup.vault, self.setup.floor
        await self.waits.open()
        organization_id, slots = await ob.setup(vault, self.setup.bao)
        self.floor_slots = await ob.setup_floor(floor.address, slots) if floor else []
        base = {
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "seconds": args.seconds,
            "slots": slots,
            "batch_size": args.batch_size,
            "channels": args.channels,
        }
        self.vault_config = {
            **base,
            "address": vault.address,
            "secret": vault.admin_key(),
            "organization_id": organization_id,
        }
        self.bao_config = {**base, "address": self.setup.bao.url, "secret": self.setup.bao.token}
        # A key of the admin key's shape that nothing knows: the echo ignores it, but
        # the wire carries the same metadata as a vault call.
        self.echo_config = {**base, "address": self.setup.echo.address, "secret": h.new_key_text()}
        try:
            ob.batch_metrics.scrape(vault.metrics_urls)
        except OSError as exc:
            raise RuntimeError(f"the vault's metrics ({vault.metrics_urls[0]}): {exc}") from exc

    async def measure(
        self,
        system: str,
        config: dict[str, object],
        cpu: Callable[[], float],
        db_cpu: Callable[[], float] = lambda: 0.0,
    ) -> ob.Sample:
        self.measured += 1
        probes = self.vault_probes if system == "vault" else self.clients
        # The client processes are this script again, run as `<script> --client`.
        return await ob.measure(__file__, system, config, cpu, self.args.seconds, db_cpu, probes)

    async def closed_loop(self, run: int, rows: list[ob.Row]) -> None:
        args, vault, bao, floor = self.args, self.setup.vault, self.setup.bao, self.setup.floor
        print(f"run {run + 1}/{args.runs}: echo", file=sys.stderr, flush=True)
        self.echo.append(await self.measure("echo", self.echo_config, self.setup.echo.cpu_seconds))
        for row in rows:
            pair = row.pair
            if pair.vault_op == "batch" and not self.setup.batch:
                continue  # the report says "n/a (not implemented)"
            print(
                f"run {run + 1}/{args.runs}: {pair.vault_label} vs {pair.bao_label}",
                file=sys.stderr,
                flush=True,
            )
            config = {**self.vault_config, "op": pair.vault_op}
            row.vault.append(
                await self.measure("vault", config, vault.cpu_seconds, vault.db_cpu_seconds)
            )
            bao.set_audit(pair.audited)
            try:
                bao_op = {"op": pair.bao_op, "prefix": f"w{run}-{pair.key}"}
                row.bao.append(
                    await self.measure("bao", {**self.bao_config, **bao_op}, bao.cpu_seconds)
                )
            finally:
                bao.set_audit(False)
            if floor is not None and pair.floor:
                floor_op = {"address": floor.address, "slots": self.floor_slots}
                row.floor.append(
                    await self.measure(
                        "floor", {**config, **floor_op}, floor.cpu_seconds, floor.db_cpu_seconds
                    )
                )

    async def open_loop(self, run: int, rows: list[ob.Row]) -> None:
        """Each vault RPC once (the audited row is the reveal again) at shares of that
        row's own closed-loop peak in calls/s (batch calls for the batch row)."""
        vault = self.setup.vault
        once: dict[str, ob.Row] = {}
        for row in rows:
            if row.vault:
                once.setdefault(row.pair.vault_op, row)
        for fraction in self.args.open_loop_fractions:
            for row in once.values():
                rate = fraction * statistics.median(s.calls_rate for s in row.vault)
                if rate <= 0:
                    continue
                print(
                    f"open loop {run + 1}/{self.args.runs}: {row.pair.vault_label} at "
                    f"{fraction:.0%} of peak, {rate:,.0f} calls/s",
                    file=sys.stderr,
                    flush=True,
                )
                config = {**self.vault_config, "op": row.pair.vault_op, "rate": rate}
                row.open_loop.setdefault(fraction, []).append(
                    await self.measure("vault", config, vault.cpu_seconds, vault.db_cpu_seconds)
                )


async def _main(args: argparse.Namespace, pairs: list[ob.Pair], setup: ob.Setup) -> None:
    runs = _Runs(args, setup)
    rows = [ob.Row(p) for p in pairs]
    try:
        await runs.prepare()
        for run in range(args.runs):
            await runs.closed_loop(run, rows)
        for run in range(args.runs):
            await runs.open_loop(run, rows)
    finally:
        await runs.waits.close()
    if setup.plan is not None:
        setup.pin_checks.extend(_pin_checks(setup, setup.plan, "at the end"))
        setup.pin_checks.append(
            f"client processes: {runs.measured} checked in their windows, all on "
            f"{ob.pinning.cpu_list(setup.plan.clients)}"
        )
    ob.print_report(args, rows, runs.echo, setup)


def _pin_checks(setup: ob.Setup, plan: ob.pinning.CpuPlan, when: str) -> list[str]:
    """Every thread of every server tree (PostgreSQL's backends included) on the
    servers' CPUs; RuntimeError otherwise."""
    trees: list[tuple[str, list[int | None]]] = [
        ("vault + its PostgreSQL", [setup.vault.process.pid, setup.vault.postmaster_pid()]),
        ("OpenBao", [setup.bao.process.pid]),
        ("echo", [setup.echo.process.pid]),
    ]
    if setup.floor is not None:
        trees.append(
            ("floor + its PostgreSQL", [setup.floor.process.pid, setup.floor.postmaster_pid])
        )
    return [
        f"{when}: " + ob.pinning.check(name, ob.pinning.affinities(roots), plan.servers)
        for name, roots in trees
    ]


def _cpu_plan(args: argparse.Namespace, usable: set[int]) -> ob.pinning.CpuPlan | None:
    """``--pin``'s CPU sets (None with --no-pin); this driver is pinned to the clients'
    set at once, so that the client processes it starts later inherit that mask."""
    if args.pin is None:
        args.pin = len(usable) >= 2
    if not args.pin:
        return None
    try:
        plan = ob.pinning.plan(usable)
    except ValueError as exc:
        raise SystemExit(f"--pin: {exc}; use --no-pin") from exc
    ob.pinning.pin_process(os.getpid(), plan.clients)
    return plan


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


_SUBPROCESSES: dict[str, Callable[[], int]] = {
    "--client": lambda: h.client_main(ob.client),
    "--floor-server": ob.floor_server_main,
    "--echo-server": ob.echo_server_main,
}
"""This script run as one of its own subprocesses: a load client or a server."""


def _start(
    args: argparse.Namespace,
    binary: str,
    base_dir: Path,
    usable: set[int],
    plan: ob.pinning.CpuPlan | None,
    started: list[ob.VaultProcess | ob.BaoProcess | ob.ScriptServer],
) -> ob.Setup:
    """Start the servers (each appended to ``started`` at once, for stopping) on the
    servers' CPUs if pinned, and check that every thread of theirs is there."""
    servers = plan.servers if plan else None
    print("starting singura-vault, OpenBao and echo ...", file=sys.stderr, flush=True)
    vault = ob.VaultProcess(base_dir / "vault", args.vault_env, servers)
    started.append(vault)
    bao = ob.BaoProcess(binary, base_dir / "openbao", servers)
    started.append(bao)
    bao.initialise()
    vault.wait_serving()
    echo = ob.echo_process(__file__, servers)
    started.append(echo)
    floor = ob.floor_process(__file__, servers) if args.floor else None
    if floor is not None:
        started.append(floor)
    setup = ob.Setup(vault, bao, echo, floor, ob.batch_available(), len(usable), plan)
    if plan is not None:
        setup.pin_checks.extend(_pin_checks(setup, plan, "at the start"))
    return setup


def main() -> int:
    if sys.argv[1:2] and sys.argv[1] in _SUBPROCESSES:
        return _SUBPROCESSES[sys.argv[1]]()
    args = _parser().parse_args()
    pairs = _check(args)
    usable = ob.pinning.usable_cpus()
    plan = _cpu_plan(args, usable)
    binary = ob.bao_binary(args.bao)
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("aiohttp is not installed: pip install -e '.[bench]'")
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    base_dir = Path(tempfile.mkdtemp(prefix="sv-vs-bao-"))
    # Traversable (not listable): as root, PostgreSQL runs as singura-postgres and must
    # reach the vault's data directory below; the vault and OpenBao directories are 0700.
    base_dir.chmod(0o711)
    started: list[ob.VaultProcess | ob.BaoProcess | ob.ScriptServer] = []
    code = 0
    try:
        setup = _start(args, binary, base_dir, usable, plan, started)
        h.run(_main(args, pairs, setup))
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
            for server in reversed(started):
                server.stop()
        finally:
            shutil.rmtree(base_dir, ignore_errors=True)
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
    if code:
        print("servers stopped and their directory removed", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
