-- The event outbox (migration 024). Events are written only by the database's own
-- triggers, in the transaction of the change; the vault only reads them.

-- name: events_after
-- ListEvents and WatchEvents: $5 organization, after cursor $6, types $7 (empty: any),
-- at most $8, oldest first (one round trip, a scoped function of migration 024).
SELECT organization_id, cursor, type, connection_id, credential_id, data, created_at
  FROM singura.events_after_scoped($1, $2, $3, $4, $5, $6, $7, $8);
