"""Serving the console: uvicorn on SINGURA_CONSOLE_LISTEN, until SIGTERM or SIGINT.

The socket is bound here (port 0 picks a free one) and the bound address is logged as
``console_serving``, so that a supervisor or a test learns the port from the log.
uvicorn's own logging is routed through the vault's (JSON) configuration; its access
log is off, because the console logs its own events, and a URL is no place to look for
what an operator did.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from singura_vault.console.app import create_app
from singura_vault.console.sessions import SessionStore
from singura_vault.console.vault_client import ChannelSettings, VaultClient
from singura_vault.errors import ConfigError
from singura_vault.logs import get_logger

log = get_logger(__name__)

DEFAULT_CONSOLE_LISTEN = "127.0.0.1:8080"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ConsoleSettings:
    """How the console serves, and where the vault is."""

    listen: str
    vault: ChannelSettings
    idle_s: float
    lifetime_s: float
    tls_cert: Path | None = None
    tls_key: Path | None = None


def _bind(listen: str) -> socket.socket:
    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(
            f"SINGURA_CONSOLE_LISTEN={listen!r} is not host:port (e.g. 127.0.0.1:8080)"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port_text)))
        # Listening before console_serving is logged: whoever reads the port from the
        # log can connect at once (connections wait in the backlog until uvicorn runs).
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {listen} ({exc.strerror or type(exc).__name__}): set "
            "SINGURA_CONSOLE_LISTEN to a free host:port"
        ) from None
    return sock


async def serve_console(settings: ConsoleSettings) -> None:
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError(
            "the console's TLS needs both SINGURA_CONSOLE_TLS_CERT and SINGURA_CONSOLE_TLS_KEY"
        )
    sock = _bind(settings.listen)
    host, port = sock.getsockname()[:2]
    tls = settings.tls_cert is not None
    if not tls and host not in LOOPBACK:
        # The session cookie would cross the network in the clear.
        log.warning(
            "console_plaintext_on_network",
            listen=settings.listen,
            hint="set SINGURA_CONSOLE_TLS_CERT and SINGURA_CONSOLE_TLS_KEY, "
            "or put a TLS proxy in front",
        )
    vault = VaultClient(settings.vault)
    sessions = SessionStore(idle_s=settings.idle_s, lifetime_s=settings.lifetime_s)
    config = uvicorn.Config(
        create_app(vault, sessions=sessions),
        log_config=None,
        access_log=False,
        server_header=False,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    log.info(
        "console_serving",
        listen=f"{host}:{port}",
        port=port,
        tls=tls,
        vault_address=settings.vault.address,
        vault_tls=settings.vault.credentials is not None,
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        await vault.close()
        sock.close()
        log.info("console_stopped")
