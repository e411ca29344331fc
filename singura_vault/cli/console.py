"""``singura-vault console``: the operator console, a web server of its own.

It reaches the vault as the client commands do (``--address`` and the ``--tls*``
options; the address from SINGURA_VAULT_ADDRESS when set) and needs no settings of the
vault's own: no database, no key. Operators sign in with their API key in the browser
(docs/console.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from singura_vault.cli._common import (
    add_connection_arguments,
    client_credentials,
    default_address,
    run_async,
)
from singura_vault.console.runner import DEFAULT_CONSOLE_LISTEN, ConsoleSettings, serve_console
from singura_vault.console.sessions import DEFAULT_IDLE_S, DEFAULT_LIFETIME_S
from singura_vault.console.vault_client import ChannelSettings
from singura_vault.errors import ConfigError
from singura_vault.logs import configure_logging


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value) if value else None


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


def add_parsers(commands: Any) -> None:
    console = commands.add_parser(
        "console",
        help="serve the operator console (a web UI over the vault's API) on SINGURA_CONSOLE_LISTEN",
        description=(
            "Serve the operator console on SINGURA_CONSOLE_LISTEN (default "
            f"{DEFAULT_CONSOLE_LISTEN}) until SIGTERM or SIGINT. It calls the vault at "
            "--address (SINGURA_VAULT_ADDRESS) over gRPC with the API key an operator "
            "signs in with; it holds no key of its own and reads no database. Sessions "
            "end after SINGURA_CONSOLE_IDLE_TIMEOUT seconds without a request (default "
            f"{DEFAULT_IDLE_S:.0f}) and SINGURA_CONSOLE_SESSION_LIFETIME seconds after "
            f"sign-in (default {DEFAULT_LIFETIME_S:.0f}). Serve it over HTTPS with "
            "SINGURA_CONSOLE_TLS_CERT and SINGURA_CONSOLE_TLS_KEY. docs/console.md."
        ),
    )
    add_connection_arguments(console, api_key=False)
    console.set_defaults(
        address=os.environ.get("SINGURA_VAULT_ADDRESS", "").strip() or default_address()
    )
    console.add_argument(
        "--listen",
        default=os.environ.get("SINGURA_CONSOLE_LISTEN", "").strip() or DEFAULT_CONSOLE_LISTEN,
        help="host:port the console serves HTTP on (default: %(default)s, from "
        "SINGURA_CONSOLE_LISTEN when set)",
    )
    console.set_defaults(run=_run, needs_settings=False)


def _run(args: argparse.Namespace) -> int:
    configure_logging(
        os.environ.get("SINGURA_LOG_LEVEL", "info").strip() or "info",
        os.environ.get("SINGURA_LOG_FORMAT", "json").strip() or "json",
    )
    settings = ConsoleSettings(
        listen=args.listen,
        vault=ChannelSettings(
            address=args.address,
            credentials=client_credentials(args),
            server_name=args.tls_server_name,
        ),
        idle_s=_seconds("SINGURA_CONSOLE_IDLE_TIMEOUT", DEFAULT_IDLE_S),
        lifetime_s=_seconds("SINGURA_CONSOLE_SESSION_LIFETIME", DEFAULT_LIFETIME_S),
        tls_cert=_env_path("SINGURA_CONSOLE_TLS_CERT"),
        tls_key=_env_path("SINGURA_CONSOLE_TLS_KEY"),
    )
    run_async(serve_console(settings))
    return 0
