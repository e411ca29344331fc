-- Audit events the service writes itself (repositories/audit.py, AuditEntry).

-- In the caller's transaction, committed or rolled back with the change it records.

-- name: audit_append
INSERT INTO audit_logs (
    organization_id, actor, action, resource_type, resource_id, request_id, outcome, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- One request's events in one statement of their own (migration 013): committed when
-- the statement returns -- the audit half of audit-or-fail on the reveal path.

-- name: audit_append_scoped
SELECT singura.audit_append_scoped($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- Several coalesced requests' events in one statement (migration 022), each item under
-- its own request's scope; committed before any of those calls returns a value.

-- name: audit_append_batch
SELECT singura.audit_append_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);

-- The chain reads below come in pairs: one for an organization's chain
-- (organization_id = $1) and one for the system chain (organization_id IS NULL).
-- Both predicates are leakproof, so under row-level security they are the index
-- condition on audit_logs_chain_idx (organization_id, chain_seq) and the policy only
-- filters the rows of that chain; the keyset on chain_seq is an index condition too.
-- Do not write the chain as coalesce(organization_id, ...) = $1 or IS NOT DISTINCT
-- FROM $1: neither is an index condition under row-level security (migration 010),
-- so every call would read every tenant's rows. The system chain orders by
-- (organization_id, chain_seq), the index's own order, because the planner does not
-- treat IS NULL as fixing the first column and would sort otherwise.

-- name: audit_list
-- Newest first by chain position ($9: before this position; the repository passes the
-- largest bigint for the first page).
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE organization_id = $1
   AND ($2::timestamptz IS NULL OR occurred_at >= $2)
   AND ($3::timestamptz IS NULL OR occurred_at < $3)
   AND ($4::text IS NULL OR action = $4)
   AND ($5::text IS NULL OR resource_type = $5)
   AND ($6::text IS NULL OR resource_id = $6)
   AND ($7::text IS NULL OR actor = $7)
   AND ($8::text IS NULL OR outcome = $8)
   AND chain_seq < $9
 ORDER BY chain_seq DESC
 LIMIT $10;

-- name: audit_list_system
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE organization_id IS NULL
   AND ($1::timestamptz IS NULL OR occurred_at >= $1)
   AND ($2::timestamptz IS NULL OR occurred_at < $2)
   AND ($3::text IS NULL OR action = $3)
   AND ($4::text IS NULL OR resource_type = $4)
   AND ($5::text IS NULL OR resource_id = $5)
   AND ($6::text IS NULL OR actor = $6)
   AND ($7::text IS NULL OR outcome = $7)
   AND chain_seq < $8
 ORDER BY organization_id DESC, chain_seq DESC
 LIMIT $9;

-- name: audit_export
-- Oldest first, one batch after another (keyset on the chain position).
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE organization_id = $1
   AND ($2::timestamptz IS NULL OR occurred_at >= $2)
   AND ($3::timestamptz IS NULL OR occurred_at < $3)
   AND ($4::text IS NULL OR action = $4)
   AND ($5::text IS NULL OR resource_type = $5)
   AND ($6::text IS NULL OR resource_id = $6)
   AND ($7::text IS NULL OR actor = $7)
   AND ($8::text IS NULL OR outcome = $8)
   AND chain_seq > $9
 ORDER BY chain_seq
 LIMIT $10;

-- name: audit_export_system
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE organization_id IS NULL
   AND ($1::timestamptz IS NULL OR occurred_at >= $1)
   AND ($2::timestamptz IS NULL OR occurred_at < $2)
   AND ($3::text IS NULL OR action = $3)
   AND ($4::text IS NULL OR resource_type = $4)
   AND ($5::text IS NULL OR resource_id = $5)
   AND ($6::text IS NULL OR actor = $6)
   AND ($7::text IS NULL OR outcome = $7)
   AND chain_seq > $8
 ORDER BY organization_id, chain_seq
 LIMIT $9;

-- name: audit_chain_batch
-- For verification: the stored links and the canonical text recomputed from the
-- row as it is now (an edited field changes it).
SELECT a.id, a.chain_seq, a.prev_hash, a.hash, singura.audit_canonical(a) AS canonical
  FROM audit_logs a
 WHERE a.organization_id = $1 AND a.chain_seq > $2
 ORDER BY a.chain_seq
 LIMIT $3;

-- name: audit_chain_batch_system
SELECT a.id, a.chain_seq, a.prev_hash, a.hash, singura.audit_canonical(a) AS canonical
  FROM audit_logs a
 WHERE a.organization_id IS NULL AND a.chain_seq > $1
 ORDER BY a.organization_id, a.chain_seq
 LIMIT $2;

-- name: audit_checkpoint
SELECT pruned_through_seq, pruned_count, last_pruned_hash
  FROM audit_checkpoints WHERE chain_key = $1;

-- name: audit_head
SELECT last_seq, last_hash FROM audit_chain_heads WHERE chain_key = $1;

-- name: audit_appended_total
-- Events ever appended, over every chain (pruned ones included): for metrics.
SELECT coalesce(sum(last_seq), 0)::bigint FROM audit_chain_heads;

-- name: audit_prune
SELECT chain_key, pruned FROM singura.audit_prune($1, $2);

-- name: audit_exclude_sequencers
-- The sequencers' lock taken exclusively for the rest of the transaction (migration
-- 023: every sequencer takes it shared, erasure and the checkpoint signer exclusively):
-- waits for the sequencer transactions in flight to commit and keeps new ones out.
SELECT pg_advisory_xact_lock(1397114627);

-- name: audit_erase_organization
SELECT singura.audit_erase_organization($1, $2);

-- name: audit_sequence_after
-- Chain up to $2 committed pending events with an id above $1 (migration 023);
-- returns how many (chained) and the last id taken (last_id), the next batch's $1.
SELECT chained, last_id FROM singura.audit_sequence_after($1, $2);

-- name: audit_sequence_chain
-- Chain up to $3 pending events of one chain ($1; NULL: the system chain) with an id
-- above $2; returns how many (chained) and the last id taken (last_id). With $4 (skip
-- a backlog), chained is -1 and nothing is chained when more than $3 are pending.
SELECT chained, last_id FROM singura.audit_sequence_chain($1, $2, $3, $4);

-- name: audit_pending_stats
-- Events of one chain recorded but not chained yet, and the oldest one's time.
SELECT count(*) AS pending, min(occurred_at) AS oldest
  FROM audit_pending WHERE organization_id = $1;

-- name: audit_pending_stats_system
SELECT count(*) AS pending, min(occurred_at) AS oldest
  FROM audit_pending WHERE organization_id IS NULL;
