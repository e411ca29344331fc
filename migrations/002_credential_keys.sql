-- 002_credential_keys: per-organization data keys and the credential write/read path.
--
-- Envelope encryption: each organization has versioned data keys (DEKs), stored
-- only wrapped by a root key that never reaches the database. Credentials are
-- AES-256-GCM ciphertext under one DEK version (encrypted_credentials.key_version).
-- Destroying an organization's DEKs (crypto-shredding) makes every ciphertext of
-- it undecryptable in this database; backups taken before keep the wrapped keys
-- until the root key that wrapped them is retired (docs/threat-model.md).

CREATE TABLE singura.data_keys (
    organization_id uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    version         integer NOT NULL CONSTRAINT data_keys_version_positive CHECK (version >= 1),
    -- Which root key wrapped it (a keyring id, or the external KMS key's version).
    root_key_id     text NOT NULL,
    -- The DEK wrapped by the root key; NULL once destroyed.
    wrapped_key     bytea,
    state           text NOT NULL DEFAULT 'active'
        CONSTRAINT data_keys_state_known CHECK (state IN ('active', 'destroyed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    destroyed_at    timestamptz,
    PRIMARY KEY (organization_id, version),
    CONSTRAINT data_keys_destroyed_has_no_key
        CHECK ((state = 'destroyed') = (wrapped_key IS NULL))
);

ALTER TABLE singura.data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY data_keys_tenant ON singura.data_keys
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
-- UPDATE only to destroy (and, with key rotation, to rewrap); never DELETE.
GRANT SELECT, INSERT, UPDATE ON singura.data_keys TO singura_app;

-- Revocation destroys the ciphertext; the row keeps its metadata for audit.
ALTER TABLE singura.encrypted_credentials ALTER COLUMN ciphertext DROP NOT NULL;
ALTER TABLE singura.encrypted_credentials ALTER COLUMN nonce DROP NOT NULL;
ALTER TABLE singura.encrypted_credentials
    ADD CONSTRAINT encrypted_credentials_revoked_has_no_ciphertext
    CHECK ((state = 'revoked') = (ciphertext IS NULL) AND (ciphertext IS NULL) = (nonce IS NULL));
-- A non-reversible keyed-hash prefix of the value (never the value).
ALTER TABLE singura.encrypted_credentials ADD COLUMN fingerprint text NOT NULL DEFAULT ''
    CONSTRAINT encrypted_credentials_fingerprint_format CHECK (fingerprint ~ '^[0-9a-f]{0,64}$');
ALTER TABLE singura.encrypted_credentials
    ADD CONSTRAINT encrypted_credentials_data_key_fkey
    FOREIGN KEY (organization_id, key_version)
    REFERENCES singura.data_keys (organization_id, version);
ALTER TABLE singura.encrypted_credentials
    ADD CONSTRAINT encrypted_credentials_request_key UNIQUE (organization_id, create_request_id);

-- At most one current version per (connection, type); also serves RevealCredential
-- of the current version and the supersede step of StoreCredential.
CREATE UNIQUE INDEX encrypted_credentials_current_idx
    ON singura.encrypted_credentials (organization_id, connection_id, credential_type)
    WHERE state = 'active';
-- ListCredentials: one connection's credentials, newest first (keyset).
CREATE INDEX encrypted_credentials_list_idx
    ON singura.encrypted_credentials (organization_id, connection_id, created_at DESC, id DESC);
-- ListExpiringCredentials: an organization's current credentials by expiry.
CREATE INDEX encrypted_credentials_expiry_idx
    ON singura.encrypted_credentials (organization_id, expires_at, id)
    WHERE expires_at IS NOT NULL AND state = 'active';
-- (ListCredentialVersions uses the unique key (organization_id, connection_id,
-- credential_type, version) from migration 001.)
