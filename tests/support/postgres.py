"""How tests reach the session's PostgreSQL server (embedded or external)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from singura_vault.db.embedded import EmbeddedPostgres


@dataclass(frozen=True)
class PostgresServer:
    """How tests reach the throwaway PostgreSQL server."""

    superuser_dsn: str
    embedded: EmbeddedPostgres | None

    def dsn(self, user: str, database: str) -> str:
        if self.embedded is not None:
            return self.embedded.cluster().dsn(user, database)
        parts = urlsplit(self.superuser_dsn)
        host = parts.hostname or "localhost"
        netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))
