"""Translate asyncpg and socket errors into the vault's exception tree, in one place.

Repositories add meaning to constraint names (``constraint_messages``) so that a
unique violation on ``organizations_slug_key`` becomes "slug: ... is taken"
rather than a driver message. They map a name to a *factory*, never to an exception
instance: raising one shared instance again and again chains every raise's traceback
(and, through it, every frame's locals and the driver error) onto that instance for
the life of the process -- it was how ``serve`` grew 8-12 KB per contended store.
Anything not recognised here propagates unchanged and becomes INTERNAL at the server
edge, where it is logged with the request id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import asyncpg

from singura_vault.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    VaultError,
)

# Constraint name -> a function that makes the error to raise (a fresh one per raise).
ConstraintErrors = Mapping[str, Callable[[], VaultError]]

_CONNECTION_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.PostgresConnectionError,
    ConnectionError,
    OSError,
)


LOST_MID_CALL = (
    "the database connection was lost during the call; retry "
    "(with the same request_id, creates and stores are idempotent)"
)
# A multi-host DATABASE_URL with target_session_attrs=read-write found no primary:
# the old one is down and no standby has been promoted yet.
NO_PRIMARY = (
    "no host in DATABASE_URL accepts writes (target_session_attrs=read-write): the "
    "primary is down or a failover is under way; retry shortly"
)
READ_ONLY_SERVER = (
    "the database server became read-only (a primary demoted during a failover); "
    "retry shortly: the vault reconnects to the new primary"
)


class ServerReadOnly(Exception):  # noqa: N818 - reads as the condition it reports
    """A statement hit a server in recovery (raised by the pool, mapped to Unavailable)."""


@contextmanager
def map_driver_errors(  # noqa: C901 - one clause per driver error family, in order
    constraint_messages: ConstraintErrors | None = None,
) -> Iterator[None]:
    """Re-raise driver errors as VaultError subclasses.

    ``constraint_messages`` maps a constraint name to a factory of the error to raise
    when a unique, foreign-key or check constraint of that name is violated.
    """
    known = constraint_messages or {}
    try:
        yield
    except VaultError:
        raise
    except asyncpg.exceptions.IntegrityConstraintViolationError as exc:
        constraint = getattr(exc, "constraint_name", None)
        if constraint is not None and constraint in known:
            raise known[constraint]() from exc
        if isinstance(exc, asyncpg.exceptions.UniqueViolationError):
            raise AlreadyExists("a resource with these unique values already exists") from exc
        if isinstance(exc, asyncpg.exceptions.ForeignKeyViolationError):
            raise NotFound("a referenced resource does not exist") from exc
        if isinstance(exc, asyncpg.exceptions.CheckViolationError):
            raise InvalidArgument("request", f"violates the rule {constraint}") from exc
        raise FailedPrecondition("the change conflicts with existing data") from exc
    except (
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
    ) as exc:
        raise Aborted("the change conflicted with a concurrent one; retry the call") from exc
    except (
        asyncpg.exceptions.QueryCanceledError,
        asyncpg.exceptions.LockNotAvailableError,
    ) as exc:
        raise DeadlineExceeded(
            "a database statement (or its wait for a lock) exceeded DB_QUERY_TIMEOUT and was "
            "cancelled; retry, and raise DB_QUERY_TIMEOUT if this keeps happening"
        ) from exc
    except TimeoutError as exc:  # before OSError, of which it is a subclass
        raise Unavailable(
            "no database connection within DB_CONNECT_TIMEOUT (the pool is exhausted or "
            "the server does not answer); retry shortly"
        ) from exc
    except _CONNECTION_LOST as exc:
        raise Unavailable("the database is unreachable; retry shortly") from exc
    except asyncpg.exceptions.TargetServerAttributeNotMatched as exc:
        raise Unavailable(NO_PRIMARY) from exc
    except ServerReadOnly as exc:
        raise Unavailable(READ_ONLY_SERVER) from exc
    except asyncpg.exceptions.InternalClientError as exc:
        # What a connection whose server died mid-statement raises on its next use
        # (the pool discards it, see db/pool.py).
        raise Unavailable(LOST_MID_CALL) from exc
    except asyncio.CancelledError:
        raise
