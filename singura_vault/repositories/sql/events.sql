-- The event outbox (migrations 024 and 028). Events are written only by the database's
-- own triggers and functions, in the transaction of the change; the vault reads them,
-- and asks the database to number them (the sequencer) and to send due reminders.

-- name: events_after
-- ListEvents and WatchEvents: $5 organization, after cursor $6, types $7 (empty: any),
-- at most $8, oldest first (one round trip, a scoped function of migration 024).
SELECT organization_id, cursor, type, connection_id, credential_id, data, created_at, position
  FROM singura.events_after_scoped($1, $2, $3, $4, $5, $6, $7, $8);

-- name: events_after_position
-- An admin key's ListEvents and WatchEvents: every organization's events after position
-- $5, types $6 (empty: any), at most $7, in position order (migration 028; refused
-- outside admin scope).
SELECT organization_id, cursor, type, connection_id, credential_id, data, created_at, position
  FROM singura.events_after_position_scoped($1, $2, $3, $4, $5, $6, $7);

-- name: events_sequence
-- The sequencer (migration 028): number up to $1 committed events in a global order.
SELECT sequenced, types, counts, oldest_pending_s FROM singura.events_sequence($1);

-- name: credential_expiry_notices_send
-- The reminder job (migration 028): what is due at $1 for thresholds $2 labelled $3,
-- at most $4 events; each sent once, whichever process runs it.
SELECT singura.credential_expiry_notices_send($1, $2, $3, $4);
