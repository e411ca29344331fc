-- 016_oauth_refresh: the vault refreshes OAuth tokens itself (docs/oauth.md).
--
-- * oauth_clients: one registered OAuth client per organization and platform. Its
--   secret is sealed with AES-256-GCM under the organization's data key, like a
--   credential, and bound to the row's id; the vault never returns it.
-- * connection_refresh_state: each connection's refresh bookkeeping, beside the
--   connection rather than in it, so that a refresh neither changes the connection's
--   etag nor writes a connection.updated event. Its intent columns are committed
--   before the vault calls the token endpoint, in another transaction than the one
--   that stores the new tokens: a vault that dies after the provider rotated the
--   refresh token, but before it committed the new one, leaves the intent behind, and
--   the next refresh knows that an invalid_grant then means a lost rotation.
--
-- Single flight: a refresh holds the connection's row lock (FOR NO KEY UPDATE, the
-- lock UpdateConnection and StoreCredential take too) from before it reads the
-- refresh token until it commits the new one. A crashed holder's transaction ends
-- with its connection, which releases the lock.

CREATE TABLE singura.oauth_clients (
    organization_id uuid NOT NULL REFERENCES singura.organizations (id) ON DELETE CASCADE,
    platform text NOT NULL,
    -- Bound into the secret's ciphertext; a new id each time the client is set.
    id uuid NOT NULL,
    client_id text NOT NULL,
    secret_ciphertext bytea NOT NULL,
    secret_nonce bytea NOT NULL,
    key_version integer NOT NULL,
    token_url text NOT NULL DEFAULT '',
    revocation_url text NOT NULL DEFAULT '',
    scopes text[] NOT NULL DEFAULT '{}',
    auth_method text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    version integer NOT NULL DEFAULT 1,
    PRIMARY KEY (organization_id, platform),
    CONSTRAINT oauth_clients_platform_known CHECK (platform IN (
        'slack', 'google_workspace', 'microsoft_365', 'github', 'salesforce', 'atlassian',
        'zoom', 'dropbox')),
    CONSTRAINT oauth_clients_auth_method_known CHECK (
        auth_method IN ('client_secret_basic', 'client_secret_post')),
    CONSTRAINT oauth_clients_client_id_length CHECK (char_length(client_id) BETWEEN 1 AND 512),
    CONSTRAINT oauth_clients_url_length CHECK (
        char_length(token_url) <= 2048 AND char_length(revocation_url) <= 2048),
    CONSTRAINT oauth_clients_scopes_count CHECK (cardinality(scopes) <= 100)
);
ALTER TABLE singura.oauth_clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.oauth_clients FORCE ROW LEVEL SECURITY;
CREATE POLICY oauth_clients_tenant ON singura.oauth_clients
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.oauth_clients TO singura_app;
CREATE TRIGGER oauth_clients_touch BEFORE UPDATE ON singura.oauth_clients
    FOR EACH ROW EXECUTE FUNCTION singura.touch_row();
-- oauth_client.created/updated/deleted with the names of changed columns (never values).
CREATE TRIGGER oauth_clients_audit AFTER INSERT OR UPDATE OR DELETE ON singura.oauth_clients
    FOR EACH ROW EXECUTE FUNCTION singura.audit_row_change('oauth_client');

-- A sealed client secret names a live data key, as a credential does (migration 008).
CREATE FUNCTION singura.oauth_client_key_must_be_live() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path TO 'singura', 'pg_temp'
    AS $$
BEGIN
    PERFORM 1 FROM singura.data_keys
      WHERE organization_id = NEW.organization_id AND version = NEW.key_version
        AND state = 'active'
      FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'data key version % of the organization is not live', NEW.key_version
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'oauth_clients_key_live';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER oauth_clients_key_live BEFORE INSERT OR UPDATE ON singura.oauth_clients
    FOR EACH ROW EXECUTE FUNCTION singura.oauth_client_key_must_be_live();

CREATE TABLE singura.connection_refresh_state (
    organization_id uuid NOT NULL,
    connection_id uuid NOT NULL,
    last_refresh_at timestamptz,
    failure_count integer NOT NULL DEFAULT 0,
    -- A sentence for people (never a token or a provider's body).
    last_error text NOT NULL DEFAULT '',
    next_refresh_at timestamptz,
    -- Set, and committed, before the token endpoint is called; cleared with the result.
    intent_started_at timestamptz,
    intent_refresh_version integer,
    PRIMARY KEY (organization_id, connection_id),
    FOREIGN KEY (organization_id, connection_id)
        REFERENCES singura.platform_connections (organization_id, id) ON DELETE CASCADE,
    CONSTRAINT connection_refresh_state_error_length CHECK (char_length(last_error) <= 500)
);
ALTER TABLE singura.connection_refresh_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE singura.connection_refresh_state FORCE ROW LEVEL SECURITY;
CREATE POLICY connection_refresh_state_tenant ON singura.connection_refresh_state
    USING (organization_id = singura.current_organization_id())
    WITH CHECK (organization_id = singura.current_organization_id());
GRANT SELECT, INSERT, UPDATE, DELETE ON singura.connection_refresh_state TO singura_app;

-- A connection with its refresh state, as Get/ListConnections return it.
CREATE VIEW singura.connection_with_refresh WITH (security_invoker = true) AS
SELECT c.*, r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at
  FROM singura.platform_connections c
  LEFT JOIN singura.connection_refresh_state r
         ON r.organization_id = c.organization_id AND r.connection_id = c.id;
GRANT SELECT ON singura.connection_with_refresh TO singura_app;

DROP FUNCTION singura.connection_get_scoped(text, text, text, text, uuid, uuid);
CREATE FUNCTION singura.connection_get_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid, p_id uuid)
RETURNS SETOF singura.connection_with_refresh
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT * FROM singura.connection_with_refresh WHERE organization_id = p_org AND id = p_id;
$$;
GRANT EXECUTE ON FUNCTION singura.connection_get_scoped(text, text, text, text, uuid, uuid)
    TO singura_app;

DROP FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer);
CREATE FUNCTION singura.connection_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_platform text, p_status text, p_after_at timestamptz, p_after_id uuid, p_limit integer)
RETURNS SETOF singura.connection_with_refresh
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.connection_with_refresh
 WHERE organization_id = p_org
   AND (p_platform IS NULL OR platform = p_platform)
   AND (p_status IS NULL OR status = p_status)
   AND (p_after_at IS NULL OR (created_at, id) < (p_after_at, p_after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer) TO singura_app;

-- The background refresh worker (service/oauth_worker.py): any vault process claims
-- connections that are due, across organizations, through this one narrow door.
-- Due: ACTIVE, with an OAuth client for its platform and a current refresh token, not
-- cooling down or claimed (next_refresh_at in the past or unset), and either its
-- access token expires within p_margin (or it has none), or it was not refreshed for
-- p_keepalive. A claim is a lease: next_refresh_at moves p_lease ahead, so another
-- process skips it; SKIP LOCKED keeps two claims from waiting on each other.
-- The schema owner reads these tables only through SECURITY DEFINER functions like
-- this one; the service role's fence is unchanged.
CREATE POLICY platform_connections_refresh_worker ON singura.platform_connections
    FOR SELECT USING ((SELECT singura.is_schema_owner()));
CREATE POLICY oauth_clients_refresh_worker ON singura.oauth_clients
    FOR SELECT USING ((SELECT singura.is_schema_owner()));
CREATE POLICY encrypted_credentials_refresh_worker ON singura.encrypted_credentials
    FOR SELECT USING ((SELECT singura.is_schema_owner()));
CREATE POLICY connection_refresh_state_refresh_worker ON singura.connection_refresh_state
    USING ((SELECT singura.is_schema_owner())) WITH CHECK ((SELECT singura.is_schema_owner()));

-- The connections due now, and whether only the keep-alive makes them due.
CREATE FUNCTION singura.oauth_refresh_due(p_margin interval, p_keepalive interval)
RETURNS TABLE (organization_id uuid, connection_id uuid, keepalive boolean)
    LANGUAGE sql STABLE
    SET search_path TO 'singura', 'pg_temp'
    AS $$
SELECT c.organization_id, c.id,
       NOT (a.id IS NULL OR a.expires_at <= now() + p_margin)
  FROM singura.platform_connections c
  JOIN singura.oauth_clients o
    ON o.organization_id = c.organization_id AND o.platform = c.platform
  JOIN singura.encrypted_credentials r
    ON r.organization_id = c.organization_id AND r.connection_id = c.id
   AND r.credential_type = 'refresh_token' AND r.state = 'active'
  LEFT JOIN singura.encrypted_credentials a
    ON a.organization_id = c.organization_id AND a.connection_id = c.id
   AND a.credential_type = 'access_token' AND a.state = 'active'
  LEFT JOIN singura.connection_refresh_state s
    ON s.organization_id = c.organization_id AND s.connection_id = c.id
 WHERE c.status = 'active'
   AND (s.next_refresh_at IS NULL OR s.next_refresh_at <= now())
   AND (a.id IS NULL OR a.expires_at <= now() + p_margin
        OR coalesce(s.last_refresh_at, r.created_at) <= now() - p_keepalive);
$$;
REVOKE ALL ON FUNCTION singura.oauth_refresh_due(interval, interval) FROM PUBLIC;

CREATE FUNCTION singura.oauth_refresh_claim(
    p_margin interval, p_keepalive interval, p_lease interval, p_limit integer)
RETURNS TABLE (organization_id uuid, connection_id uuid, keepalive boolean)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'singura', 'pg_temp'
    AS $$
BEGIN
    -- Every due connection gets a state row to lock and lease (a statement of its
    -- own: the claim below must see the rows this one inserts).
    INSERT INTO singura.connection_refresh_state (organization_id, connection_id)
    SELECT d.organization_id, d.connection_id FROM singura.oauth_refresh_due(p_margin, p_keepalive) d
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    WITH due AS (
        SELECT * FROM singura.oauth_refresh_due(p_margin, p_keepalive)
    ), claimed AS (
        SELECT s.organization_id, s.connection_id, due.keepalive
          FROM singura.connection_refresh_state s
          JOIN due
            ON due.organization_id = s.organization_id AND due.connection_id = s.connection_id
         -- Checked again on the row as locked: a lease another process committed after
         -- this statement's snapshot is seen here, and the row is left to it.
         WHERE s.next_refresh_at IS NULL OR s.next_refresh_at <= now()
         ORDER BY s.next_refresh_at NULLS FIRST
         LIMIT p_limit
           FOR UPDATE OF s SKIP LOCKED
    ), leased AS (
        UPDATE singura.connection_refresh_state s
           SET next_refresh_at = now() + p_lease
          FROM claimed
         WHERE s.organization_id = claimed.organization_id
           AND s.connection_id = claimed.connection_id
        RETURNING s.organization_id, s.connection_id
    )
    SELECT l.organization_id, l.connection_id, claimed.keepalive
      FROM leased l
      JOIN claimed
        ON claimed.organization_id = l.organization_id
       AND claimed.connection_id = l.connection_id;
END
$$;
REVOKE ALL ON FUNCTION singura.oauth_refresh_claim(interval, interval, interval, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION singura.oauth_refresh_claim(interval, interval, interval, integer)
    TO singura_app;
