-- Customer-managed keys (migration 031): organization key providers and the
-- migrations of data keys between the global root key and an organization's own.
-- Every statement runs in the organization's tenant scope, except the worker's list
-- of running migrations (admin scope reads them across organizations).

-- name: organization_key_provider_in_force
SELECT * FROM organization_key_providers
 WHERE organization_id = $1 AND cleared_at IS NULL;

-- name: organization_key_provider_by_id
SELECT * FROM organization_key_providers WHERE organization_id = $1 AND id = $2;

-- name: organization_key_provider_clear
UPDATE organization_key_providers SET cleared_at = now(), cleared_by = $2
 WHERE organization_id = $1 AND cleared_at IS NULL
RETURNING id;

-- name: organization_key_provider_insert
INSERT INTO organization_key_providers
       (id, organization_id, address, mount, key_name, token_root_key_id, token_wrapped_key,
        token_nonce, token_ciphertext, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *;

-- name: organization_key_migration_supersede
UPDATE organization_key_migrations
   SET state = 'superseded', finished_at = now(), updated_at = now()
 WHERE organization_id = $1 AND state = 'running';

-- name: organization_key_migration_insert
-- $4: the target's root key id prefix (NULL: the global root key). total counts the
-- live data keys not yet wrapped by the target.
INSERT INTO organization_key_migrations (id, organization_id, target_provider_id, total,
                                         started_by)
SELECT $1, $2, $3, count(*), $5
  FROM data_keys d
 WHERE d.organization_id = $2 AND d.state = 'active'
   AND CASE WHEN $4::text IS NULL THEN starts_with(d.root_key_id, 'org-transit:')
            ELSE NOT starts_with(d.root_key_id, $4::text || ':') END
RETURNING *;

-- name: organization_key_migration_latest
SELECT * FROM organization_key_migrations
 WHERE organization_id = $1
 ORDER BY created_at DESC, id
 LIMIT 1;

-- name: organization_key_migrations_running
-- Admin scope: every organization's running migration, for the worker.
SELECT * FROM organization_key_migrations WHERE state = 'running' ORDER BY created_at;

-- name: organization_key_migration_state
SELECT state FROM organization_key_migrations WHERE organization_id = $1 AND id = $2;

-- name: organization_key_data_key_to_migrate
-- One live data key not yet wrapped by the target ($2: its prefix, NULL: global);
-- SKIP LOCKED, so that several processes move different keys at once. NO KEY UPDATE
-- does not wait for the KEY SHARE lock every credential write holds (migration 008).
SELECT organization_id, version, root_key_id, wrapped_key
  FROM data_keys
 WHERE organization_id = $1 AND state = 'active'
   AND CASE WHEN $2::text IS NULL THEN starts_with(root_key_id, 'org-transit:')
            ELSE NOT starts_with(root_key_id, $2::text || ':') END
 ORDER BY version
 LIMIT 1
   FOR NO KEY UPDATE SKIP LOCKED;

-- name: organization_key_data_keys_left
-- A plain count sees the rows other processes hold locked: not done yet.
SELECT count(*)
  FROM data_keys
 WHERE organization_id = $1 AND state = 'active'
   AND CASE WHEN $2::text IS NULL THEN starts_with(root_key_id, 'org-transit:')
            ELSE NOT starts_with(root_key_id, $2::text || ':') END;

-- name: organization_key_data_key_migrated
UPDATE data_keys SET root_key_id = $4, wrapped_key = $5
 WHERE organization_id = $1 AND version = $2 AND root_key_id = $3 AND state = 'active';

-- name: organization_key_migration_progress
UPDATE organization_key_migrations SET done = done + 1, updated_at = now()
 WHERE organization_id = $1 AND id = $2 AND state = 'running';

-- name: organization_key_migration_complete
UPDATE organization_key_migrations
   SET state = 'completed', finished_at = now(), updated_at = now(),
       total = greatest(total, done)
 WHERE organization_id = $1 AND id = $2 AND state = 'running'
RETURNING *;
