"""Key administration use cases for the command line (root key generation).

Besides ``service/credentials.py`` this is the only importer of the sealed
``keys`` package. A generated key is returned to the caller (the CLI prints it
to stdout, its whole purpose, like ``openssl rand``); it is never logged.
"""

from __future__ import annotations

from pathlib import Path

from singura_vault import keys
from singura_vault.errors import ConfigError


def generate_root_key() -> str:
    """A new root key: 32 random bytes, base64, for ENCRYPTION_KEY."""
    return keys.generate_encryption_key()


def create_keyring_file(path: Path) -> tuple[str, ...]:
    """Write a new keyring file (mode 0600) with one fresh key; returns its key ids."""
    try:
        return keys.LocalKeyring.generate_file(path).key_ids()
    except keys.KeyConfigError as exc:
        raise ConfigError(str(exc)) from None
