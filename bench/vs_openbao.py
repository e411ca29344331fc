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

This file is the entry point and the run order (setup, then vault and OpenBao
alternating per pair and run); the servers, the client side, the measurement and the
report are in the package ``_openbao`` next to it.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
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
    return [ob.PAIRS[k] for k in keys]


async def _main(
    args: argparse.Namespace,
    pairs: list[ob.Pair],
    vault: ob.VaultProcess,
    bao: ob.BaoProcess,
    floor: ob.FloorProcess | None,
) -> None:
    organization_id, slots = await ob.setup(vault, bao)
    floor_slots = await ob.setup_floor(floor.address, slots) if floor else []
    batch = ob.batch_available()
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
    rows = [ob.Row(p) for p in pairs]

    async def measure(
        system: str,
        config: dict[str, object],
        cpu: Callable[[], float],
        db_cpu: Callable[[], float] = lambda: 0.0,
    ) -> ob.Sample:
        # The client processes are this script again, run as `<script> --client`.
        return await ob.measure(__file__, system, config, cpu, args.seconds, db_cpu)

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
                await measure(
                    "vault",
                    {**vault_config, "op": pair.vault_op},
                    vault.cpu_seconds,
                    vault.db_cpu_seconds,
                )
            )
            bao.set_audit(pair.audited)
            try:
                bao_op = {"op": pair.bao_op, "prefix": f"w{run}-{pair.key}"}
                row.bao.append(await measure("bao", {**bao_config, **bao_op}, bao.cpu_seconds))
            finally:
                bao.set_audit(False)
            if floor is not None and pair.floor:
                floor_op = {"address": floor.address, "slots": floor_slots, "op": pair.vault_op}
                row.floor.append(
                    await measure(
                        "floor",
                        {**vault_config, **floor_op},
                        floor.cpu_seconds,
                        floor.db_cpu_seconds,
                    )
                )
    ob.print_report(args, rows, vault, bao, batch, floor)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        return h.client_main(ob.client)
    if sys.argv[1:2] == ["--floor-server"]:
        return ob.floor_server_main()
    args = _parser().parse_args()
    pairs = _check(args)
    binary = ob.bao_binary(args.bao)
    if importlib.util.find_spec("aiohttp") is None:
        raise SystemExit("aiohttp is not installed: pip install -e '.[bench]'")
    previous_int = signal.getsignal(signal.SIGINT)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    base_dir = Path(tempfile.mkdtemp(prefix="sv-vs-bao-"))
    # Traversable (not listable): as root, PostgreSQL runs as singura-postgres and must
    # reach the vault's data directory below; the vault and OpenBao directories are 0700.
    base_dir.chmod(0o711)
    vault: ob.VaultProcess | None = None
    bao: ob.BaoProcess | None = None
    floor: ob.FloorProcess | None = None
    code = 0
    try:
        print("starting singura-vault and OpenBao ...", file=sys.stderr, flush=True)
        vault = ob.VaultProcess(base_dir / "vault", args.vault_env)
        bao = ob.BaoProcess(binary, base_dir / "openbao")
        bao.initialise()
        vault.wait_serving()
        if args.floor:
            floor = ob.FloorProcess(__file__)
        h.run(_main(args, pairs, vault, bao, floor))
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
            if floor is not None:
                floor.stop()
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
