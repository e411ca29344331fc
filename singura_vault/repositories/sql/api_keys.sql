-- API key queries. Lookups for authentication go through singura.api_key_lookup()
-- (SECURITY DEFINER, migration 011); everything else is admin scope.

-- name: api_key_insert
INSERT INTO api_keys (id, key_id, secret_digest, organization_id, roles, name, created_by,
                      expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, key_id, organization_id, roles, name, created_by, created_at, expires_at,
          revoked_at;

-- name: api_key_list
-- Served by api_keys_list_idx (with or without the organization filter).
SELECT id, key_id, organization_id, roles, name, created_by, created_at, expires_at, revoked_at
  FROM api_keys
 WHERE ($1::uuid IS NULL OR organization_id = $1)
   AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $4;

-- name: api_key_revoke
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
 WHERE key_id = $1
RETURNING id, key_id, organization_id, roles, name, created_by, created_at, expires_at,
          revoked_at;

-- name: api_key_live_admin_exists
-- Served by api_keys_admin_idx.
SELECT EXISTS (
    SELECT 1 FROM api_keys
     WHERE organization_id IS NULL AND revoked_at IS NULL
       AND (expires_at IS NULL OR expires_at > now()));

-- name: api_key_exists
SELECT EXISTS (SELECT 1 FROM api_keys WHERE key_id = $1);

-- name: api_key_bootstrap_lock
-- Several vault processes may start at once; one of them bootstraps.
SELECT pg_advisory_xact_lock(1397114625);

-- name: api_key_lookup
-- Verify a key, reading only (migration 011); the caller caches the answer.
SELECT id, organization_id, roles, status, expires_at
  FROM singura.api_key_lookup($1, $2);

-- name: api_key_lease
-- Take up to $4 rate-limit tokens from the key's shared bucket in one statement.
SELECT granted, retry_after_ms FROM singura.api_key_lease($1, $2, $3, $4);
