-- 019_oauth_authorizations: tokens born inside the vault (issue #23, docs/oauth.md,
-- "Connect a workspace (authorization code flow)").
--
-- * oauth_clients gains the redirect URIs registered with the platform (a start's
--   redirect_uri must equal one exactly) and an authorization endpoint override.
-- * platform_connections gains the scopes requested when it was last authorized; the
--   granted ones stay in permissions_granted.
-- * oauth_authorizations: one row per StartAuthorization. The state is kept only as
--   its SHA-256 (a database reader cannot complete a flow with what it reads), the
--   PKCE verifier only sealed under the organization's data key and bound to the
--   row's id, like an OAuth client secret. CompleteAuthorization locks the row
--   (FOR UPDATE) from before the code exchange until the connection and its tokens
--   commit, so two completions of one state make exactly one exchange; the row then
--   keeps the code's hash and the result, so a retry with the same state and code gets
--   the same answer without a second provider call.

ALTER TABLE singura.oauth_clients
    ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}',
    ADD COLUMN authorization_url text NOT NULL DEFAULT '',
    ADD CONSTRAINT oauth_clients_redirect_uris_count CHECK (cardinality(redirect_uris) <= 20),
    ADD CONSTRAINT oauth_clients_authorization_url_length CHECK (
        char_length(authorization_url) <= 2048);

ALTER TABLE singura.platform_connections
    ADD COLUMN requested_scopes text[] NOT NULL DEFAULT '{}';

-- The view's column list is fixed when it is created; the new column goes last, so
-- the functions returning its rows (migration 016) keep their shape.
CREATE OR REPLACE VIEW singura.connection_with_refresh WITH (security_invoker = true) AS
SELECT c.organization_id, c.id, c.platform, c.platform_user_id, c.platform_workspace_id,
       c.display_name, c.permissions_granted, c.metadata, c.status, c.status_reason,
       c.last_sync_at, c.create_request_id, c.version, c.created_at, c.updated_at,
       r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at,
       c.requested_scopes
  FROM singura.platform_connections c
  LEFT JOIN singura.connection_refresh_state r
         ON r.organization_id = c.organization_id AND r.connection_id = c.id;

CREATE TABLE singura.oauth_authorizations (
    organization_id uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    -- Bound into the verifier's ciphertext.
    id uuid NOT NULL,
    -- SHA-256 of the state; the state itself is never stored.
    state_hash bytea NOT NULL,
    platform text NOT NULL,
    redirect_uri text NOT NULL,
    requested_scopes text[] NOT NULL DEFAULT '{}',
    -- Set: a reconnect of this connection (checked again at completion).
    reconnect_connection_id uuid,
    display_name text NOT NULL,
    -- The key_id of the API key that started it.
    started_by text NOT NULL,
    -- The PKCE verifier sealed under the organization's data key; NULL for a platform
    -- that takes no PKCE.
    verifier_nonce bytea,
    verifier_ciphertext bytea,
    key_version integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Set when a completion used the state, whatever came of it: single use.
    consumed_at timestamptz,
    -- SHA-256 of the code the successful completion exchanged (a retry must match).
    code_hash bytea,
    -- 'authorized', 'reauthorized', 'denied' or 'failed', once consumed.
    outcome text,
    result_connection_id uuid,
    result_reauthorized boolean,
    result_granted_scopes text[],
    PRIMARY KEY (organization_id, id),
    CONSTRAINT oauth_authorizations_state_hash_key UNIQUE (state_hash),
    CONSTRAINT oauth_authorizations_state_hash_length CHECK (octet_length(state_hash) = 32),
    CONSTRAINT oauth_authorizations_platform_known CHECK (platform IN (
        'slack', 'google_workspace', 'microsoft_365', 'github', 'salesforce', 'atlassian',
        'zoom', 'dropbox')),
    CONSTRAINT oauth_authorizations_outcome_known CHECK (
        outcome IN ('authorized', 'reauthorized', 'denied', 'failed')),
    CONSTRAINT oauth_authorizations_verifier_sealed CHECK (
        (verifier_ciphertext IS NULL) = (verifier_nonce IS NULL)
        AND (verifier_ciphertext IS NULL) = (key_version IS NULL)),
    CONSTRAINT oauth_authorizations_redirect_uri_length CHECK (
        char_length(redirect_uri) BETWEEN 1 AND 2048),
    CONSTRAINT oauth_authorizations_name_length CHECK (char_length(display_name) <= 200),
    CONSTRAINT oauth_authorizations_scopes_count CHECK (cardinality(requested_scopes) <= 100)
);
-- Expired rows are found by age (a later cleanup deletes them).
CREATE INDEX oauth_authorizations_expires_idx ON singura.oauth_authorizations (expires_at);
ALTER TABLE singura.oauth_authorizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.oauth_authorizations FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_authorizations_tenant ON singura.oauth_authorizations
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.oauth_authorizations TO singura_app;

-- A sealed verifier names a live data key, as a client secret does (migration 016).
CREATE FUNCTION singura.oauth_authorization_key_must_be_live() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'singura', 'pg_temp'
    AS $$
BEGIN
    IF NEW.key_version IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM 1 FROM singura.data_keys
      WHERE organization_id = NEW.organization_id AND version = NEW.key_version
        AND state = 'active'
      FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'data key version % of the organization is not live', NEW.key_version
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'oauth_authorizations_key_live';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER oauth_authorizations_key_live BEFORE INSERT ON singura.oauth_authorizations
    FOR EACH ROW EXECUTE FUNCTION singura.oauth_authorization_key_must_be_live();

-- A state is unknown to the tenant that did not start it: row-level security hides
-- the row. To tell "another organization's state" from "no such state" (AIP-193
-- reasons, issue #23), and to consume a state that was presented in the wrong
-- organization (single use, whatever came of it), this function takes a state hash
-- and, if another organization than the transaction's holds it, marks it consumed
-- and answers that organization's id -- no other column, and NULL for a hash nobody
-- else holds. Whoever calls it already holds the state (256 random bits).
CREATE FUNCTION singura.oauth_authorization_consume_foreign(p_state_hash bytea) RETURNS uuid
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
UPDATE singura.oauth_authorizations
   SET consumed_at = coalesce(consumed_at, now()), outcome = coalesce(outcome, 'failed')
 WHERE state_hash = p_state_hash
   AND organization_id IS DISTINCT FROM singura.current_organization_id()
RETURNING organization_id;
$$;
CREATE POLICY oauth_authorizations_consume_foreign ON singura.oauth_authorizations
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));
REVOKE ALL ON FUNCTION singura.oauth_authorization_consume_foreign(bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.oauth_authorization_consume_foreign(bytea) TO singura_app;
