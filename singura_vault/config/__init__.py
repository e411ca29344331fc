"""Configuration from environment variables, validated once at start.

This module holds what the vault is configured with: the settings types and their
defaults. ``config/environment.py`` reads the environment variables into them
(``load_settings``), with the checks that span several variables, and
``config/values.py`` reads and checks one variable's value. Every variable is
documented in docs/configuration.md. A bad value stops the vault before it serves
anything, with a message naming the variable and the accepted form (``ConfigError``);
nothing here ever echoes a secret value.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import platformdirs

from singura_vault.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:50051"
# As root, the per-user data folder would be under /root (mode 0700), which the
# embedded server's own OS user cannot traverse; /var/lib is the FHS home of a
# system service's state and needs no permission widening.
ROOT_DEFAULT_DATA_DIR = Path("/var/lib/singura-vault")

# DATABASE_POOLER: what sits between the vault and PostgreSQL on DATABASE_URL (and
# DATABASE_REPLICA_URL). "pgbouncer-transaction": PgBouncer in transaction pooling mode,
# which hands each transaction (each statement outside one) to any server connection,
# so nothing may outlive a transaction on a connection (docs/operations.md#behind-pgbouncer).
Pooler = Literal["none", "pgbouncer-transaction"]
POOLERS: tuple[Pooler, ...] = ("none", "pgbouncer-transaction")


@dataclass(frozen=True)
class PoolSettings:
    """asyncpg pool settings, from the seed's DB_* variables (milliseconds)."""

    min_size: int = 2
    max_size: int = 20
    connect_timeout_ms: int = 10_000
    idle_timeout_ms: int = 30_000
    query_timeout_ms: int = 60_000
    slow_query_ms: int = 200
    # DATABASE_POOLER: behind a transaction pooler the pool keeps no prepared statements
    # and sends no session settings at connect (Database.connect).
    pooler: Pooler = "none"

    def session_settings(self) -> dict[str, str]:
        """The PostgreSQL settings every vault connection runs with. Sent at connect;
        behind a transaction pooler, which does not pass them on, they are the service
        role's defaults instead (ALTER ROLE ... SET, docs/operations.md#behind-pgbouncer),
        and `serve` checks at start that the connections it gets have them."""
        budget = str(self.query_timeout_ms)
        return {
            "statement_timeout": budget,
            # Lock waits count against the same budget as the statement.
            "lock_timeout": budget,
            # A vault that stops mid-transaction (frozen, or cut off from the database)
            # holds its row locks only this long; and a client that vanished over TCP is
            # noticed within about a minute, not the OS's two hours, so its connection
            # slots come back.
            "idle_in_transaction_session_timeout": budget,
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
            "search_path": "singura",
        }


# SINGURA_EXPIRY_REMINDERS' default: 30d,7d,1d.
DEFAULT_EXPIRY_REMINDERS: tuple[tuple[str, float], ...] = (
    ("30d", 30 * 86400.0),
    ("7d", 7 * 86400.0),
    ("1d", 86400.0),
)


@dataclass(frozen=True)
class OAuthSettings:
    """How the vault refreshes OAuth tokens (docs/oauth.md), in seconds."""

    # After a transient failure (timeout, 5xx, 429), no refresh before this has passed
    # (or the provider's Retry-After, if longer).
    refresh_cooldown_s: float = 60.0
    # The background worker (and RefreshConnection without force) refreshes access
    # tokens that expire within this margin ...
    refresh_margin_s: float = 300.0
    # ... and every connection not refreshed for this long (Google drops refresh
    # tokens unused for six months).
    refresh_keepalive_s: float = 3 * 86400.0
    refresh_worker: bool = True
    refresh_interval_s: float = 30.0
    connect_timeout_s: float = 5.0
    timeout_s: float = 15.0
    revoke_timeout_s: float = 5.0
    # Outbound proxy for token and revocation endpoints; environment proxies are ignored.
    proxy: str | None = None
    # How long a StartAuthorization's state may be completed (the connect flow).
    state_ttl_s: float = 600.0
    # Google RISC security event tokens (provider signals, docs/events.md): who issues
    # them, where its keys are published, how long a fetched key set is used.
    risc_issuer: str = "https://accounts.google.com"
    risc_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    risc_jwks_ttl_s: float = 3600.0


@dataclass(frozen=True)
class WebhookSettings:
    """How the vault delivers webhooks (docs/events.md#webhooks), in seconds."""

    # The delivery worker of each process (off: this process delivers nothing).
    worker: bool = True
    # How often an idle worker looks for due deliveries (a commit of this process
    # wakes it at once).
    interval_s: float = 1.0
    # Retries stop this long after a delivery's first attempt was due.
    retry_for_s: float = 86400.0
    # An endpoint failing (no 2xx) for this long is disabled.
    disable_after_s: float = 3 * 86400.0
    # After RotateWebhookSecret the previous secret signs beside the new one this long.
    secret_overlap_s: float = 86400.0
    connect_timeout_s: float = 5.0
    # The whole request, including reading (the first 1 KiB of) the answer.
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Settings:
    """Everything the vault reads from its environment."""

    database_url: str | None
    database_owner_url: str | None
    data_dir: Path
    listen: str
    pool: PoolSettings
    environment: str
    log_level: str
    log_format: str
    health_interval_s: float
    shutdown_grace_s: float
    allow_insecure: bool
    # The root key as given (base64/hex); decoded and validated only by the key
    # package. Excluded from repr so that printing Settings never shows it.
    encryption_key: str | None = field(default=None, repr=False)
    previous_encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    keyring_file: Path | None = None
    # SINGURA_KMS=transit: the root key is in OpenBao/Vault transit; only the
    # token file's path is kept here, the key package reads the token itself.
    kms: Literal["local", "transit"] = "local"
    transit_address: str | None = None
    transit_key: str | None = None
    transit_token_file: Path | None = None
    transit_mount: str | None = None
    transit_ca_file: Path | None = None
    auth_secret: str | None = field(default=None, repr=False)
    # SINGURA_AUTH_SECRET_FILE: the same secret in an owner-only file (container secrets).
    auth_secret_file: Path | None = None
    bootstrap_admin_key: str | None = field(default=None, repr=False)
    rate_limit_rps: float = 5000.0
    audit_retention_days: int = 0
    audit_signing_key_file: Path | None = None
    audit_checkpoint_interval_s: float = 3600.0
    rewrap_batch_size: int = 200
    # SINGURA_DESTROY_DELAY: how long DestroyCredentialVersion waits before erasing.
    destroy_delay_s: float = 86400.0
    metrics_listen: str | None = None
    rate_limit_burst: float = 1000.0
    access_log: Literal["all", "errors", "off"] = "errors"
    auth_cache_ttl_s: float = 10.0
    # SINGURA_ORGANIZATION_KEY_CACHE_TTL: how long an unwrapped data key of an organization
    # with its own root key is cached; bounds how long its kill switch takes.
    organization_key_cache_ttl_s: float = 300.0
    workers: int = 1
    # How long `serve` keeps trying an external database that does not answer at start.
    db_wait_s: float = 0.0
    oauth: OAuthSettings = field(default_factory=lambda: OAuthSettings())
    webhooks: WebhookSettings = field(default_factory=lambda: WebhookSettings())
    # DATABASE_REPLICA_URL: a hot standby that serves reads tolerating staleness up to
    # SINGURA_REPLICA_MAX_LAG (docs/high-availability.md#reads-from-replicas).
    database_replica_url: str | None = None
    replica_max_lag_s: float = 1.0
    # DATABASE_LISTEN_URL: a direct connection (no transaction pooler) for LISTEN; None:
    # DATABASE_URL's, which load_settings allows only when no pooler is declared.
    database_listen_url: str | None = None
    # SINGURA_EXPIRY_REMINDERS: (label, seconds) of each credential.expiring threshold,
    # largest first (docs/events.md#expiry-reminders); () sends credential.expired only.
    expiry_reminders: tuple[tuple[str, float], ...] = DEFAULT_EXPIRY_REMINDERS
    # SINGURA_CONNECTION_RECOVERY_WINDOW: how long DeleteConnection (without force)
    # keeps a connection recoverable before the purge job removes it.
    connection_recovery_window_s: float = 7 * 86400.0

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def embedded(self) -> bool:
        """True when the vault runs its own PostgreSQL: neither DATABASE_URL nor
        DATABASE_OWNER_URL is set. The one definition every command uses; with only
        DATABASE_OWNER_URL set the database is external (``migrate up`` and ``restore``
        need no more), and ``serve`` refuses to start without DATABASE_URL."""
        return self.database_url is None and self.database_owner_url is None


def default_data_dir() -> Path:
    """Where the vault keeps its files when SINGURA_DATA_DIR is not set."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ROOT_DEFAULT_DATA_DIR
    return Path(platformdirs.user_data_dir("singura-vault", appauthor=False))


MAX_WORKERS = 64


def check_workers(value: int, name: str) -> int:
    """Refuse more than MAX_WORKERS worker processes (SINGURA_WORKERS, --workers)."""
    if value > MAX_WORKERS:
        raise ConfigError(f"{name} must be from 1 to {MAX_WORKERS}, not {value}")
    return value


def with_workers(settings: Settings, workers: int) -> Settings:
    """The settings with ``serve --workers N`` applied (it overrides SINGURA_WORKERS)."""
    if workers < 1:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS}, not {workers}")
    return dataclasses.replace(settings, workers=check_workers(workers, "--workers"))


def listen_host(listen: str) -> str:
    """The host part of a host:port listen address, without IPv6 brackets."""
    host, _, _ = listen.rpartition(":")
    return host.strip("[]")
