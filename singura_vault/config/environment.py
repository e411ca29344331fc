"""The environment variable table: which variable sets which setting, and the checks that
span several variables (a pooler needs a direct LISTEN URL, a replica an external primary,
the database's statement budget outlasts a provider call).

``load_settings`` reads it all once at start into ``Settings`` (``singura_vault.config``);
every variable is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

from singura_vault.config import (
    DEFAULT_EXPIRY_REMINDERS,
    DEFAULT_LISTEN,
    POOLERS,
    OAuthSettings,
    Pooler,
    PoolSettings,
    Settings,
    WebhookSettings,
    check_workers,
    default_data_dir,
)
from singura_vault.config.values import (
    check_dsn,
    check_listen,
    read_bool,
    read_choice,
    read_duration,
    read_float,
    read_int,
    read_listen,
    read_path,
)
from singura_vault.errors import ConfigError


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration; raise ConfigError naming the variable."""
    env = os.environ if environ is None else environ
    pool = PoolSettings(
        min_size=read_int(env, "DB_POOL_MIN", 2, minimum=0),
        max_size=read_int(env, "DB_POOL_MAX", 20, minimum=1),
        connect_timeout_ms=read_int(env, "DB_CONNECT_TIMEOUT", 10_000, minimum=100),
        idle_timeout_ms=read_int(env, "DB_IDLE_TIMEOUT", 30_000, minimum=0),
        query_timeout_ms=read_int(env, "DB_QUERY_TIMEOUT", 60_000, minimum=1),
        slow_query_ms=read_int(env, "DB_SLOW_QUERY_MS", 200, minimum=0),
        pooler=cast(Pooler, read_choice(env, "DATABASE_POOLER", "none", POOLERS)),
    )
    if pool.min_size > pool.max_size:
        raise ConfigError(
            f"DB_POOL_MIN ({pool.min_size}) is larger than DB_POOL_MAX ({pool.max_size}); "
            "set DB_POOL_MIN <= DB_POOL_MAX"
        )
    environment = read_choice(env, "SINGURA_ENV", "development", ("development", "production"))
    listen = env.get("SINGURA_LISTEN", "").strip() or DEFAULT_LISTEN
    check_listen(listen)
    database_url = env.get("DATABASE_URL", "").strip() or None
    if database_url is not None:
        check_dsn("DATABASE_URL", database_url)
    owner_url = env.get("DATABASE_OWNER_URL", "").strip() or None
    if owner_url is not None:
        check_dsn("DATABASE_OWNER_URL", owner_url)
    replica_url = env.get("DATABASE_REPLICA_URL", "").strip() or None
    if replica_url is not None:
        check_dsn("DATABASE_REPLICA_URL", replica_url)
        if database_url is None:
            raise ConfigError(
                "DATABASE_REPLICA_URL is set but DATABASE_URL is not: replicas serve an "
                "external primary; set DATABASE_URL too, or unset DATABASE_REPLICA_URL"
            )
    listen_url = _listen_url(env, database_url, owner_url, pool.pooler)
    kms = cast(Literal["local", "transit"], read_choice(env, "SINGURA_KMS", "local", _KMS))
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
        log_level=read_choice(
            env, "SINGURA_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
        ),
        log_format=read_choice(env, "SINGURA_LOG_FORMAT", "json", ("json", "console")),
        access_log=cast(
            Literal["all", "errors", "off"],
            read_choice(env, "SINGURA_ACCESS_LOG", "errors", ("all", "errors", "off")),
        ),
        health_interval_s=read_float(env, "SINGURA_HEALTH_INTERVAL", 5.0, minimum=0.05),
        shutdown_grace_s=read_float(env, "SINGURA_SHUTDOWN_GRACE", 10.0, minimum=0.0),
        allow_insecure=read_bool(env, "SINGURA_ALLOW_INSECURE", default=False),
        encryption_key=env.get("ENCRYPTION_KEY", "").strip() or None,
        previous_encryption_keys=tuple(
            k.strip() for k in env.get("ENCRYPTION_KEY_PREVIOUS", "").split(",") if k.strip()
        ),
        auth_secret=env.get("SINGURA_AUTH_SECRET", "").strip() or None,
        auth_secret_file=read_path(env, "SINGURA_AUTH_SECRET_FILE"),
        audit_retention_days=read_int(env, "SINGURA_AUDIT_RETENTION_DAYS", 0, minimum=0),
        audit_signing_key_file=read_path(env, "SINGURA_AUDIT_SIGNING_KEY_FILE"),
        audit_checkpoint_interval_s=read_float(
            env, "SINGURA_AUDIT_CHECKPOINT_INTERVAL", 3600.0, minimum=0.0
        ),
        rewrap_batch_size=read_int(env, "SINGURA_REWRAP_BATCH_SIZE", 200, minimum=1),
        destroy_delay_s=read_duration(env, "SINGURA_DESTROY_DELAY", 86400.0),
        metrics_listen=read_listen(env, "SINGURA_METRICS_LISTEN"),
        bootstrap_admin_key=env.get("SINGURA_BOOTSTRAP_ADMIN_KEY", "").strip() or None,
        rate_limit_rps=(rps := read_float(env, "SINGURA_RATE_LIMIT_RPS", 5000.0, minimum=0.0)),
        rate_limit_burst=read_float(
            env, "SINGURA_RATE_LIMIT_BURST", max(2 * rps, 1.0), minimum=1.0
        ),
        auth_cache_ttl_s=read_float(env, "SINGURA_AUTH_CACHE_TTL", 10.0, minimum=0.0),
        organization_key_cache_ttl_s=read_duration(
            env, "SINGURA_ORGANIZATION_KEY_CACHE_TTL", 300.0, minimum=0.0
        ),
        workers=check_workers(read_int(env, "SINGURA_WORKERS", 1, minimum=1), "SINGURA_WORKERS"),
        keyring_file=Path(keyring).expanduser()
        if (keyring := env.get("SINGURA_KEYRING_FILE", "").strip())
        else None,
        kms=kms,
        transit_address=env.get("SINGURA_TRANSIT_ADDR", "").strip() or None,
        transit_key=env.get("SINGURA_TRANSIT_KEY", "").strip() or None,
        transit_token_file=read_path(env, "SINGURA_TRANSIT_TOKEN_FILE"),
        transit_mount=env.get("SINGURA_TRANSIT_MOUNT", "").strip() or None,
        transit_ca_file=read_path(env, "SINGURA_TRANSIT_CA_FILE"),
        db_wait_s=read_duration(env, "SINGURA_DB_WAIT", 0.0),
        oauth=oauth,
        webhooks=_webhook_settings(env),
        database_replica_url=replica_url,
        replica_max_lag_s=read_duration(env, "SINGURA_REPLICA_MAX_LAG", 1.0, minimum=0.05),
        database_listen_url=listen_url,
        expiry_reminders=parse_expiry_reminders(env.get("SINGURA_EXPIRY_REMINDERS", "")),
        connection_recovery_window_s=read_duration(
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
        check_dsn("DATABASE_LISTEN_URL", listen_url)
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
        refresh_cooldown_s=read_duration(env, "SINGURA_REFRESH_COOLDOWN", 60.0),
        refresh_margin_s=read_duration(env, "SINGURA_REFRESH_MARGIN", 300.0),
        refresh_keepalive_s=read_duration(
            env, "SINGURA_REFRESH_KEEPALIVE", 3 * 86400.0, minimum=60
        ),
        refresh_worker=read_choice(env, "SINGURA_REFRESH_WORKER", "on", ("on", "off")) == "on",
        refresh_interval_s=read_duration(env, "SINGURA_REFRESH_INTERVAL", 30.0, minimum=0.1),
        connect_timeout_s=read_duration(env, "SINGURA_OAUTH_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        timeout_s=read_duration(env, "SINGURA_OAUTH_TIMEOUT", 15.0, minimum=0.1),
        revoke_timeout_s=read_duration(env, "SINGURA_REVOKE_TIMEOUT", 5.0, minimum=0.1),
        state_ttl_s=read_duration(env, "SINGURA_OAUTH_STATE_TTL", 600.0, minimum=60.0),
        proxy=proxy,
        risc_issuer=env.get("SINGURA_RISC_ISSUER", "").strip() or "https://accounts.google.com",
        risc_jwks_url=_risc_jwks_url(env),
        risc_jwks_ttl_s=read_duration(env, "SINGURA_RISC_JWKS_TTL", 3600.0, minimum=60.0),
    )


def _webhook_settings(env: Mapping[str, str]) -> WebhookSettings:
    return WebhookSettings(
        worker=read_choice(env, "SINGURA_WEBHOOK_WORKER", "on", ("on", "off")) == "on",
        interval_s=read_duration(env, "SINGURA_WEBHOOK_INTERVAL", 1.0, minimum=0.05),
        retry_for_s=read_duration(env, "SINGURA_WEBHOOK_RETRY_FOR", 86400.0, minimum=60.0),
        disable_after_s=read_duration(
            env, "SINGURA_WEBHOOK_DISABLE_AFTER", 3 * 86400.0, minimum=60.0
        ),
        secret_overlap_s=read_duration(env, "SINGURA_WEBHOOK_SECRET_OVERLAP", 86400.0),
        connect_timeout_s=read_duration(env, "SINGURA_WEBHOOK_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        timeout_s=read_duration(env, "SINGURA_WEBHOOK_TIMEOUT", 10.0, minimum=0.1),
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
