-- Audit events written by the service in the same transaction as the change.

-- name: audit_append
INSERT INTO audit_logs (
    organization_id, actor, action, resource_type, resource_id, request_id, outcome, details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

-- name: audit_list
-- Newest first by chain position; audit_logs_chain_key_idx serves the chain
-- predicate and the keyset ($1 is the organization, or the nil UUID for the system chain).
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid) = $1
   AND ($2::timestamptz IS NULL OR occurred_at >= $2)
   AND ($3::timestamptz IS NULL OR occurred_at < $3)
   AND ($4::text IS NULL OR action = $4)
   AND ($5::text IS NULL OR resource_type = $5)
   AND ($6::text IS NULL OR resource_id = $6)
   AND ($7::text IS NULL OR actor = $7)
   AND ($8::text IS NULL OR outcome = $8)
   AND ($9::bigint IS NULL OR chain_seq < $9)
 ORDER BY chain_seq DESC
 LIMIT $10;

-- name: audit_export
-- Oldest first, one batch after another (keyset on the chain position).
SELECT id, organization_id, chain_seq, occurred_at, actor, action, resource_type, resource_id,
       request_id, outcome, details, prev_hash, hash
  FROM audit_logs
 WHERE coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid) = $1
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

-- name: audit_chain_batch
-- For verification: the stored links and the canonical text recomputed from the
-- row as it is now (an edited field changes it).
SELECT a.id, a.chain_seq, a.prev_hash, a.hash, singura.audit_canonical(a) AS canonical
  FROM audit_logs a
 WHERE coalesce(a.organization_id, '00000000-0000-0000-0000-000000000000'::uuid) = $1 AND a.chain_seq > $2
 ORDER BY a.chain_seq
 LIMIT $3;

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

-- name: audit_erase_organization
SELECT singura.audit_erase_organization($1, $2);
