-- Platform connection queries; all run inside a tenant transaction, so
-- row-level security already limits them to one organization. The explicit
-- organization_id predicates are for the indexes (and a second fence).

-- name: connection_insert
INSERT INTO platform_connections (
    organization_id, id, platform, platform_user_id, platform_workspace_id,
    display_name, permissions_granted, metadata, create_request_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING *;

-- name: connection_get_for_update
SELECT * FROM platform_connections WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE;

-- name: connection_by_request_id
SELECT * FROM platform_connections WHERE organization_id = $1 AND create_request_id = $2;

-- name: connection_count_active
-- Live ACTIVE connections (a deleted one does not count against the plan; migration
-- 030). Served by the partial index platform_connections_active_idx.
SELECT count(*) FROM platform_connections
 WHERE organization_id = $1 AND status = 'active' AND deleted_at IS NULL;

-- The two updates below answer with the connection's refresh state too, as
-- Get/ListConnections do (connection_with_refresh, migration 016).

-- name: connection_update
WITH changed AS (
    UPDATE platform_connections
       SET display_name = coalesce($3, display_name),
           metadata = coalesce($4, metadata),
           permissions_granted = coalesce($5, permissions_granted)
     WHERE organization_id = $1 AND id = $2
    RETURNING *)
SELECT changed.*, r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at, r.expiry_source
  FROM changed
  LEFT JOIN connection_refresh_state r
         ON r.organization_id = changed.organization_id AND r.connection_id = changed.id;

-- name: connection_set_status
WITH changed AS (
    UPDATE platform_connections
       SET status = $3, status_reason = $4
     WHERE organization_id = $1 AND id = $2
    RETURNING *)
SELECT changed.*, r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at, r.expiry_source
  FROM changed
  LEFT JOIN connection_refresh_state r
         ON r.organization_id = changed.organization_id AND r.connection_id = changed.id;

-- name: connection_delete
-- A force delete, or the purge of a deleted connection: the row goes and its
-- credentials with it (ON DELETE CASCADE).
DELETE FROM platform_connections WHERE organization_id = $1 AND id = $2;

-- name: connection_soft_delete
-- DeleteConnection without force (migration 030): recoverable until now() + $3.
UPDATE platform_connections
   SET deleted_at = now(), purge_at = now() + $3::interval, deleted_revoked_at_provider = $4
 WHERE organization_id = $1 AND id = $2
RETURNING deleted_at, purge_at;

-- name: connection_undelete
WITH changed AS (
    UPDATE platform_connections
       SET deleted_at = NULL, purge_at = NULL, deleted_revoked_at_provider = false
     WHERE organization_id = $1 AND id = $2
    RETURNING *)
SELECT changed.*, r.last_refresh_at, coalesce(r.failure_count, 0) AS refresh_failure_count,
       coalesce(r.last_error, '') AS last_refresh_error, r.next_refresh_at, r.expiry_source
  FROM changed
  LEFT JOIN connection_refresh_state r
         ON r.organization_id = changed.organization_id AND r.connection_id = changed.id;

-- name: connection_purge
-- Outside any tenant: the SECURITY DEFINER function enters each connection's tenant.
SELECT * FROM singura.connection_purge($1, $2);

-- One round trip each (migration 013; scope in $1-$4, see Database.fetch_scoped).

-- name: connection_get_scoped
SELECT * FROM singura.connection_get_scoped($1, $2, $3, $4, $5, $6);

-- name: connection_list_scoped
-- $11: the scope-drift filter (migration 020), NULL for none; $12: show deleted ones
-- too (migration 030).
SELECT * FROM singura.connection_list_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);
