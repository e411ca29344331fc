-- 021_granted_user_scopes: Slack's user-token scopes on the connection (issue #23,
-- "Slack's bot and user scopes kept apart").
--
-- * platform_connections gains granted_user_scopes: the scopes of Slack's user token
--   (the token response's authed_user.scope), which CompleteAuthorization stores (and
--   replaces on a reconnect). The bot scopes stay in permissions_granted; every other
--   platform leaves the column empty.

ALTER TABLE singura.platform_connections
    ADD COLUMN granted_user_scopes text[] NOT NULL DEFAULT '{}';

-- The new column goes last, so the functions returning the view's rows keep their
-- shape (as in migrations 019 and 020).
CREATE OR REPLACE VIEW singura.connection_with_refresh WITH (security_invoker = true) AS
SELECT c.organization_id, c.id, c.platform, c.platform_user_id, c.platform_workspace_id,
       c.display_name, c.permissions_granted, c.metadata, c.status, c.status_reason,
       c.last_sync_at, c.create_request_id, c.version, c.created_at, c.updated_at,
       r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at,
       c.requested_scopes, r.expiry_source, c.granted_user_scopes
  FROM singura.platform_connections c
  LEFT JOIN singura.connection_refresh_state r
         ON r.organization_id = c.organization_id AND r.connection_id = c.id;
