-- 014_two_round_trip_store: StoreCredential in two statements, with no lock held
-- across a round trip.
--
-- A store used to lock its connection row and keep it locked across seven round trips
-- (BEGIN, lock, current data key, last version, supersede, insert, COMMIT), so stores of
-- one connection queued behind each other's WAL flush. The version is part of the
-- ciphertext's associated data, so it must be known before the vault seals; now:
--
--   1. credential_store_plan_scoped reads what sealing needs -- the connection exists,
--      the last version, the newest live data key, and a replay of the same request id;
--   2. the vault seals version last + 1 under that key;
--   3. credential_store_scoped supersedes the current version and inserts the new one,
--      in one statement (its own transaction).
--
-- Two stores that planned the same version cannot both land: the second one's insert
-- hits encrypted_credentials_version_key (after waiting for the first to commit) and
-- its whole statement, supersede included, rolls back; the vault plans again. Exactly
-- one version stays current and versions stay consecutive, as the connection lock
-- guaranteed. A data key retired meanwhile is refused as before (migration 008). The
-- connection row is still locked, but only inside the writing statement, never across
-- a round trip.

CREATE FUNCTION singura.credential_store_plan_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_connection uuid, p_type text, p_create_request_id uuid)
RETURNS TABLE (connection_found boolean, last_version integer, existing_id uuid,
               key_version integer, root_key_id text, wrapped_key bytea)
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT EXISTS (SELECT 1 FROM singura.platform_connections c
                WHERE c.organization_id = p_org AND c.id = p_connection),
       (SELECT coalesce(max(e.version), 0) FROM singura.encrypted_credentials e
         WHERE e.organization_id = p_org AND e.connection_id = p_connection
           AND e.credential_type = p_type),
       (SELECT e.id FROM singura.encrypted_credentials e
         WHERE e.organization_id = p_org AND e.create_request_id = p_create_request_id),
       k.version, k.root_key_id, k.wrapped_key
  FROM (SELECT 1) AS one
  LEFT JOIN LATERAL (
        SELECT d.version, d.root_key_id, d.wrapped_key FROM singura.data_keys d
         WHERE d.organization_id = p_org AND d.state = 'active'
         ORDER BY d.version DESC
         LIMIT 1) k ON true;
$$;

CREATE FUNCTION singura.credential_store_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid, p_id uuid,
    p_connection uuid, p_type text, p_version integer, p_ciphertext bytea, p_nonce bytea,
    p_key_version integer, p_fingerprint text, p_expires_at timestamptz,
    p_create_request_id uuid)
RETURNS SETOF singura.credential_metadata
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
-- Held for this statement only: it orders this write after a store that plans under
-- the lock (the vault's last attempt under contention, which must not lose its version).
SELECT 1 FROM singura.platform_connections
 WHERE organization_id = p_org AND id = p_connection
   FOR NO KEY UPDATE;
UPDATE singura.encrypted_credentials
   SET state = 'superseded', state_changed_at = now()
 WHERE organization_id = p_org AND connection_id = p_connection AND credential_type = p_type
   AND state = 'active';
INSERT INTO singura.encrypted_credentials (
    organization_id, id, connection_id, credential_type, version, state,
    ciphertext, nonce, key_version, fingerprint, expires_at, create_request_id)
VALUES (p_org, p_id, p_connection, p_type, p_version, 'active', p_ciphertext, p_nonce,
        p_key_version, p_fingerprint, p_expires_at, p_create_request_id)
RETURNING id, organization_id, connection_id, credential_type, version, state, key_version,
          fingerprint, created_at, expires_at, state_changed_at;
$$;
