"""Choosing the root-key provider at start: a local key or keyring, transit, or development.

Production must be given a key explicitly. Only the embedded development
database may fall back to a generated keyring file in the data folder, and
that is logged as a warning every start. This module must never log or
echo a key; it logs the keyring file's path only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.file_keyring import FileKeyring
from singura_vault.keys.keyring import LocalKeyring
from singura_vault.keys.material import GENERATE_HINT
from singura_vault.keys.provider import KeyProvider
from singura_vault.keys.transit import TransitKeyProvider
from singura_vault.local import DEVELOPMENT_KEYRING_FILE
from singura_vault.logs import get_logger

__all__ = ["KeyProviderMode", "Kms", "RootKeySettings", "load_key_provider"]

Kms = Literal["local", "transit"]
KeyProviderMode = Literal["env", "file", "development", "transit"]


class RootKeySettings(Protocol):
    """What chooses the root-key provider: ``config.Settings`` has every one of these
    (ENCRYPTION_KEY, ENCRYPTION_KEY_PREVIOUS, SINGURA_KEYRING_FILE, SINGURA_DATA_DIR,
    the embedded and production modes, SINGURA_KMS and SINGURA_TRANSIT_*), so the
    settings are passed as they are; the key package never imports the settings layer."""

    @property
    def encryption_key(self) -> str | None: ...
    @property
    def keyring_file(self) -> Path | None: ...
    @property
    def previous_encryption_keys(self) -> tuple[str, ...]: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def embedded(self) -> bool: ...
    @property
    def production(self) -> bool: ...
    @property
    def kms(self) -> Kms: ...
    @property
    def transit_address(self) -> str | None: ...
    @property
    def transit_key(self) -> str | None: ...
    @property
    def transit_token_file(self) -> Path | None: ...
    @property
    def transit_mount(self) -> str | None: ...
    @property
    def transit_ca_file(self) -> Path | None: ...


def load_key_provider(settings: RootKeySettings) -> tuple[KeyProvider, KeyProviderMode]:
    """Return the root-key provider and how it was chosen (env, file, transit, development).

    With ``kms="transit"`` the root key stays in an OpenBao/Vault transit engine;
    the provider is built without network I/O: await its ``refresh()`` at start
    (KeyManager.connect) to fail fast on a bad token or key.
    """
    encryption_key = settings.encryption_key
    keyring_file = settings.keyring_file
    previous_encryption_keys = settings.previous_encryption_keys
    kms = settings.kms
    if kms == "transit":
        if encryption_key is not None or keyring_file is not None or previous_encryption_keys:
            raise KeyConfigError(
                "SINGURA_KMS=transit keeps the root key in OpenBao/Vault; unset ENCRYPTION_KEY, "
                "ENCRYPTION_KEY_PREVIOUS and SINGURA_KEYRING_FILE (moving data keys wrapped by "
                "a local root key to transit is not supported yet)"
            )
        provider = TransitKeyProvider.from_settings(
            address=settings.transit_address,
            key=settings.transit_key,
            token_file=settings.transit_token_file,
            mount=settings.transit_mount,
            ca_file=settings.transit_ca_file,
        )
        return provider, "transit"
    if kms != "local":
        raise KeyConfigError(f"SINGURA_KMS must be local or transit, not {kms!r}")
    if encryption_key is not None and keyring_file is not None:
        raise KeyConfigError(
            "ENCRYPTION_KEY and SINGURA_KEYRING_FILE are both set, so the root key is ambiguous; "
            "set only one of them"
        )
    if encryption_key is not None:
        return LocalKeyring.from_encryption_key(encryption_key, previous_encryption_keys), "env"
    if previous_encryption_keys:
        raise KeyConfigError("ENCRYPTION_KEY_PREVIOUS is set without ENCRYPTION_KEY")
    if keyring_file is not None:
        return FileKeyring(keyring_file), "file"
    if settings.production:
        raise KeyConfigError(
            "SINGURA_ENV=production requires ENCRYPTION_KEY or SINGURA_KEYRING_FILE; "
            "generate a key with `singura-vault keys generate`"
        )
    if not settings.embedded:
        raise KeyConfigError(
            "with an external DATABASE_URL, set ENCRYPTION_KEY or SINGURA_KEYRING_FILE "
            f"(the development keyring is only for the embedded database); {GENERATE_HINT}"
        )
    path = settings.data_dir / DEVELOPMENT_KEYRING_FILE
    if not path.exists():
        LocalKeyring.generate_file(path)
    keyring = FileKeyring(path)
    # Looked up per call, not at import: a logger cached before logging is
    # configured (or before a test captures logs) would miss this warning.
    get_logger(__name__).warning(
        "development_keyring_in_use",
        keyring_path=str(path),
        detail=(
            "credentials are encrypted under a key stored in this file: they are only as safe "
            "as the file, and it must be backed up separately from the database; "
            "set ENCRYPTION_KEY or SINGURA_KEYRING_FILE for real use"
        ),
    )
    return keyring, "development"
