"""structlog configuration: JSON events with request context, and a redaction step.

Log lines are events with stable snake_case names (``rpc_completed``,
``db_unreachable``...). Request-scoped fields (``rpc_method``, ``request_id``,
``organization_id``) are bound in contextvars by the server interceptor. The
redaction processor blanks every field whose name says it carries a secret (an
exact name like ``access_token`` or ``state``, or a suffix like ``_secret``), at
any depth of nested dicts, as a last line of defence: code must never pass
secrets to a logger in the first place. It goes by what a field *is*, not by the
words in its name: ``access_token_version`` (a number) and ``refresh_token_rotated``
(a flag) are kept.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from functools import lru_cache
from typing import Any, Final, TextIO

import structlog

REDACTED = "[REDACTED]"
# Field names (normalised by _normalised) whose value is a secret. `code` is not one:
# it is a gRPC status code name on rpc_failed; an OAuth code is `authorization_code`.
SECRET_NAMES: Final = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "bearer",
        "authorization",
        "cookie",
        "set_cookie",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "password",
        "passwd",
        "passphrase",
        "authorization_code",
        "auth_code",
        "code_verifier",
        "state",
        "value",
        "plaintext",
        "credential_value",
        "private_key",
        "signing_key",
        "encryption_key",
        "root_key",
        "data_key",
        "key_material",
        "dsn",
    }
)
# Suffixes that name a secret whatever comes before them (client_secret, db_password,
# x_api_key, service_dsn). A suffix names what the field is: `access_token_version`
# ends in `_version` and is kept.
SECRET_SUFFIXES: Final = (
    "_token",
    "_tokens",
    "_secret",
    "_secrets",
    "_password",
    "_passwd",
    "_passphrase",
    "_api_key",
    "_apikey",
    "_authorization",
    "_private_key",
    "_plaintext",
    "_verifier",
    "_cookie",
    "_dsn",
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")


def _normalised(name: str) -> str:
    """accessToken, Access-Token and ACCESS_TOKEN all become access_token."""
    return _CAMEL_BOUNDARY.sub("_", name).lower().replace("-", "_")


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a field of this name carries a secret (SECRET_NAMES, SECRET_SUFFIXES)."""
    normalised = _normalised(name)
    return normalised in SECRET_NAMES or normalised.endswith(SECRET_SUFFIXES)


def _redacted(mapping: MutableMapping[Any, Any]) -> MutableMapping[Any, Any]:
    for key, value in list(mapping.items()):
        if isinstance(key, str) and key != "event" and is_secret_name(key):
            mapping[key] = REDACTED
        elif isinstance(value, str) and "://" in value:
            mapping[key] = _URL_PASSWORD.sub(rf"\1{REDACTED}@", value)
        elif isinstance(value, Mapping):
            # A copy: the caller's dict is not the log's to change.
            mapping[key] = _redacted(dict(value))
    return mapping


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank fields that carry secrets (also inside nested dicts), and passwords
    inside database URLs."""
    return _redacted(event_dict)


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = True,
) -> None:
    """Route structlog and stdlib logging (asyncpg, grpc) to stderr (or ``stream``)."""
    output = stream or sys.stderr
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per event (message and newline together), not print()'s two: the
        # workers of `serve --workers N` share the parent's stderr, and with unbuffered
        # output (PYTHONUNBUFFERED, usual in containers) two workers' lines interleaved
        # into one that no log shipper can parse. One write of at most PIPE_BUF bytes
        # to a pipe is atomic.
        logger_factory=structlog.WriteLoggerFactory(file=output),
        # Caching is faster; tests turn it off so structlog.testing.capture_logs works.
        cache_logger_on_first_use=cache_loggers,
    )
    # Libraries log through the standard library; render their records as the
    # same JSON events instead of free-form multi-line text.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
