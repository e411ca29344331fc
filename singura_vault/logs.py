"""structlog configuration: JSON events with request context, and a redaction step.

Log lines are events with stable snake_case names (``rpc_completed``,
``db_unreachable``...). Request-scoped fields (``rpc_method``, ``request_id``,
``organization_id``) are bound in contextvars by the server interceptor. The
redaction processor blanks any field whose name suggests a secret, as a last
line of defence: code must never pass secrets to a logger in the first place.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|authorization|api_?key|plaintext|private|credential_value|dsn)",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+@")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank fields whose names look secret, and passwords inside database URLs."""
    for key, value in list(event_dict.items()):
        if key != "event" and _SECRET_KEY.search(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and "://" in value:
            event_dict[key] = _URL_PASSWORD.sub(rf"\1{REDACTED}@", value)
    return event_dict


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
