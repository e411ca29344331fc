-- OAuth clients and the refresh transaction (migration 016); all run inside a tenant
-- transaction, so row-level security already limits them to one organization.

-- name: oauth_client_upsert
-- A new id each time: the sealed secret is bound to it.
INSERT INTO oauth_clients (
    organization_id, platform, id, client_id, secret_ciphertext, secret_nonce, key_version,
    token_url, revocation_url, scopes, auth_method, redirect_uris, authorization_url,
    signing_secret_ciphertext, signing_secret_nonce)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (organization_id, platform) DO UPDATE
   SET id = EXCLUDED.id, client_id = EXCLUDED.client_id,
       secret_ciphertext = EXCLUDED.secret_ciphertext, secret_nonce = EXCLUDED.secret_nonce,
       key_version = EXCLUDED.key_version, token_url = EXCLUDED.token_url,
       revocation_url = EXCLUDED.revocation_url, scopes = EXCLUDED.scopes,
       auth_method = EXCLUDED.auth_method, redirect_uris = EXCLUDED.redirect_uris,
       authorization_url = EXCLUDED.authorization_url,
       signing_secret_ciphertext = EXCLUDED.signing_secret_ciphertext,
       signing_secret_nonce = EXCLUDED.signing_secret_nonce
RETURNING *, NULL::text AS root_key_id, NULL::bytea AS wrapped_key;

-- name: oauth_client_get
SELECT o.*, d.root_key_id, d.wrapped_key
  FROM oauth_clients o
  LEFT JOIN data_keys d
         ON d.organization_id = o.organization_id AND d.version = o.key_version
        AND d.state = 'active'
 WHERE o.organization_id = $1 AND o.platform = $2;

-- name: oauth_client_delete
DELETE FROM oauth_clients WHERE organization_id = $1 AND platform = $2;

-- name: refresh_lock_timeout
-- How long a refresh waits for another one of the same connection, this transaction only.
SELECT set_config('lock_timeout', $1, true);

-- name: refresh_state_get
SELECT * FROM connection_refresh_state WHERE organization_id = $1 AND connection_id = $2;

-- name: refresh_current_tokens
-- The current access and refresh token, with what opens them: of each type the newest
-- version that is enabled and not scheduled for destruction (disabled ones are skipped,
-- as a reveal of version 0 skips them, migration 029), unless that one is revoked.
SELECT e.id, e.organization_id, e.connection_id, e.credential_type, e.version, e.state,
       e.key_version, e.fingerprint, e.created_at, e.expires_at, e.state_changed_at,
       e.version_state, e.destroy_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key
  FROM unnest(ARRAY['access_token', 'refresh_token']) AS t(credential_type)
 CROSS JOIN LATERAL (
        SELECT * FROM encrypted_credentials c
         WHERE c.organization_id = $1 AND c.connection_id = $2
           AND c.credential_type = t.credential_type
           AND c.version_state = 'enabled' AND c.destroy_at IS NULL
         ORDER BY c.version DESC
         LIMIT 1) e
  LEFT JOIN data_keys d
         ON d.organization_id = e.organization_id AND d.version = e.key_version
        AND d.state = 'active'
 WHERE e.state <> 'revoked';

-- name: refresh_token_version
-- The current refresh token's version (refresh_current_tokens' definition).
SELECT max(version) FROM (
    SELECT c.version, c.state FROM encrypted_credentials c
     WHERE c.organization_id = $1 AND c.connection_id = $2
       AND c.credential_type = 'refresh_token'
       AND c.version_state = 'enabled' AND c.destroy_at IS NULL
     ORDER BY c.version DESC
     LIMIT 1) current
 WHERE current.state <> 'revoked';

-- name: refresh_data_key_current
-- KEY SHARE: a retirement of this version waits until the new tokens are committed
-- (migration 008), so a refresh the provider has answered is not refused at insert.
SELECT organization_id, version, root_key_id, wrapped_key
  FROM data_keys
 WHERE organization_id = $1 AND state = 'active'
 ORDER BY version DESC
 LIMIT 1
   FOR KEY SHARE;

-- name: refresh_intent_record
-- Committed on its own before the token endpoint is called.
INSERT INTO connection_refresh_state (
    organization_id, connection_id, intent_started_at, intent_refresh_version)
VALUES ($1, $2, now(), $3)
ON CONFLICT (organization_id, connection_id) DO UPDATE
   SET intent_started_at = EXCLUDED.intent_started_at,
       intent_refresh_version = EXCLUDED.intent_refresh_version;

-- name: refresh_succeeded
-- $4: where the new access token's expiry came from (migration 020).
INSERT INTO connection_refresh_state (
    organization_id, connection_id, last_refresh_at, failure_count, last_error,
    next_refresh_at, expiry_source)
VALUES ($1, $2, now(), 0, '', $3, $4)
ON CONFLICT (organization_id, connection_id) DO UPDATE
   SET last_refresh_at = now(), failure_count = 0, last_error = '',
       next_refresh_at = EXCLUDED.next_refresh_at, intent_started_at = NULL,
       intent_refresh_version = NULL, expiry_source = EXCLUDED.expiry_source;

-- name: refresh_scopes_update
-- A refresh answer reported other granted scopes (the connection's row is locked by
-- the refresh); the audit trigger records connection.updated, the refresh appends
-- connection.scopes_changed with the lists.
UPDATE platform_connections
   SET permissions_granted = $3
 WHERE organization_id = $1 AND id = $2;

-- name: refresh_failed
-- $5: keep the intent (the provider may have acted on a request whose answer was lost).
-- $6: the provider's sanitized error code (migration 028; in connection.refresh_failed).
INSERT INTO connection_refresh_state (
    organization_id, connection_id, failure_count, last_error, next_refresh_at,
    last_error_code)
VALUES ($1, $2, 1, $3, $4, $6)
ON CONFLICT (organization_id, connection_id) DO UPDATE
   SET failure_count = connection_refresh_state.failure_count + 1,
       last_error = EXCLUDED.last_error,
       last_error_code = EXCLUDED.last_error_code,
       next_refresh_at = EXCLUDED.next_refresh_at,
       intent_started_at = CASE WHEN $5 THEN connection_refresh_state.intent_started_at END,
       intent_refresh_version =
           CASE WHEN $5 THEN connection_refresh_state.intent_refresh_version END;

-- name: oauth_refresh_claim
-- Across organizations, through the SECURITY DEFINER function of migration 016.
SELECT * FROM singura.oauth_refresh_claim($1, $2, $3, $4);

-- name: oauth_credential_sealed
-- One credential version with what opens it (revoking its token at the provider).
SELECT e.id, e.organization_id, e.connection_id, e.credential_type, e.version, e.state,
       e.key_version, e.fingerprint, e.created_at, e.expires_at, e.state_changed_at,
       e.version_state, e.destroy_at, e.ciphertext, e.nonce, d.root_key_id, d.wrapped_key
  FROM encrypted_credentials e
  LEFT JOIN data_keys d
         ON d.organization_id = e.organization_id AND d.version = e.key_version
        AND d.state = 'active'
 WHERE e.organization_id = $1 AND e.id = $2;

-- name: refresh_intent_clear
-- The provider's answer explained itself (a peer's rotation): nothing failed.
UPDATE connection_refresh_state
   SET intent_started_at = NULL, intent_refresh_version = NULL
 WHERE organization_id = $1 AND connection_id = $2;

-- The connect flow (migration 019): StartAuthorization and CompleteAuthorization.

-- name: authorization_insert
INSERT INTO oauth_authorizations (
    organization_id, id, state_hash, platform, redirect_uri, requested_scopes,
    reconnect_connection_id, display_name, started_by, verifier_nonce, verifier_ciphertext,
    key_version, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now() + $13::interval)
RETURNING expires_at;

-- name: authorization_connection_check
-- The reconnect target of a start: it exists in the organization (and its platform).
SELECT platform FROM platform_connections WHERE organization_id = $1 AND id = $2;

-- name: authorization_lock_timeout
-- How long a completion waits for another one of the same state, this transaction only.
SELECT set_config('lock_timeout', $1, true);

-- name: authorization_get_for_update
-- Held until the completion commits: a second completion of the state waits here and
-- then finds it consumed, with the first one's result. expired is decided by the
-- database's clock, the one expires_at was set by.
SELECT a.*, a.expires_at <= now() AS expired, d.root_key_id, d.wrapped_key
  FROM oauth_authorizations a
  LEFT JOIN data_keys d
         ON d.organization_id = a.organization_id AND d.version = a.key_version
        AND d.state = 'active'
 WHERE a.organization_id = $1 AND a.state_hash = $2
   FOR UPDATE OF a;

-- name: authorization_consume_foreign
-- Through the SECURITY DEFINER function of migration 019: another organization's state.
SELECT singura.oauth_authorization_consume_foreign($1);

-- name: authorization_consume
-- Single use: consumed whatever the completion came to.
UPDATE oauth_authorizations
   SET consumed_at = now(), outcome = $3, code_hash = $4, result_connection_id = $5,
       result_reauthorized = $6, result_granted_scopes = $7
 WHERE organization_id = $1 AND id = $2;

-- name: authorized_connection_get
SELECT * FROM connection_with_refresh WHERE organization_id = $1 AND id = $2;

-- name: authorized_connection_insert
INSERT INTO platform_connections (
    organization_id, id, platform, platform_user_id, platform_workspace_id,
    display_name, permissions_granted, requested_scopes, granted_user_scopes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING id;

-- name: reauthorized_connection_update
-- A reconnect: new identity (when allowed), scopes, and ACTIVE again.
UPDATE platform_connections
   SET platform_user_id = $3, platform_workspace_id = $4, permissions_granted = $5,
       requested_scopes = $6, status = 'active', status_reason = $7,
       granted_user_scopes = $8
 WHERE organization_id = $1 AND id = $2;
