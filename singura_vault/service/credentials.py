"""Credential use cases: authorization, validation and paging of the credential RPCs.

It holds no key: values are sealed and opened by the sealing gateway
(service/sealing.py), which the store and reveal paths of the repositories call back
at the one moment a ciphertext's place is known or its row is read. A reveal's value
leaves only through :meth:`CredentialService.reveal`, :meth:`reveal_if` and
:meth:`reveal_many`, and only after the attempt's audit event has committed in a
statement of its own (how, and what is not one transaction: the docstring of
repositories/credential_reveals.py).
No value, key or ciphertext byte is ever logged or put into an error message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from singura_vault.clock import Clock, utc_now
from singura_vault.context import Role
from singura_vault.domain.credentials import (
    Credential,
    CredentialSlot,
    CredentialState,
    CredentialType,
    VersionTransition,
)
from singura_vault.domain.paging import PageCursor
from singura_vault.domain.sealed import EncryptedValue
from singura_vault.errors import (
    InvalidArgument,
    InvariantBroken,
    PermissionDenied,
    VaultError,
)
from singura_vault.repositories.credential_reveals import CredentialReveals
from singura_vault.repositories.credential_store import CredentialStore
from singura_vault.repositories.credential_store_request import NoDataKey, StoreRequest
from singura_vault.repositories.credentials import CredentialRepository, RevealTarget
from singura_vault.service import pagination, validation
from singura_vault.service.authz import (
    READ,
    REVEAL,
    REVEAL_ANY,
    REVEAL_REFRESH_TOKEN,
    WRITE,
    Authorizer,
)
from singura_vault.service.credential_versions import TRANSITION_ACTIONS, transition_refused
from singura_vault.service.sealing import SealingService

MAX_VALUE_BYTES = 64 * 1024
MAX_EXPIRY_WINDOW = timedelta(days=3650)
MAX_BATCH_REVEAL = 100
# SINGURA_DESTROY_DELAY's default: GCP Secret Manager's version_destroy_ttl is a day too.
DEFAULT_DESTROY_DELAY = timedelta(hours=24)


@dataclass(frozen=True)
class CredentialPage:
    credentials: tuple[Credential, ...]
    next_page_token: str


def _reveal_roles(credential_type: CredentialType | None) -> tuple[Role, ...]:
    """The roles that may reveal a credential of this type: refresh tokens have a role
    of their own (#29; GetAccessToken refreshes inside the vault, so a client rarely
    needs one), every other type needs revealer."""
    return REVEAL_REFRESH_TOKEN if credential_type is CredentialType.REFRESH_TOKEN else REVEAL


def _reveal_action(credential_type: CredentialType | None) -> str:
    if credential_type is CredentialType.REFRESH_TOKEN:
        return "reveal refresh tokens"
    return "reveal credentials"


def _value_bytes(value: str) -> bytes:
    if not value:
        raise InvalidArgument("value", "is required")
    raw = value.encode("utf-8")
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidArgument(
            "value", f"is {len(raw)} bytes; the limit is {MAX_VALUE_BYTES} bytes (64 KiB)"
        )
    return raw


class CredentialService:
    """Store, list, reveal and revoke credentials of connections."""

    def __init__(
        self,
        repository: CredentialRepository,
        stores: CredentialStore,
        reveals: CredentialReveals,
        sealing: SealingService,
        authorizer: Authorizer | None = None,
        *,
        destroy_delay: timedelta = DEFAULT_DESTROY_DELAY,
        clock: Clock = utc_now,
    ) -> None:
        """``destroy_delay``: SINGURA_DESTROY_DELAY; ``clock``: what "now" is when a
        destruction is scheduled (the destruction job reads the same one)."""
        self._repository = repository
        self._stores = stores
        self._reveals = reveals
        self._sealing = sealing
        # The reveal path's opener and the store path's sealer, bound once.
        self._open = sealing.open_credential
        self._seal_for = sealing.seal_for
        self._authz = authorizer or Authorizer()
        self._destroy_delay = destroy_delay
        self._clock = clock

    async def store(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        value: str,
        expires_at: datetime | None,
        request_id: str,
        expected_version: int | None = None,
    ) -> Credential:
        """Store the next version; with ``expected_version`` (0: none yet) only if the
        current version is that one, else ABORTED (CREDENTIAL_VERSION_MISMATCH)."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "store credentials")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        plaintext = _value_bytes(value)
        key = validation.parse_optional_uuid("request_id", request_id)
        if expected_version is not None and expected_version < 0:
            raise InvalidArgument(
                "expected_version",
                "must be 0 (no version stored yet) or the version you expect to be current",
            )
        store = StoreRequest(conn_id, credential_type, expires_at, key, expected_version)

        async def seal(slot: CredentialSlot) -> EncryptedValue:
            return await self._seal_for(slot, plaintext)

        try:
            return await self._stores.store(org_id, store, seal)
        except NoDataKey:
            # The organization's first credential (or first after its keys were
            # shredded): make a data key, then store again. A concurrent store
            # may have made one already; then ours is simply not inserted.
            await self._sealing.create_data_key(org_id)
            return await self._stores.store(org_id, store, seal)

    async def get(self, organization_id: str, credential_id: str) -> Credential:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "read credentials")
        return await self._repository.get(
            org_id, validation.parse_uuid("credential_id", credential_id)
        )

    async def list(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        state: CredentialState | None,
        page_size: int,
        page_token: str,
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list credentials")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        size = pagination.page_size(page_size)
        filters = (
            str(org_id),
            str(conn_id),
            credential_type.value if credential_type else "",
            state.value if state else "",
        )
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.for_connection(
            org_id, conn_id, credential_type, state, after, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda c: PageCursor(c.created_at, c.id)
        )
        return CredentialPage(items, token)

    async def versions(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        page_size: int,
        page_token: str,
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list credential versions")
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        size = pagination.page_size(page_size)
        filters = ("versions", str(org_id), str(conn_id), credential_type.value)
        after = pagination.decode_token(page_token, filters)
        rows = await self._repository.versions(
            org_id, conn_id, credential_type, after.id if after else None, size + 1
        )
        items, token = pagination.next_page(
            rows, size, filters, lambda c: PageCursor(c.created_at, c.id)
        )
        return CredentialPage(items, token)

    async def expiring(
        self, organization_id: str, within: timedelta, page_size: int, page_token: str
    ) -> CredentialPage:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, READ, "list expiring credentials")
        if within <= timedelta(0) or within > MAX_EXPIRY_WINDOW:
            raise InvalidArgument("within", "must be a positive duration of at most 3650 days")
        size = pagination.page_size(page_size)
        filters = ("expiring", str(org_id), str(within.total_seconds()))
        after = pagination.decode_token(page_token, filters)
        before = datetime.now(UTC) + within
        rows = await self._repository.expiring(org_id, before, after, size + 1)

        def cursor(credential: Credential) -> PageCursor:
            if credential.expires_at is None:
                raise InvariantBroken("cursor: credential.expires_at is None")
            return PageCursor(credential.expires_at, credential.id)

        items, token = pagination.next_page(rows, size, filters, cursor)
        return CredentialPage(items, token)

    async def reveal(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
    ) -> tuple[Credential, str]:
        """Decrypt one version; the repository commits the attempt's audit event first."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, _reveal_roles(credential_type), _reveal_action(credential_type))
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        if version < 0:
            raise InvalidArgument("version", "must be 0 (current) or a version number")
        return await self._reveals.reveal(org_id, conn_id, credential_type, version, self._open)

    async def reveal_if(
        self,
        organization_id: UUID,
        connection_id: UUID,
        credential_type: CredentialType,
        wanted: Callable[[Credential], bool],
    ) -> tuple[Credential, str] | None:
        """The current version's value if ``wanted`` accepts its credential; None if it
        does not or there is none (then nothing is decrypted or audited). For a use case
        that has authorized REVEAL itself (GetAccessToken's fresh path)."""
        return await self._reveals.reveal_if(
            organization_id, RevealTarget(connection_id, credential_type, 0), self._open, wanted
        )

    async def reveal_many(
        self, organization_id: str, items: Sequence[tuple[str, CredentialType | None, int]]
    ) -> Sequence[tuple[Credential | None, str | VaultError]]:
        """Decrypt up to MAX_BATCH_REVEAL credentials with one read and one audit
        statement; each item's outcome on its own (a value, or its error), each found
        one audited.

        A key with either reveal role may call it; an item whose type needs the role
        the key lacks (a refresh token without refresh_token_revealer) gets
        PERMISSION_DENIED on its own, is not read, not decrypted and not audited (as a
        refused RevealCredential is not), and the other items are revealed: per-item
        outcomes are this call's contract, and a client mixing types should not lose a
        whole batch to one refresh token."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, REVEAL_ANY, "reveal credentials")
        if not 1 <= len(items) <= MAX_BATCH_REVEAL:
            raise InvalidArgument(
                "items", f"must hold 1 to {MAX_BATCH_REVEAL} credentials, not {len(items)}"
            )
        targets: list[RevealTarget] = []
        refused: dict[int, PermissionDenied] = {}
        for index, (connection_id, credential_type, version) in enumerate(items):
            where = f"items[{index}]"
            if credential_type is None:
                raise InvalidArgument(f"{where}.type", "is required")
            if version < 0:
                raise InvalidArgument(f"{where}.version", "must be 0 (current) or a version")
            target = RevealTarget(
                validation.parse_uuid(f"{where}.connection_id", connection_id),
                credential_type,
                version,
            )
            try:
                self._authz.require(
                    org_id, _reveal_roles(credential_type), _reveal_action(credential_type)
                )
            except PermissionDenied as exc:
                refused[index] = exc
                continue
            targets.append(target)
        if not refused:
            return await self._reveals.reveal_many(org_id, targets, self._open)
        revealed = iter(
            await self._reveals.reveal_many(org_id, targets, self._open) if targets else []
        )
        return [
            (None, refused[index]) if index in refused else next(revealed)
            for index in range(len(items))
        ]

    async def revoke(
        self, organization_id: str, credential_id: str, all_versions: bool
    ) -> Sequence[Credential]:
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, "revoke credentials")
        return await self._repository.revoke(
            org_id,
            validation.parse_uuid("credential_id", credential_id),
            all_versions,
        )

    async def change_version(
        self,
        organization_id: str,
        connection_id: str,
        credential_type: CredentialType | None,
        version: int,
        transition: VersionTransition,
    ) -> Credential:
        """Disable, enable, schedule the destruction of (after the destroy delay; the
        VersionDestroyer erases it) or cancel the destruction of one fixed version."""
        org_id = validation.parse_uuid("organization_id", organization_id)
        self._authz.require(org_id, WRITE, TRANSITION_ACTIONS[transition])
        conn_id = validation.parse_uuid("connection_id", connection_id)
        if credential_type is None:
            raise InvalidArgument("type", "is required", example=CredentialType.ACCESS_TOKEN)
        if version < 1:
            raise InvalidArgument(
                "version",
                "must be a version number (1 or more): a state change names one version, "
                "never the current one (0)",
            )
        destroy_at = (
            self._clock() + self._destroy_delay if transition is VersionTransition.DESTROY else None
        )
        change = await self._repository.change_version_state(
            org_id, RevealTarget(conn_id, credential_type, version), transition, destroy_at
        )
        if change.refused is not None:
            raise transition_refused(change, transition)
        return change.credential
