-- 018_audit_signing_keys: the audit signing key changes only when an operator says so.
--
-- Until now a vault that started without the key that signed its checkpoints (a
-- restore that left the key file behind, in development) generated a new key and
-- signed on with it: its checkpoints silently stopped chaining to the key the auditors
-- had pinned. This table records which key signs the checkpoints, in order:
--
--  * the first key, with no previous_key_id, by the first signing round of a database
--    that has none recorded (in a database signed before this migration, the key of
--    its newest checkpoint, which the vault must hold to sign at all);
--  * every later key by `singura-vault audit rotate-signing-key`, in the same
--    transaction as its `audit.signing_key_rotated` event, naming the key it replaces.
--
-- The newest row is the key a vault must sign with (with no row, the key of the newest
-- checkpoint; with no checkpoint either, any key); a vault holding another one
-- refuses to start (exit 2) and to sign. The first checkpoint of each chain signed
-- with the new key names the previous key's id in its signed message (docs/audit.md).
-- Public keys only: the private keys never enter the database.
CREATE TABLE singura.audit_signing_keys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_id          text NOT NULL CONSTRAINT audit_signing_keys_key_id_unique UNIQUE,
    -- The key whose checkpoints this one continues; NULL for the first key recorded.
    previous_key_id text,
    public_key_pem  text NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_signing_keys_not_itself CHECK (previous_key_id IS DISTINCT FROM key_id)
);
-- Append-only for the service, like the checkpoints: no UPDATE or DELETE is granted.
GRANT SELECT, INSERT ON singura.audit_signing_keys TO singura_app;
