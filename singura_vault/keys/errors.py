"""The two errors the key-management package raises on purpose.

    ConfigError (singura_vault.errors)      the vault cannot start as configured
    └── KeyConfigError                      ENCRYPTION_KEY or a keyring file is unusable
        └── OrganizationKeyUnavailable      an organization's own transit key refused us
    VaultError (singura_vault.errors)
    └── DataLoss                            DATA_LOSS to a client
        └── IntegrityError                  a ciphertext failed authentication

Both derive from the vault's own tree, so the CLI's start-up handler and the
gRPC interceptor treat them like every other configuration or data-loss error
without knowing about keys. Their messages must never contain key text, key
bytes, plaintext or ciphertext: a KeyConfigError says which setting is wrong and
how to make a good one; an IntegrityError says only that authentication failed.
"""

from __future__ import annotations

from singura_vault.errors import ConfigError, DataLoss

__all__ = ["IntegrityError", "KeyConfigError", "OrganizationKeyUnavailable"]


class KeyConfigError(ConfigError):
    """A root key or keyring is missing or malformed; the message says how to fix it."""


class OrganizationKeyUnavailable(KeyConfigError):  # noqa: N818 - names the state, as KeyServiceUnavailable
    """An organization's own root key (customer-managed, in its transit KMS) refused to
    wrap or unwrap: disabled, deleted, its minimum decryption version raised, or the
    token revoked -- the tenant's kill switch. Names the provider, never its token."""

    def __init__(self, address: str, key_name: str, detail: str) -> None:
        super().__init__(f"the organization's key {key_name} at {address} is unavailable: {detail}")
        self.address = address
        self.key_name = key_name


class IntegrityError(DataLoss):
    """AES-GCM authentication failed: the ciphertext was modified, moved, or the key is wrong."""

    # One fixed message: which of those happened is not knowable, and any
    # detail (lengths, bytes) would only help someone probing the vault.
    MESSAGE = (
        "stored ciphertext failed its integrity check: it was modified, "
        "moved to another record, or sealed under a different key"
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)
