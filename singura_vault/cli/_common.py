"""What the command modules share: exit codes, the sub-command parser, running a
coroutine, and reaching a running vault (address, TLS, API key)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from singura_vault.config import DEFAULT_LISTEN, Settings
from singura_vault.errors import ConfigError
from singura_vault.tls import channel_credentials

# Usage errors exit 1 from every parser, as grpc_health_probe's do (its 2 means "cannot
# connect"); 2 is a bad configuration: a typo must not read as either
# (docs/operations.md#exit-codes).
EXIT_USAGE = 1
EXIT_CONFIG = 2
T = TypeVar("T")

# How a client command calls the vault: (its arguments, a channel, the API key) -> exit code.
VaultCall = Callable[[argparse.Namespace, grpc.Channel, str], int]


class SubcommandParser(argparse.ArgumentParser):
    """Usage errors exit EXIT_USAGE (1), as grpc_health_probe's do."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def default_address() -> str:
    """Where the client commands dial by default: SINGURA_LISTEN, as the vault beside
    them listens, with a wildcard host dialled on loopback."""
    listen = os.environ.get("SINGURA_LISTEN", "").strip() or DEFAULT_LISTEN
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):  # noqa: S104 - a listen address read, to dial loopback
        return f"127.0.0.1:{port}"
    if host in ("[::]", "::"):
        return f"[::1]:{port}"
    return listen


API_KEY_HELP = (
    "The API key comes from SINGURA_API_KEY, else from the bootstrap admin key file "
    "SINGURA_DATA_DIR/admin-api-key."
)


def add_connection_arguments(parser: argparse.ArgumentParser, *, api_key: bool = True) -> None:
    """How a client command reaches a running vault: address and TLS (and, in its
    help, where the API key comes from, for the commands that send one)."""
    if api_key:
        parser.epilog = API_KEY_HELP
    parser.add_argument(
        "--address",
        default=default_address(),
        help="host:port of the vault (default: %(default)s, from SINGURA_LISTEN when set)",
    )
    # Any --tls-* option implies --tls: asking for a CA or a client certificate
    # and then speaking plaintext would never be what was meant.
    parser.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS (trusting gRPC's default roots unless --tls-ca)",
    )
    parser.add_argument("--tls-ca", type=Path, metavar="FILE", help="PEM CA bundle to trust")
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="PEM client certificate, for mTLS"
    )
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM client key, for mTLS")
    parser.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to check the vault's certificate against, instead of the address's host",
    )


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """ "1 event", "2 events", "1,000 events": a count with its noun in agreement."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where available (about +15% throughput measured here)."""
    try:
        import uvloop  # optional: absent on Windows (see pyproject's markers)
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def client_credentials(args: argparse.Namespace) -> Any:
    """TLS channel credentials from the --tls* options, or None for plaintext."""
    tls_options = (args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    if args.tls or any(option is not None for option in tls_options):
        return channel_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    return None


def client_channel(args: argparse.Namespace) -> Any:
    credentials = client_credentials(args)
    if credentials is None:
        return grpc.insecure_channel(args.address)
    options = (
        []
        if args.tls_server_name is None
        else [("grpc.ssl_target_name_override", args.tls_server_name)]
    )
    return grpc.secure_channel(args.address, credentials, options=options)


def call_vault(args: argparse.Namespace, settings: Settings, run: VaultCall) -> int:
    """Run a client command against a running vault with the operator's API key."""
    key = api_key(settings)
    try:
        with client_channel(args) as channel:
            code: int = run(args, channel, key)
            return code
    except grpc.RpcError as exc:
        code_name = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        details = exc.details() if isinstance(exc, grpc.Call) else ""
        print(f"error: {code_name}: {details}", file=sys.stderr)
        return 1


def api_key(settings: Settings) -> str:
    """SINGURA_API_KEY, or the bootstrap admin key file in the data dir."""
    key = os.environ.get("SINGURA_API_KEY", "").strip()
    if key:
        return key
    try:
        return bootstrap_admin_key(settings)
    except ConfigError as exc:
        raise ConfigError(f"no API key: SINGURA_API_KEY is not set, and {exc}") from None


def bootstrap_admin_key(settings: Settings) -> str:
    """The admin key `serve` wrote to SINGURA_DATA_DIR/admin-api-key on first start."""
    path = settings.data_dir / "admin-api-key"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        # Not "set SINGURA_DATA_DIR": it may well be the vault's data directory, one that
        # never had the file (a restored database, or a first start elsewhere).
        raise ConfigError(
            f"this data directory has no admin key file ({path}): `serve` writes it only "
            "when it creates the first admin key of an empty database, and a restored "
            "database keeps its own admin keys (`restore` writes no key file). Use an admin "
            "key you kept (SINGURA_API_KEY), or register a new one: set "
            "SINGURA_BOOTSTRAP_ADMIN_KEY in serve's environment to the key that "
            "`singura-vault keys generate-admin-key` prints, and restart serve"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"cannot read the admin key file {path} ({reason}): run as a user who may read "
            "it, such as the one serve runs as"
        ) from None
