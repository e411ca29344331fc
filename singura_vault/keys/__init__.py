"""Key management: the one package that holds key material and touches ``cryptography``.

Envelope encryption, shaped like a cloud KMS: a versioned root key
(key-encryption key, from a :class:`KeyProvider`) wraps per-organization data
keys (32 random bytes each, versioned per organization), and credentials are
sealed with AES-256-GCM under a data key, bound by associated data to the row
they belong to.

    errors.py        KeyConfigError, IntegrityError
    holder.py        KeyHolder: no pickling, copying, mutation or key bytes in repr
    aead.py          Aes256Gcm: the only user of AESGCM; random nonces; IntegrityError
    material.py      decoding/validating ENCRYPTION_KEY, generating keys, key ids
    records.py       WrappedDataKey, Sealed: storable ciphertext records
    binding.py       CredentialBinding and the data-key associated data
    datakey.py       DataKey: one unwrapped data key, opaque
    provider.py      KeyProvider: the root-key port (async, for a remote KMS later)
    keyring_format.py  the keyring file's format: read and validate, create (0600)
    file_keyring.py  FileKeyring: a keyring file that rotates and retires keys in place
    keyring.py       LocalKeyring: root keys in process memory
    manager.py       KeyManager: create/unwrap/cache data keys, seal, open, fingerprint
    transit.py       TransitKeyProvider: the root key in OpenBao/Vault transit, over HTTP
    transit_settings.py  SINGURA_TRANSIT_* settings and the token file, validated
    transit_http.py  one transit HTTP call and what its answer means as an error
    signing.py       AuditSigner: the Ed25519 key that signs audit checkpoints;
                     parse_public_key: the verifier's public key, parsed first
    loading.py       load_key_provider: which provider, from the configuration
    organization.py  customer-managed keys: an organization's own transit key, its
                     stored record and root key ids (org-transit:<provider id>:v<N>)

Nothing outside this package may import ``cryptography``, and nothing here may
import asyncpg, grpc or other vault modules (except ``errors``, ``logs`` and
``private_files``, which reads and writes every owner-only file).
No key bytes or plaintext may ever appear in a repr, an exception message or
a log line.
"""

from singura_vault.keys.binding import CredentialBinding
from singura_vault.keys.datakey import DataKey
from singura_vault.keys.errors import IntegrityError, KeyConfigError, OrganizationKeyUnavailable
from singura_vault.keys.file_keyring import FileKeyring
from singura_vault.keys.keyring import LocalKeyring
from singura_vault.keys.loading import KeyProviderMode, load_key_provider
from singura_vault.keys.manager import DEFAULT_ORGANIZATION_KEY_TTL_S, KeyManager
from singura_vault.keys.material import generate_encryption_key
from singura_vault.keys.organization import (
    OrganizationKeyRecord,
    organization_key_prefix,
    provider_id_of,
)
from singura_vault.keys.provider import DescribedKeyProvider, KeyProvider
from singura_vault.keys.records import Sealed, WrappedDataKey
from singura_vault.keys.signing import (
    AuditPublicKey,
    AuditSigner,
    load_audit_signer,
    parse_public_key,
    public_key_id,
    verify_signature,
)
from singura_vault.keys.transit import KeyServiceUnavailable, TransitKeyProvider

__all__ = [
    "DEFAULT_ORGANIZATION_KEY_TTL_S",
    "AuditPublicKey",
    "AuditSigner",
    "CredentialBinding",
    "DataKey",
    "DescribedKeyProvider",
    "FileKeyring",
    "IntegrityError",
    "KeyConfigError",
    "KeyManager",
    "KeyProvider",
    "KeyProviderMode",
    "KeyServiceUnavailable",
    "LocalKeyring",
    "OrganizationKeyRecord",
    "OrganizationKeyUnavailable",
    "Sealed",
    "TransitKeyProvider",
    "WrappedDataKey",
    "generate_encryption_key",
    "load_audit_signer",
    "load_key_provider",
    "organization_key_prefix",
    "parse_public_key",
    "provider_id_of",
    "public_key_id",
    "verify_signature",
]
