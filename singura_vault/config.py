"""Configuration from environment variables, validated once at start.

Every variable is documented in docs/configuration.md. A bad value stops the
vault before it serves anything, with a message naming the variable and the
accepted form (``ConfigError``); nothing here ever echoes a secret value.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; raise ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    pool = PoolSettings(
        min_size=_int(env, "DB_POOL_MIN", 2, minimum=0),
        max_size=_int(env, "DB_POOL_MAX", 20, minimum=1),
        connect_timeout_ms=_int(env, "DB_CONNECT_TIMEOUT", 10_000, minimum=100),
        idle_timeout_ms=_int(env, "DB_IDLE_TIMEOUT", 30_000, minimum=0),
        query_timeout_ms=_int(env, "DB_QUERY_TIMEOUT", 60_000, minimum=1),
        slow_query_ms=_int(env, "DB_SLOW_QUERY_MS", 200, minimum=0),
        pooler=cast(Pooler, _choice(env, "DATABASE_POOLER", "none", POOLERS)),
    )
    if pool.min_size > pool.max_size:
        raise ConfigError(
            f"DB_POOL_MIN ({pool.min_size}) is larger than DB_POOL_MAX ({pool.max_size}); "
            "set DB_POOL_MIN <= DB_POOL_MAX"
        )
    environment = _choice(env, "SINGURA_ENV", "development", ("development", "production"))
    listen = env.get("SINGURA_LISTEN", "").strip() or DEFAULT_LISTEN
    _validate_listen(listen)
    database_url = env.get("DATABASE_URL", "").strip() or None
    if database_url is not None:
        _validate_dsn("DATABASE_URL", database_url)
    owner_url = env.get("DATABASE_OWNER_URL", "").strip() or None
    if owner_url is not None:
        _validate_dsn("DATABASE_OWNER_URL", owner_url)
    replica_url = env.get("DATABASE_REPLICA_URL", "").strip() or None
    if replica_url is not None:
        _validate_dsn("DATABASE_REPLICA_URL", replica_url)
        if database_url is None:
            raise ConfigError(
                "DATABASE_REPLICA_URL is set but DATABASE_URL is not: replicas serve an "
                "external primary; set DATABASE_URL too, or unset DATABASE_REPLICA_URL"
            )
    listen_url = _listen_url(env, database_url, owner_url, pool.pooler)
    kms = cast(Literal["local", "transit"], _choice(env, "SINGURA_KMS", "local", _KMS))
    if kms != "transit":
        for name in _TRANSIT_VARIABLES:
            if env.get(name, "").strip():
                raise ConfigError(
                    f"{name} is set but SINGURA_KMS is not transit; "
                    "set SINGURA_KMS=transit to use OpenBao/Vault transit, or unset it"
                )
    oauth = _oauth_settings(env)
    if pool.query_timeout_ms < oauth.timeout_s * 1000:
        raise ConfigError(
            f"DB_QUERY_TIMEOUT ({pool.query_timeout_ms} ms) is shorter than "
            f"SINGURA_OAUTH_TIMEOUT ({oauth.timeout_s:g} s): a token refresh keeps its "
            "transaction open while the provider answers, and PostgreSQL ends a transaction "
            "idle for longer than DB_QUERY_TIMEOUT; raise DB_QUERY_TIMEOUT or lower "
            "SINGURA_OAUTH_TIMEOUT"
        )
    data_dir_raw = env.get("SINGURA_DATA_DIR", "").strip()
    data_dir = Path(data_dir_raw).expanduser() if data_dir_raw else default_data_dir()
    if not data_dir.is_absolute():
        data_dir = Path.cwd() / data_dir
    return Settings(
        database_url=database_url,
        database_owner_url=owner_url,
        data_dir=data_dir,
        listen=listen,
        pool=pool,
        environment=environment,
        log_level=_choice(env, "SINGURA_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        log_format=_choice(env, "SINGURA_LOG_FORMAT", "json", ("json", "console")),
        access_log=cast(
            Literal["all", "errors", "off"],
            _choice(env, "SINGURA_ACCESS_LOG", "errors", ("all", "errors", "off")),
        ),
        health_interval_s=_float(env, "SINGURA_HEALTH_INTERVAL", 5.0, minimum=0.05),
        shutdown_grace_s=_float(env, "SINGURA_SHUTDOWN_GRACE", 10.0, minimum=0.0),
        allow_insecure=_bool(env, "SINGURA_ALLOW_INSECURE", default=False),
        encryption_key=env.get("ENCRYPTION_KEY", "").strip() or None,
        previous_encryption_keys=tuple(
            k.strip() for k in env.get("ENCRYPTION_KEY_PREVIOUS", "").split(",") if k.strip()
        ),
        auth_secret=env.get("SINGURA_AUTH_SECRET", "").strip() or None,
        auth_secret_file=_path(env, "SINGURA_AUTH_SECRET_FILE"),
        audit_retention_days=_int(env, "SINGURA_AUDIT_RETENTION_DAYS", 0, minimum=0),
        audit_signing_key_file=_path(env, "SINGURA_AUDIT_SIGNING_KEY_FILE"),
        audit_checkpoint_interval_s=_float(
            env, "SINGURA_AUDIT_CHECKPOINT_INTERVAL", 3600.0, minimum=0.0
        ),
        rewrap_batch_size=_int(env, "SINGURA_REWRAP_BATCH_SIZE", 200, minimum=1),
        destroy_delay_s=_duration(env, "SINGURA_DESTROY_DELAY", 86400.0),
        metrics_listen=_optional_listen(env, "SINGURA_METRICS_LISTEN"),
        bootstrap_admin_key=env.get("SINGURA_BOOTSTRAP_ADMIN_KEY", "").strip() or None,
        rate_limit_rps=(rps := _float(env, "SINGURA_RATE_LIMIT_RPS", 5000.0, minimum=0.0)),
        rate_limit_burst=_float(env, "SINGURA_RATE_LIMIT_BURST", max(2 * rps, 1.0), minimum=1.0),
        auth_cache_ttl_s=_float(env, "SINGURA_AUTH_CACHE_TTL", 10.0, minimum=0.0),
        organization_key_cache_ttl_s=_duration(
            env, "SINGURA_ORGANIZATION_KEY_CACHE_TTL", 300.0, minimum=0.0
        ),
        workers=_workers(_int(env, "SINGURA_WORKERS", 1, minimum=1), "SINGURA_WORKERS"),
        keyring_file=Path(keyring).expanduser()
        if (keyring := env.get("SINGURA_KEYRING_FILE", "").strip())
        else None,
        kms=kms,
        transit_address=env.get("SINGURA_TRANSIT_ADDR", "").strip() or None,
        transit_key=env.get("SINGURA_TRANSIT_KEY", "").strip() or None,
        transit_token_file=_path(env, "SINGURA_TRANSIT_TOKEN_FILE"),
        transit_mount=env.get("SINGURA_TRANSIT_MOUNT", "").strip() or None,
        transit_ca_file=_path(env, "SINGURA_TRANSIT_CA_FILE"),
        db_wait_s=_duration(env, "SINGURA_DB_WAIT", 0.0),
        oauth=oauth,
        webhooks=_webhook_settings(env),
        database_replica_url=replica_url,
        replica_max_lag_s=_duration(env, "SINGURA_REPLICA_MAX_LAG", 1.0, minimum=0.05),
        database_listen_url=listen_url,
        expiry_reminders=parse_expiry_reminders(env.get("SINGURA_EXPIRY_REMINDERS", "")),
        connection_recovery_window_s=_duration(
            env, "SINGURA_CONNECTION_RECOVERY_WINDOW", 7 * 86400.0, minimum=60
        ),
    )


def _listen_url(
    env: Mapping[str, str], database_url: str | None, owner_url: str | None, pooler: Pooler
) -> str | None:
    """DATABASE_LISTEN_URL, checked against DATABASE_URL and DATABASE_POOLER.

    Behind a transaction pooler, LISTEN would register on whichever server connection
    ran it, and the notifications would go to other clients or nowhere: every process's
    API-key cache would keep revoked keys until they expire from it, silently. So a
    declared pooler without a direct URL for LISTEN stops the vault at start, rather
    than serving with invalidation that seems to work."""
    listen_url = env.get("DATABASE_LISTEN_URL", "").strip() or None
    if listen_url is not None:
        _validate_dsn("DATABASE_LISTEN_URL", listen_url)
    if pooler != "none" and database_url is None and owner_url is None:
        raise ConfigError(
            f"DATABASE_POOLER={pooler} is set but DATABASE_URL is not: the embedded "
            "PostgreSQL needs no pooler; set DATABASE_URL to the pooler's address, or unset "
            "DATABASE_POOLER"
        )
    if listen_url is not None and database_url is None:
        raise ConfigError(
            "DATABASE_LISTEN_URL is set but DATABASE_URL is not: it is the direct connection "
            "for LISTEN beside an external DATABASE_URL; set DATABASE_URL too, or unset "
            "DATABASE_LISTEN_URL"
        )
    if pooler != "none" and database_url is not None and listen_url is None:
        raise ConfigError(
            f"DATABASE_POOLER={pooler} needs DATABASE_LISTEN_URL: a direct connection to "
            "PostgreSQL (not through the pooler) for LISTEN, which keeps every process's "
            "API-key cache in step with revocations; set it to the service role's URL on "
            "PostgreSQL itself (docs/operations.md#behind-pgbouncer)"
        )
    return listen_url


def _oauth_settings(env: Mapping[str, str]) -> OAuthSettings:
    proxy = env.get("SINGURA_OAUTH_PROXY", "").strip() or None
    if proxy is not None and not proxy.startswith(("http://", "https://", "socks5://")):
        raise ConfigError(
            "SINGURA_OAUTH_PROXY must be a proxy URL such as http://proxy.internal:3128"
        )
    return OAuthSettings(
        refresh_cooldown_s=_duration(env, "SINGURA_REFRESH_COOLDOWN", 60.0),
        refresh_margin_s=_duration(env, "SINGURA_REFRESH_MARGIN", 300.0),
        refresh_keepalive_s=_duration(env, "SINGURA_REFRESH_KEEPALIVE", 3 * 86400.0, minimum=60),
        refresh_worker=_choice(env, "SINGURA_REFRESH_WORKER", "on", ("on", "off")) == "on",
        refresh_interval_s=_duration(env, "SINGURA_REFRESH_INTERVAL", 30.0, minimum=0.1),
        connect_timeout_s=_duration(env, "SINGURA_OAUTH_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        timeout_s=_duration(env, "SINGURA_OAUTH_TIMEOUT", 15.0, minimum=0.1),
        revoke_timeout_s=_duration(env, "SINGURA_REVOKE_TIMEOUT", 5.0, minimum=0.1),
        state_ttl_s=_duration(env, "SINGURA_OAUTH_STATE_TTL", 600.0, minimum=60.0),
        proxy=proxy,
        risc_issuer=env.get("SINGURA_RISC_ISSUER", "").strip() or "https://accounts.google.com",
        risc_jwks_url=_risc_jwks_url(env),
        risc_jwks_ttl_s=_duration(env, "SINGURA_RISC_JWKS_TTL", 3600.0, minimum=60.0),
    )


def _webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    return WebhookSettings(
        worker=_choice(env, "SINGURA_WEBHOOK_WORKER", "on", ("on", "off")) == "on",
        interval_s=_duration(env, "SINGURA_WEBHOOK_INTERVAL", 1.0, minimum=0.05),
        retry_for_s=_duration(env, "SINGURA_WEBHOOK_RETRY_FOR", 86400.0, minimum=60.0),
        disable_after_s=_duration(env, "SINGURA_WEBHOOK_DISABLE_AFTER", 3 * 86400.0, minimum=60.0),
        secret_overlap_s=_duration(env, "SINGURA_WEBHOOK_SECRET_OVERLAP", 86400.0),
        connect_timeout_s=_duration(env, "SINGURA_WEBHOOK_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        timeout_s=_duration(env, "SINGURA_WEBHOOK_TIMEOUT", 10.0, minimum=0.1),
    )


def _risc_jwks_url(env: Mapping[str, str]) -> str:
    url = env.get("SINGURA_RISC_JWKS_URL", "").strip()
    if not url:
        return "https://www.googleapis.com/oauth2/v3/certs"
    if not url.startswith(("https://", "http://")):
        raise ConfigError(
            "SINGURA_RISC_JWKS_URL must be an https URL, such as "
            "https://www.googleapis.com/oauth2/v3/certs"
        )
    return url


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    """Seconds from "90", "90s", "500ms", "5m", "12h" or "3d"."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    number, unit = raw, "s"
    for suffix in sorted(_DURATION_UNITS, key=len, reverse=True):
        if raw.endswith(suffix):
            number, unit = raw[: -len(suffix)].strip(), suffix
            break
    try:
        value = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not a duration; use seconds or a unit, e.g. 90, 5m, 12h, 3d"
        ) from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum} seconds")
    return value


_REMINDER_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_MAX_REMINDER_S = 366 * 86400.0


def parse_expiry_reminders(raw: str) -> tuple[tuple[str, float], ...]:
    """SINGURA_EXPIRY_REMINDERS: comma-separated thresholds such as "30d,7d,1d" (units
    m, h, d, w), each before an expiry at which credential.expiring is sent; empty means
    the default, "none" no reminder (credential.expired is still sent). Returned as
    (label, seconds), largest first, without duplicates."""
    name = "SINGURA_EXPIRY_REMINDERS"
    text = raw.strip().lower()
    if not text:
        return DEFAULT_EXPIRY_REMINDERS
    if text == "none":
        return ()
    seen: dict[float, str] = {}
    for part in (p.strip() for p in text.split(",")):
        unit = part[-1:] if part else ""
        number = part[:-1].strip()
        if unit not in _REMINDER_UNITS or not number.isdigit():
            raise ConfigError(
                f"{name}: {part[:20]!r} is not a threshold; use a whole number and a unit "
                "(m, h, d or w), comma-separated, e.g. 30d,7d,1d (or none)"
            )
        seconds = int(number) * _REMINDER_UNITS[unit]
        if not 0 < seconds <= _MAX_REMINDER_S:
            raise ConfigError(f"{name}: {part!r} must be more than 0 and at most 366d")
        if seconds in seen:
            raise ConfigError(f"{name}: {part!r} repeats {seen[seconds]!r}")
        seen[seconds] = f"{int(number)}{unit}"
    return tuple((label, seconds) for seconds, label in sorted(seen.items(), reverse=True))


_KMS = ("local", "transit")
_TRANSIT_VARIABLES = (
    "SINGURA_TRANSIT_ADDR",
    "SINGURA_TRANSIT_KEY",
    "SINGURA_TRANSIT_TOKEN_FILE",
    "SINGURA_TRANSIT_MOUNT",
    "SINGURA_TRANSIT_CA_FILE",
)


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser() if raw else None


MAX_WORKERS = 64


def _workers(value: int, name: str) -> int:
    if value > MAX_WORKERS:
        raise ConfigError(f"{name} must be from 1 to {MAX_WORKERS}, not {value}")
    return value


def with_workers(settings: Settings, workers: int) -> Settings:
    """The settings with ``serve --workers N`` applied (it overrides SINGURA_WORKERS)."""
    if workers < 1:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS}, not {workers}")
    return dataclasses.replace(settings, workers=_workers(workers, "--workers"))


def listen_host(listen: str) -> str:
    """The host part of a host:port listen address, without IPv6 brackets."""
    host, _, _ = listen.rpartition(":")
    return host.strip("[]")


def _optional_listen(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    _validate_listen(value, name)
    return value


def _validate_listen(listen: str, name: str = "SINGURA_LISTEN") -> None:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{name}={listen!r} is not host:port; "
            "use e.g. 127.0.0.1:50051, [::1]:50051 or 0.0.0.0:50051"
        )


def _validate_dsn(name: str, value: str) -> None:
    # Never echo the value: a DSN may carry a password.
    if not value.startswith(("postgres://", "postgresql://")):
        raise ConfigError(
            f"{name} must be a PostgreSQL URL such as "
            "postgresql://user:password@host:5432/dbname?sslmode=require"
        )


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name}={raw!r} must be a finite number of at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1 or 0")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw
