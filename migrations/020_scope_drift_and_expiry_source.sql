-- 020_scope_drift_and_expiry_source: scopes and where an access token's expiry came
-- from (issue #23, docs/oauth.md "Scopes and scope drift").
--
-- * connection_refresh_state gains expiry_source: where the expiry of the access token
--   the vault last stored (CompleteAuthorization or a refresh) came from -- 'provider'
--   (the answer's expires_in), 'catalogue' (the answer had none; the catalogue's
--   documented lifetime was used) or 'none' (no expiry known). NULL: the vault never
--   stored the connection's tokens itself. It lives beside the connection, with the
--   rest of the refresh bookkeeping, so that a refresh neither changes the
--   connection's etag nor writes a connection.updated event (migration 016).
-- * connection_list_scoped takes a scope-drift filter: 'missing' (a requested scope
--   was not granted), 'extra' (a scope was granted that nobody asked for) or 'any'
--   (either). A connection with no requested scopes recorded (made otherwise than by
--   CompleteAuthorization) is never drifted.

ALTER TABLE singura.connection_refresh_state
    ADD COLUMN expiry_source text,
    ADD CONSTRAINT connection_refresh_state_expiry_source_known CHECK (
        expiry_source IN ('provider', 'catalogue', 'none'));

-- The new column goes last, so the functions returning the view's rows keep their
-- shape (as in migration 019).
CREATE OR REPLACE VIEW singura.connection_with_refresh WITH (security_invoker = true) AS
SELECT c.organization_id, c.id, c.platform, c.platform_user_id, c.platform_workspace_id,
       c.display_name, c.permissions_granted, c.metadata, c.status, c.status_reason,
       c.last_sync_at, c.create_request_id, c.version, c.created_at, c.updated_at,
       r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at,
       c.requested_scopes, r.expiry_source
  FROM singura.platform_connections c
  LEFT JOIN singura.connection_refresh_state r
         ON r.organization_id = c.organization_id AND r.connection_id = c.id;

-- Drift compares the two lists as sets (order and duplicates do not matter). The
-- filter is applied to the organization's rows in keyset order; no index serves it,
-- as none serves the platform filter: an organization's connections are few.
DROP FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer);
CREATE FUNCTION singura.connection_list_scoped(
    p_setting text, p_value text, p_actor text, p_request_id text, p_org uuid,
    p_platform text, p_status text, p_after_at timestamptz, p_after_id uuid, p_limit integer,
    p_scope_drift text)
RETURNS SETOF singura.connection_with_refresh
    LANGUAGE sql
    AS $$
SELECT singura.enter_scope(p_setting, p_value, p_actor, p_request_id);
SELECT *
  FROM singura.connection_with_refresh
 WHERE organization_id = p_org
   AND (p_platform IS NULL OR platform = p_platform)
   AND (p_status IS NULL OR status = p_status)
   AND (p_scope_drift IS NULL OR (
        cardinality(requested_scopes) > 0
        AND CASE p_scope_drift
              WHEN 'missing' THEN NOT requested_scopes <@ permissions_granted
              WHEN 'extra' THEN NOT permissions_granted <@ requested_scopes
              WHEN 'any' THEN NOT (requested_scopes <@ permissions_granted
                                   AND permissions_granted <@ requested_scopes)
              ELSE false
            END))
   AND (p_after_at IS NULL OR (created_at, id) < (p_after_at, p_after_id))
 ORDER BY created_at DESC, id DESC
 LIMIT p_limit;
$$;
GRANT EXECUTE ON FUNCTION singura.connection_list_scoped(
    text, text, text, text, uuid, text, text, timestamptz, uuid, integer, text) TO singura_app;
