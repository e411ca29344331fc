-- Key administration: root-key rotation (admin scope over wrapped data keys),
-- data-key status, and rewrap jobs.

-- name: data_keys_all_live_for_update
-- Admin scope sees wrapped data keys of every organization (migration 005). NO KEY
-- UPDATE serializes root rotations without waiting for the KEY SHARE lock that every
-- credential write holds on its data key (migration 008).
SELECT organization_id, version, root_key_id, wrapped_key
  FROM data_keys
 WHERE state = 'active'
 ORDER BY organization_id, version
   FOR NO KEY UPDATE;

-- name: data_key_rewrapped
UPDATE data_keys SET root_key_id = $3, wrapped_key = $4
 WHERE organization_id = $1 AND version = $2 AND state = 'active';

-- name: data_keys_status
SELECT organization_id, version, root_key_id, state, created_at
  FROM data_keys
 WHERE ($1::uuid IS NULL OR organization_id = $1)
 ORDER BY organization_id, version;

-- name: data_keys_orgs_with_old_versions
-- Organizations whose credentials may sit on a data key older than the newest.
SELECT organization_id, max(version) AS newest
  FROM data_keys
 WHERE state = 'active'
 GROUP BY organization_id
HAVING count(*) > 1
 ORDER BY organization_id;

-- name: data_key_lock_for_retire
-- FOR UPDATE waits for every writer still sealing under this version (they hold KEY
-- SHARE on it, migration 008) and makes later ones wait; the count that follows, in
-- a new statement, sees what they committed.
SELECT 1 FROM data_keys
 WHERE organization_id = $1 AND version = $2 AND state = 'active'
   FOR UPDATE;

-- name: data_key_retire
UPDATE data_keys SET state = 'destroyed', wrapped_key = NULL, destroyed_at = now()
 WHERE organization_id = $1 AND version = $2 AND state = 'active';

-- name: credentials_per_key_version
-- OAuth client secrets (migration 016) and webhook signing secrets (migration 026, the
-- previous one too while its overlap lasts) are sealed under data keys too: a version
-- that still seals one is in use, until the rewrap reseals it under the newest.
SELECT key_version, count(*) AS n
  FROM (SELECT key_version FROM encrypted_credentials
         WHERE organization_id = $1 AND state <> 'revoked' AND ciphertext IS NOT NULL
        UNION ALL
        SELECT key_version FROM oauth_clients WHERE organization_id = $1
        UNION ALL
        SELECT key_version FROM webhook_endpoints WHERE organization_id = $1
        UNION ALL
        SELECT previous_key_version FROM webhook_endpoints
         WHERE organization_id = $1 AND previous_expires_at > now()) sealed
 GROUP BY key_version;

-- name: credentials_stale_count
-- Credentials still to do; those that already failed in job $3 are not counted.
SELECT count(*) FROM encrypted_credentials e
 WHERE e.organization_id = $1 AND e.state <> 'revoked' AND e.key_version < $2
   AND e.ciphertext IS NOT NULL  -- a destroyed version (migration 029) has none
   AND NOT EXISTS (SELECT 1 FROM rewrap_failures f
                    WHERE f.job_id = $3 AND f.organization_id = $1 AND f.credential_id = e.id);

-- name: credentials_claim_stale
-- A batch no other worker holds (SKIP LOCKED): never done twice, never waited on.
-- `counted`: the credential was stale when job $4 started (older than the newest
-- version then), so it is part of the job's total; one rewrapped again after a
-- rotation during the job, or stored after the job started, is not counted twice.
SELECT e.id, e.connection_id, e.credential_type, e.version, e.key_version, e.ciphertext,
       e.nonce,
       e.key_version < (SELECT coalesce(max(d.version), 0)
                          FROM data_keys d, rewrap_jobs j
                         WHERE j.id = $4 AND d.organization_id = $1
                           AND d.created_at <= j.created_at) AS counted
  FROM encrypted_credentials e
 WHERE e.organization_id = $1 AND e.state <> 'revoked' AND e.key_version < $2
   AND e.ciphertext IS NOT NULL  -- a destroyed version (migration 029) has none
   AND NOT EXISTS (SELECT 1 FROM rewrap_failures f
                    WHERE f.job_id = $4 AND f.organization_id = $1 AND f.credential_id = e.id)
 ORDER BY e.id
 LIMIT $3
   FOR UPDATE OF e SKIP LOCKED;

-- name: rewrap_failure_record
INSERT INTO rewrap_failures (job_id, organization_id, credential_id, reason)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING;

-- name: credential_reencrypted
UPDATE encrypted_credentials
   SET ciphertext = $3, nonce = $4, key_version = $5, fingerprint = $6
 WHERE organization_id = $1 AND id = $2;

-- name: data_keys_of_org
-- Every live version: what a rewrap seals under, and what a repair tries.
SELECT organization_id, version, root_key_id, wrapped_key
  FROM data_keys
 WHERE organization_id = $1 AND state = 'active';

-- name: rewrap_job_start
INSERT INTO rewrap_jobs (id, started_by, total) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
RETURNING *;

-- name: rewrap_job_running
SELECT * FROM rewrap_jobs WHERE state = 'running';

-- name: rewrap_job_get
SELECT * FROM rewrap_jobs WHERE id = $1;

-- name: rewrap_job_latest
SELECT * FROM rewrap_jobs ORDER BY created_at DESC LIMIT 1;

-- name: rewrap_job_progress
-- In the batch's own transaction: the count commits with the work, or neither. The
-- total is the count taken at the start; a credential that became stale in the race
-- with that count raises it, so done + failed never exceeds total.
UPDATE rewrap_jobs
   SET done = done + $2, failed = failed + $3, updated_at = now(),
       total = greatest(total, done + $2 + failed + $3)
 WHERE id = $1 AND state = 'running'
RETURNING done, total;

-- name: rewrap_job_finish
UPDATE rewrap_jobs SET state = $2, finished_at = now(), updated_at = now()
 WHERE id = $1 AND state = 'running'
RETURNING *;

-- name: credentials_sealed_page
-- RepairCredentialKeys: the next page of sealed credentials by id, locked so that a
-- rewrap batch (which claims in the same order) and a repair never interleave on a row.
SELECT e.id, e.connection_id, e.credential_type, e.version, e.key_version, e.ciphertext,
       e.nonce
  FROM encrypted_credentials e
 WHERE e.organization_id = $1 AND e.ciphertext IS NOT NULL
   AND ($2::uuid IS NULL OR e.id > $2)
 ORDER BY e.id
 LIMIT $3
   FOR UPDATE OF e;

-- name: organization_exists
-- RepairCredentialKeys: an unknown organization is NOT_FOUND, not "0 checked".
SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1);

-- name: credential_key_version_repaired
-- The ciphertext stays as it is: only the record of which key sealed it is corrected
-- (audited as credential.key_version_repaired, migration 008).
UPDATE encrypted_credentials SET key_version = $3
 WHERE organization_id = $1 AND id = $2;

-- name: oauth_clients_claim_stale
-- OAuth client secrets (migration 016) sealed under an older data key than the newest;
-- SKIP LOCKED: one worker re-seals each.
SELECT organization_id, platform, id, key_version, secret_nonce, secret_ciphertext,
       signing_secret_nonce, signing_secret_ciphertext
  FROM oauth_clients
 WHERE organization_id = $1 AND key_version < $2
   FOR UPDATE SKIP LOCKED;

-- name: oauth_client_resealed
UPDATE oauth_clients
   SET secret_ciphertext = $4, secret_nonce = $5, key_version = $6,
       signing_secret_ciphertext = $7, signing_secret_nonce = $8
 WHERE organization_id = $1 AND platform = $2 AND id = $3;

-- name: webhook_endpoints_claim_stale
-- Webhook signing secrets (migration 026) sealed under an older data key than the
-- newest: the current one, or the previous one while it still signs beside it.
-- SKIP LOCKED: one worker re-seals each.
SELECT id, secret_id, secret_nonce, secret_ciphertext, key_version,
       previous_secret_id, previous_secret_nonce, previous_secret_ciphertext,
       previous_key_version
  FROM webhook_endpoints
 WHERE organization_id = $1
   AND (key_version < $2 OR (previous_expires_at > now() AND previous_key_version < $2))
   FOR UPDATE SKIP LOCKED;

-- name: webhook_endpoint_resealed
-- $4..$6: the current secret's new sealing; $7..$9 the previous one's (NULL: unchanged).
UPDATE webhook_endpoints
   SET secret_ciphertext = $4, secret_nonce = $5, key_version = $6,
       previous_secret_ciphertext = coalesce($7, previous_secret_ciphertext),
       previous_secret_nonce = coalesce($8, previous_secret_nonce),
       previous_key_version = coalesce($9, previous_key_version)
 WHERE organization_id = $1 AND id = $2 AND secret_id = $3;

-- name: organization_token_keys_for_update
-- The keys that seal customer-managed key providers' tokens (migration 031), wrapped by
-- a global root key: a root-key rotation rewraps them with the data keys.
SELECT organization_id, id, token_root_key_id, token_wrapped_key
  FROM organization_key_providers
   FOR UPDATE;

-- name: organization_token_key_rewrapped
UPDATE organization_key_providers
   SET token_root_key_id = $3, token_wrapped_key = $4
 WHERE organization_id = $1 AND id = $2;

-- name: organization_token_keys_wrapped_by
-- Provider tokens a global root key still seals (cleared providers' too: a migration
-- back from one may still need it).
SELECT count(*) FROM organization_key_providers WHERE token_root_key_id = $1;
