"""Choosing the root-key provider at start: a local key or keyring, transit, or development.

Production must be given a key explicitly. Only the embedded development
database may fall back to a generated keyring file in the data folder, and
that is logged as a warning every start. This module must never log or
echo a key; it logs the keyring file's path only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from singura_vault.keys.errors import KeyConfigError
from singura_vault.keys.file_keyring import FileKeyring
from singura_vault.keys.keyring import LocalKeyring
from singura_vault.keys.material import GENERATE_HINT
from singura_vault.keys.provider import KeyProvider
from singura_vault.keys.transit import TransitKeyProvider
from singura_vault.logs import get_logger

__all__ = ["DEVELOPMENT_KEYRING_NAME", "KeyProviderMode", "Kms", "load_key_provider"]

DEVELOPMENT_KEYRING_NAME = "keyring.json"
Kms = Literal["local", "transit"]
KeyProviderMode = Literal["env", "file", "development", "transit"]


def load_key_provider(
    *,
    encryption_key: str | None,
    keyring_file: Path | None,
    previous_encryption_keys: tuple[str, ...] = (),
    data_dir: Path,
    embedded: bool,
    production: bool,
    kms: Kms = "local",
    transit_address: str | None = None,
    transit_key: str | None = None,
    transit_token_file: Path | None = None,
    transit_mount: str | None = None,
    transit_ca_file: Path | None = None,
) -> tuple[KeyProvider, KeyProviderMode]:
    """Return the root-key provider and how it was chosen (env, file, transit, development).

    With ``kms="transit"`` the root key stays in an OpenBao/Vault transit engine;
    the provider is built without network I/O: await its ``refresh()`` at start
    (KeyManager.connect) to fail fast on a bad token or key.
    """
    if kms == "transit":
        if encryption_key is not None or keyring_file is not None or previous_encryption_keys:
            raise KeyConfigError(
                "SINGURA_KMS=transit keeps the root key in OpenBao/Vault; unset ENCRYPTION_KEY, "
                "ENCRYPTION_KEY_PREVIOUS and SINGURA_KEYRING_FILE (moving data keys wrapped by "
                "a local root key to transit is not supported yet)"
            )
        provider = TransitKeyProvider.from_settings(
            address=transit_address,
            key=transit_key,
            token_file=transit_token_file,
            mount=transit_mount,
            ca_file=transit_ca_file,
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
    if production:
        raise KeyConfigError(
            "SINGURA_ENV=production requires ENCRYPTION_KEY or SINGURA_KEYRING_FILE; "
            "generate a key with `singura-vault keys generate`"
        )
    if not embedded:
        raise KeyConfigError(
            "with an external DATABASE_URL, set ENCRYPTION_KEY or SINGURA_KEYRING_FILE "
            f"(the development keyring is only for the embedded database); {GENERATE_HINT}"
        )
    path = data_dir / DEVELOPMENT_KEYRING_NAME
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
