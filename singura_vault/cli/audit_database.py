"""``singura-vault audit prune`` and ``audit rotate-signing-key``: operators' actions on
the database itself, not exposed over the API (one deletes, the other changes which key
the vault must sign with). Each records itself as an audit event (``audit.pruned``,
``audit.signing_key_rotated``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import timedelta

from singura_vault.cli._common import counted
from singura_vault.composition import Components
from singura_vault.config import Settings
from singura_vault.db import setup
from singura_vault.db.pool import Database
from singura_vault.errors import ConfigError, FailedPrecondition
from singura_vault.service import audit_checkpoints


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    """The vault's database for an operator's command: the embedded one (started if it
    is not running, migrated) or DATABASE_URL's."""
    async with AsyncExitStack() as stack:
        if settings.embedded:
            embedded = setup.embedded_for_command(settings)
            _, superuser_dsn, owner_dsn, dsn = await stack.enter_async_context(embedded)
            await setup.bootstrap_embedded_roles(superuser_dsn)
            await setup.apply_migrations(owner_dsn)
        elif settings.database_url is None:
            raise ConfigError(setup.NEEDS_DATABASE_URL)
        else:
            dsn = settings.database_url
        db = await Database.connect(dsn, replace(settings.pool, min_size=1, max_size=2))
        try:
            yield db
        finally:
            await db.close()


async def run_prune(settings: Settings, older_than: timedelta) -> int:
    async with _database(settings) as db:
        pruned = await Components(db).audit.prune(older_than, "operator")
    print(f"pruned {counted(sum(pruned.values()), 'event')} from {counted(len(pruned), 'chain')}")
    return 0


async def run_rotate_signing_key(settings: Settings, actor: str) -> int:
    """`audit rotate-signing-key`: see its description. A development key is written
    before the database records it, so that a failure leaves a file to rotate to again,
    never a recorded key that nobody holds."""
    signer = audit_checkpoints.rotation_signer(settings)
    async with _database(settings) as db:
        components = Components(db, audit_signer=signer)
        current = await components.audit_checkpoints.current_key()
        if current is not None and current.key_id == signer.key_id:
            print(
                f"error: {signer.key_id} ({audit_checkpoints.signing_key_path(settings)}) "
                "already is the key that signs this database's checkpoints; "
                f"{audit_checkpoints.already_current_advice(settings)}",
                file=sys.stderr,
            )
            return 1
        if current is not None and signer.unsaved_path is not None:
            signer.save_generated()
        try:
            previous, signed = await components.audit_checkpoints.rotate(actor)
        except FailedPrecondition as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
    print(
        f"rotated the audit signing key: {previous} -> {signer.key_id} "
        f"({audit_checkpoints.signing_key_path(settings)}); signed {counted(signed, 'chain')} "
        "with the new key. Restart every vault process with this key, and give auditors its "
        "public key (`singura-vault audit public-key`) beside the old one."
    )
    return 0
