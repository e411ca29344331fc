-- Credential and data-key queries; all run in a tenant transaction. Metadata
-- queries never select the ciphertext columns.

-- name: data_key_current
SELECT organization_id, version, root_key_id, wrapped_key
  FROM data_keys
 WHERE organization_id = $1 AND state = 'active'
 ORDER BY version DESC
 LIMIT 1;

-- name: data_key_next_version
-- Destroyed versions count too: a version number is never reused.
SELECT coalesce(max(version), 0) + 1 FROM data_keys WHERE organization_id = $1;

-- name: data_key_creation_lock
-- Serializes creating an organization's data key across vault processes, so two
-- concurrent first stores make one key, not two.
SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 20261125));

-- name: data_key_insert
INSERT INTO data_keys (organization_id, version, root_key_id, wrapped_key)
VALUES ($1, $2, $3, $4)
ON CONFLICT (organization_id, version) DO NOTHING;

-- name: credential_lock_connection
-- Serializes stores per connection, so versions are consecutive and exactly
-- one stays current under concurrent StoreCredential calls.
SELECT 1 FROM platform_connections WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE;

-- name: credential_last_version
SELECT coalesce(max(version), 0)
  FROM encrypted_credentials
 WHERE organization_id = $1 AND connection_id = $2 AND credential_type = $3;

-- name: credential_supersede
UPDATE encrypted_credentials
   SET state = 'superseded', state_changed_at = now()
 WHERE organization_id = $1 AND connection_id = $2 AND credential_type = $3
   AND state = 'active';

-- name: credential_insert
INSERT INTO encrypted_credentials (
    organization_id, id, connection_id, credential_type, version, state,
    ciphertext, nonce, key_version, fingerprint, expires_at, create_request_id)
VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11)
RETURNING id, organization_id, connection_id, credential_type, version, state, key_version,
          fingerprint, created_at, expires_at, state_changed_at;

-- name: credential_by_request_id
SELECT id, organization_id, connection_id, credential_type, version, state, key_version,
       fingerprint, created_at, expires_at, state_changed_at, version_state, destroy_at
  FROM encrypted_credentials
 WHERE organization_id = $1 AND create_request_id = $2;

-- name: credential_get
SELECT id, organization_id, connection_id, credential_type, version, state, key_version,
       fingerprint, created_at, expires_at, state_changed_at, version_state, destroy_at
  FROM encrypted_credentials
 WHERE organization_id = $1 AND id = $2;

-- name: credential_revoke
-- One version, or with $3 every version of its (connection, type). Destroys the ciphertext.
UPDATE encrypted_credentials e
   SET state = 'revoked', ciphertext = NULL, nonce = NULL, state_changed_at = now()
  FROM encrypted_credentials target
 WHERE target.organization_id = $1 AND target.id = $2
   AND e.organization_id = $1
   AND (e.id = $2 OR ($3 AND e.connection_id = target.connection_id
                        AND e.credential_type = target.credential_type))
   AND e.state <> 'revoked'
RETURNING e.id, e.organization_id, e.connection_id, e.credential_type, e.version, e.state,
          e.key_version, e.fingerprint, e.created_at, e.expires_at, e.state_changed_at,
          e.version_state, e.destroy_at;

-- The reads of one round trip (migration 013): each runs its function in the scope
-- given as $1-$4 (Database.fetch_scoped), the query's own arguments after.

-- name: credential_version_change_scoped
-- Disable, enable, schedule or cancel the destruction of one version (migration 029).
SELECT * FROM singura.credential_version_change_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- name: credential_destroy_due
-- The destruction job: erase up to $2 versions whose destroy_at is before $1, in any
-- organization (the schema owner's function, migration 029); returns how many.
SELECT singura.credential_destroy_due($1, $2);

-- name: credential_get_scoped
SELECT * FROM singura.credential_get_scoped($1, $2, $3, $4, $5, $6);

-- name: credential_list_scoped
SELECT * FROM singura.credential_list_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);

-- name: credential_versions_scoped
SELECT * FROM singura.credential_versions_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: credential_expiring_scoped
SELECT * FROM singura.credential_expiring_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9);

-- name: credential_for_reveal_scoped
SELECT * FROM singura.credential_for_reveal_scoped($1, $2, $3, $4, $5, $6, $7, $8);

-- StoreCredential in two statements (migration 014): plan, then write.

-- name: credential_store_plan_scoped
SELECT * FROM singura.credential_store_plan_scoped($1, $2, $3, $4, $5, $6, $7, $8);

-- name: credential_store_scoped
SELECT * FROM singura.credential_store_scoped(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15);

-- Coalesced statements (migration 022): the same work for several concurrent calls,
-- each item under its own request's scope.

-- name: credential_for_reveal_batch
SELECT * FROM singura.credential_for_reveal_batch($1, $2, $3, $4, $5, $6, $7, $8);

-- name: credential_get_batch
SELECT * FROM singura.credential_get_batch($1, $2, $3, $4, $5, $6);

-- name: credential_store_plan_batch
SELECT * FROM singura.credential_store_plan_batch($1, $2, $3, $4, $5, $6, $7, $8);

-- name: credential_store_batch
SELECT * FROM singura.credential_store_batch(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15);
